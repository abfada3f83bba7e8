"""Fused elementwise kernels of the CPU training step, compiled once by numba (cached on disk).

Each kernel makes one pass over a block of rows and does everything that pass can do, so the
(c, K) tensors of a block are read and written as few times as possible.  Activation codes follow
ACTIVATION_CODES; every σ and σ' is the formula of li2.activations (tests compare them).

    forward_block   H = Σ_j W[rows[:, j]],  F = σ(H),  S = σ'(H) (when S has rows)
    loss_block      per row: loss, argmax hit and, in place, dL/dO (mse: 2/n·(P⊥1 o − ỹ); ce: (softmax − e_y)/n)
    backward_block  dW[rows[i, j]] += D[i] ⊙ S[i]   (the σ' product folded into the scatter)
    adam_update     one Adam step in one pass (coupled L2 or decoupled decay), as li2.engine.optim

`available()` says whether numba is importable; without it li2 trains on the torch path.
"""
from __future__ import annotations

import math

ACTIVATION_CODES = {"sqr": 0, "relu": 1, "silu": 2, "relusqr": 3, "gelu": 4}
LOSS_CODES = {"mse": 0, "ce": 1}

try:  # numba is a dependency; without it (a broken install) li2 falls back to torch ops
    import numba
except ImportError:  # pragma: no cover - exercised only without numba
    numba = None

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def available() -> bool:
    return numba is not None


def _jit(fn):
    if numba is None:
        return fn
    # nogil: lanes run these from several threads at once; cache: compile once per machine
    return numba.njit(nogil=True, cache=True, error_model="numpy")(fn)


@_jit
def _gather_rows(W, rows, i, out):
    """out = Σ_j W[rows[i, j]] for one sample i: W (kM, K), rows (c, k), out (K,)."""
    K = out.shape[0]
    r0 = rows[i, 0]
    for x in range(K):
        out[x] = W[r0, x]
    for j in range(1, rows.shape[1]):
        rj = rows[i, j]
        for x in range(K):
            out[x] += W[rj, x]


@_jit
def forward_block(W, rows, act, F, S):
    """F = σ(H) and, when S has rows, S = σ'(H), for H = Σ_j W[rows[:, j]].

    W: (kM, K) one model's first layer; rows: (c, k) int64 rows of W; F, S: (c, K) outputs
    (S may be (0, K): forward only).  One pass per row: gather, σ and σ' while the row is in L1.
    """
    c, K = F.shape
    grad = S.shape[0] > 0
    for i in range(c):
        f = F[i]
        _gather_rows(W, rows, i, f)
        if act == 0:                                      # sqr: σ = h², σ' = 2h
            if grad:
                s = S[i]
                for x in range(K):
                    s[x] = 2.0 * f[x]
            for x in range(K):
                f[x] = f[x] * f[x]
        elif act == 1:                                    # relu
            if grad:
                s = S[i]
                for x in range(K):
                    s[x] = 1.0 if f[x] > 0 else 0.0
            for x in range(K):
                f[x] = f[x] if f[x] > 0 else 0.0
        elif act == 2:                                    # silu: h·s(h), σ' = s(1 + h(1 − s))
            for x in range(K):
                h = f[x]
                sg = 1.0 / (1.0 + math.exp(-h))
                if grad:
                    S[i, x] = sg * (1.0 + h * (1.0 - sg))
                f[x] = h * sg
        elif act == 3:                                    # relusqr: relu(h)², σ' = 2·relu(h)
            for x in range(K):
                r = f[x] if f[x] > 0 else 0.0
                if grad:
                    S[i, x] = 2.0 * r
                f[x] = r * r
        else:                                             # gelu: h·Φ(h), σ' = Φ(h) + h·φ(h)
            for x in range(K):
                h = f[x]
                cdf = 0.5 * (1.0 + math.erf(h * _SQRT_HALF))
                if grad:
                    S[i, x] = cdf + h * math.exp(-0.5 * h * h) * _INV_SQRT_2PI
                f[x] = h * cdf


@_jit
def loss_block(O, labels, M, loss, inv_n, grad):
    """Summed loss and correct count of a block; with grad, O is overwritten by dL/dO for a mean over n.

    O: (c, Mp) outputs, of which the first M columns are the classes (the rest, GEMM padding, get
    dO = 0); labels: (c,) int64.  mse: r = o − mean(o) − (e_y − 1/M), loss Σ‖r‖², dO = 2r/n.
    ce: loss Σ(logsumexp(o) − o_y), dO = (softmax(o) − e_y)/n.  Accuracy: first index of the max.
    """
    c, Mp = O.shape
    total = 0.0
    correct = 0
    inv_m = 1.0 / M
    for i in range(c):
        o = O[i]
        y = labels[i]
        best = 0
        acc = 0.0
        top = o[0]
        for m in range(M):
            v = o[m]
            acc += v
            if v > top:
                top = v
                best = m
        if best == y:
            correct += 1
        if loss == 0:
            mean = acc * inv_m
            row = 0.0
            for m in range(M):
                r = o[m] - mean + inv_m
                if m == y:
                    r -= 1.0
                row += r * r
                if grad:
                    o[m] = 2.0 * inv_n * r
            total += row
        else:
            z = 0.0
            for m in range(M):
                z += math.exp(o[m] - top)
            lse = top + math.log(z)
            total += lse - o[y]
            if grad:
                for m in range(M):
                    o[m] = math.exp(o[m] - lse) * inv_n
                o[y] -= inv_n
        if grad:
            for m in range(M, Mp):
                o[m] = 0.0
    return total, correct


@_jit
def backward_block(D, S, rows, dW):
    """dW[rows[i, j]] += D[i] ⊙ S[i] for every sample i and operand j: D, S (c, K), dW (kM, K)."""
    c, K = D.shape
    for i in range(c):
        d = D[i]
        s = S[i]
        for j in range(rows.shape[1]):
            out = dW[rows[i, j]]
            for x in range(K):
                out[x] += d[x] * s[x]


@_jit
def adam_update(p, g, m, v, lr, wd, beta1, beta2, eps, step, decoupled):
    """One Adam step on flat arrays (in place), as torch.optim.Adam (coupled L2) / AdamW (decoupled).

    coupled:   g ← g + η p;   decoupled: p ← p(1 − lr·η)
    m ← m + (1−β₁)(g − m),  v ← β₂ v + (1−β₂) g²,  p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)
    """
    bias1 = 1.0 - beta1 ** step
    bias2_sqrt = math.sqrt(1.0 - beta2 ** step)
    step_size = lr / bias1
    shrink = 1.0 - lr * wd
    for x in range(p.shape[0]):
        gx = g[x]
        px = p[x]
        if decoupled:
            px = px * shrink
        else:
            gx = gx + wd * px
        mx = m[x] + (1.0 - beta1) * (gx - m[x])
        vx = beta2 * v[x] + (1.0 - beta2) * gx * gx
        m[x] = mx
        v[x] = vx
        p[x] = px - step_size * mx / (math.sqrt(vx) / bias2_sqrt + eps)
