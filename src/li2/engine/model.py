"""The two-layer network of SPEC §1, stacked on a leading model axis, with hand-written gradients.

Shapes (B models, n samples, k operands, group order M, width K):
    W: (B, kM, K)   operand j of sample i selects row j·M + x_ij
    V: (B, K, M)
    H = Σ_j W[j·M + x_j]          (B, n, K)   — a gather, never a one-hot product
    F = σ(H)                        (B, n, K)
    O = F V                         (B, n, M)
    mse: loss = (1/n) Σ_i ‖P⊥1 o_i − ỹ_i‖²,   ce: loss = (1/n) Σ_i −log softmax(o_i)[c_i]

The two-layer path computes gradients by hand so that each (n, K) tensor is touched as few
times as possible: on the CPU through fused numba kernels and the faster BLAS in parallel lanes
(engine/fused.py), on CUDA (or without numba) through torch ops on cache-sized blocks.  The optional
residual layers (x ← σ(x + x U_l)) go through autograd.  Every path is checked against autograd on
the one-hot formulation in tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..activations import get_activation
from .fused import FusedStep, Plan, make_plan
from .kernels import available as fused_kernels_available


@dataclass
class Batch:
    """Samples of one split for all B models.

    rows: (B·n, k) int64 indices into W viewed as (B·kM, K) — model and operand offsets baked in.
    labels: (B, n) int64.  targets: (B, n, M) centred one-hot Ỹ (mse) — None for ce.
    tokens: (B, n, k) int64 element indices without offsets (the transformer's input sequence).
    """

    rows: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor | None
    tokens: torch.Tensor | None = None
    _chunks: dict = field(default_factory=dict, repr=False)

    @property
    def num_models(self) -> int:
        return int(self.labels.shape[0])

    @property
    def size(self) -> int:
        return int(self.labels.shape[1])

    def span(self, start: int, stop: int) -> "Chunk":
        """Samples start…stop−1 of every model as one block."""
        b, n = self.labels.shape
        r = self.rows.view(b, n, -1)[:, start:stop].reshape(-1, self.rows.shape[-1])
        return Chunk(r, r.t().contiguous(), self.labels[:, start:stop],
                     None if self.targets is None else self.targets[:, start:stop])

    def plan(self, rows_per_model: int, lanes: int) -> Plan:
        """The batch prepared for the fused CPU kernels (cached)."""
        key = ("plan", rows_per_model, lanes)
        if key not in self._chunks:
            self._chunks[key] = make_plan(self.rows, self.labels, rows_per_model, lanes)
        return self._chunks[key]

    def chunks(self, size: int) -> list["Chunk"]:
        """The batch cut into consecutive blocks of `size` samples per model (cached)."""
        if size not in self._chunks:
            b, n = self.labels.shape
            rows = self.rows.view(b, n, -1)
            out = []
            for s in range(0, n, size):
                r = rows[:, s:s + size].reshape(-1, rows.shape[-1])
                out.append(Chunk(r, r.t().contiguous(), self.labels[:, s:s + size],
                                 None if self.targets is None else self.targets[:, s:s + size]))
            self._chunks[size] = out
        return self._chunks[size]


@dataclass
class Chunk:
    """A block of samples: rows (B·c, k); operand_rows (k, B·c) contiguous — index_add_ on a
    strided column is ~30× slower; labels (B, c); targets (B, c, M) or None."""

    rows: torch.Tensor
    operand_rows: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor | None


def make_batch(inputs: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, order: int, loss: str,
               dtype: torch.dtype, device: torch.device) -> Batch:
    """inputs (N, k), labels (N,), idx (B, n) sample indices per model → Batch."""
    b, n = idx.shape
    k = inputs.shape[1]
    x = inputs[idx]                                                   # (B, n, k)
    offsets = torch.arange(k) * order + (torch.arange(b) * k * order)[:, None]   # (B, k)
    rows = (x + offsets[:, None, :]).reshape(b * n, k)
    y = labels[idx]
    targets = None
    if loss == "mse":
        targets = torch.nn.functional.one_hot(y, order).to(dtype) - 1.0 / order
        targets = targets.to(device)
    return Batch(rows.to(device), y.to(device), targets, x.to(device))


def hidden_preactivation(W: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """H = Σ_j W[rows[:, j]]: W (B, kM, K), rows (B·c, k) → (B, c, K), one fused gather-sum."""
    b, km, k_width = W.shape
    h = torch.nn.functional.embedding_bag(rows, W.reshape(b * km, k_width), mode="sum")
    return h.view(b, -1, k_width)


def chunk_size(width: int, num_models: int = 1) -> int:
    """Samples per block: ≤ 256 per model and ≤ 2^20 elements per (B, c, K) tensor, so H, F and dH
    of a block stay in cache between the passes over them.  Measured on 2 cores (ms/step, p=0.4):
    M=71, K=1024: 11.4 at 256 rows, 15.7 at 1024, 18.9 whole batch; M=127, K=2048: 80 at 256,
    95 at 128, 117 whole batch."""
    return max(32, min(256, (1 << 20) // max(1, width * num_models)))


@dataclass
class Features:
    """Top-layer features on the training rows, F: (B, n, K), and the backpropagated gradient
    G_F = −∂L_sum/∂F: (B, n, K) (L_sum = ½Σ_i‖P⊥1 o_i − ỹ_i‖² for mse; None on the autograd path)."""

    F: torch.Tensor
    G: torch.Tensor | None
    hidden: list[tuple[torch.Tensor, torch.Tensor]] | None = None   # deep MLP: (F_l, G_l) of every hidden layer


@dataclass
class Evaluation:
    """Per-model loss (B,) and accuracy (B,) on one split."""

    loss: torch.Tensor
    acc: torch.Tensor


def _block_loss(O: torch.Tensor, chunk: Chunk, loss: str, n: int, need_grad: bool, need_acc: bool = True):
    """Summed loss (B,), correct count (B,) (None unless need_acc) and dL/dO of a block, for a mean over n."""
    correct = (O.argmax(-1) == chunk.labels).sum(-1) if need_acc else None
    if loss == "mse":
        R = O - O.mean(-1, keepdim=True) - chunk.targets          # P⊥1 o − ỹ (Ỹ is already centred)
        value = R.square().sum((1, 2))
        grad = R.mul_(2.0 / n) if need_grad else None             # P⊥1 is symmetric and R is centred
    else:
        logp = torch.log_softmax(O, -1)
        value = -logp.gather(-1, chunk.labels[..., None]).squeeze(-1).sum(-1)
        grad = None
        if need_grad:
            grad = logp.exp_()
            grad.scatter_add_(-1, chunk.labels[..., None], -torch.ones_like(chunk.labels[..., None], dtype=O.dtype))
            grad.div_(n)
    return value, correct, grad


class TwoLayerNet:
    """Stateless maths of the network; parameters live in a dict of stacked tensors.

    params: {"W": (B, kM, K), "V": (B, K, M), "U": (B, L, K, K) when layers > 0}.
    blas: GEMM library of the fused CPU path ("auto" measures, see engine/blas.py); threads: its lane
    workers (default: torch's thread count now); fused=False forces the torch-ops path everywhere.
    """

    name = "mlp2"
    bottom, top = "W", "V"     # the lowest and the top layer (w_norm, v_norm; drift)

    def __init__(self, activation: str, loss: str, layers: int = 0, block: int | None = None,
                 blas: str = "auto", threads: int | None = None, fused: bool = True):
        self.activation = activation
        self.sigma, self.dsigma = get_activation(activation)
        self.loss = loss
        self.layers = layers
        self.block = block      # samples per block of the torch path; None = chunk_size(K, B)
        self.fused = (FusedStep(activation, loss, blas, threads)
                      if fused and layers == 0 and fused_kernels_available() else None)

    def uses_fused(self, device: torch.device) -> bool:
        """Whether steps on `device` run through the fused CPU kernels."""
        return self.fused is not None and device.type == "cpu"

    def _fused_on(self, params) -> bool:
        W = params["W"]
        return self.uses_fused(W.device) and W.dtype in (torch.float32, torch.float64)

    def _block(self, params) -> int:
        return self.block or chunk_size(params["W"].shape[-1], params["W"].shape[0])

    # -- features -------------------------------------------------------------------------
    def features(self, params: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """Top hidden layer activations for rows (B·n, k): (B, n, K)."""
        F = self.sigma(hidden_preactivation(params["W"], rows))
        for layer in range(self.layers):
            F = self.sigma(F + torch.bmm(F, params["U"][:, layer]))
        return F

    def evaluate(self, params: dict[str, torch.Tensor], batch: Batch) -> Evaluation:
        if self._fused_on(params):
            W = params["W"]
            loss, correct = self.fused.evaluate(W, params["V"], batch.plan(W.shape[1], self.fused.lanes))
            return Evaluation((loss / batch.size).to(W.dtype), correct.double() / batch.size)
        with torch.no_grad():
            total, correct = 0, 0
            for chunk in batch.chunks(self._block(params)):
                O = torch.bmm(self.features(params, chunk.rows), params["V"])
                value, hits, _ = _block_loss(O, chunk, self.loss, batch.size, need_grad=False)
                total, correct = total + value, correct + hits
        return Evaluation(total / batch.size, correct.double() / batch.size)

    # -- training step ----------------------------------------------------------------------
    def loss_and_grads(self, params: dict[str, torch.Tensor], batch: Batch, need_F: bool = False,
                       need_acc: bool = True, on_block=None):
        """Loss/accuracy of the current parameters on `batch` and the gradients of the loss.

        on_block(chunk, F_c, D_c, s) is called for every block with its features and its backpropagated
        gradient G_c = s·D_c (see Features) — diagnostics accumulate statistics there without the
        whole (n, K) tensors ever being formed.
        Returns (Evaluation, grads dict like params, Features or None); Evaluation.acc is None
        unless need_acc (the argmax is a pass over every block that only evaluations need).  Per-model losses are
        independent, so the gradient of model b only depends on model b.  Samples are processed
        in cache-sized blocks; every per-sample quantity is row-separable, so blocks simply add up.
        """
        if self.layers > 0:
            return self._autograd_step(params, batch, need_F)
        if self._fused_on(params):
            return self._fused_step(params, batch, need_F, need_acc, on_block)
        W, V = params["W"], params["V"]
        b, km, k_width = W.shape
        n = batch.size
        dW = torch.zeros(b * km, k_width, dtype=W.dtype, device=W.device)
        dV = torch.zeros_like(V)
        # sqr: dH = (dO Vᵀ) ⊙ 2H — fold the 2 into the small V so the big tensor sees one pass.
        Vt = V.transpose(1, 2) * 2.0 if self.activation == "sqr" else V.transpose(1, 2)
        total, correct, feats, grad_feats = 0, 0, [], []
        for chunk in batch.chunks(self._block(params)):
            H = hidden_preactivation(W, chunk.rows)                  # (B, c, K)
            F = self.sigma(H)
            O = torch.bmm(F, V)                                      # (B, c, M)
            value, hits, dO = _block_loss(O, chunk, self.loss, n, need_grad=True, need_acc=need_acc)
            total, correct = total + value, (correct + hits if need_acc else None)
            dV.baddbmm_(F.transpose(1, 2), dO)
            dH = torch.bmm(dO, Vt)
            if need_F or on_block is not None:
                # G_F = −∂L_sum/∂F, with L_sum = ½Σ‖·‖² (mse) or ΣCE (ce); dH is dO·Vt so far
                scale = -(n / 2.0 if self.loss == "mse" else float(n)) / (2.0 if self.activation == "sqr" else 1.0)
                if on_block is not None:
                    on_block(chunk, F, dH, scale)     # G_F = scale · dH: no (c, K) product formed
                if need_F:
                    feats.append(F)
                    grad_feats.append(dH * scale)
            dH.mul_(H) if self.activation == "sqr" else dH.mul_(self.dsigma(H))
            dH = dH.view(-1, k_width)
            for rows_j in chunk.operand_rows:                        # k operands (2), not samples
                dW.index_add_(0, rows_j, dH)
        grads = {"W": dW.view(b, km, k_width), "V": dV}
        features = Features(torch.cat(feats, dim=1), torch.cat(grad_feats, dim=1)) if need_F else None
        return Evaluation(total / n, correct.double() / n if need_acc else None), grads, features

    def _fused_step(self, params, batch, need_F, need_acc, on_block):
        """loss_and_grads through the fused CPU kernels; hooks see the lanes' blocks in row order."""
        W, V = params["W"], params["V"]
        n = batch.size
        keep = need_F or on_block is not None
        loss, correct, dW, dV, kept = self.fused.loss_and_grads(W, V, batch.plan(W.shape[1], self.fused.lanes), keep)
        features = None
        if keep:
            # G_F = −∂L_sum/∂F = scale·D with D = dO·Vᵀ = ∂L_mean/∂F; L_sum = (n/2)·L_mean (mse), n·L_mean (ce)
            scale = -(n / 2.0 if self.loss == "mse" else float(n))
            stack = lambda arrays: (torch.from_numpy(arrays[0])[None] if len(arrays) == 1
                                    else torch.stack([torch.from_numpy(a) for a in arrays]))
            stacked = [(start, stop, stack([k[j][2] for k in kept]), stack([k[j][3] for k in kept]))
                       for j, (start, stop, _, _) in enumerate(kept[0])]
            if on_block is not None:
                for start, stop, F, D in stacked:
                    on_block(batch.span(start, stop), F, D, scale)
            if need_F:
                features = Features(torch.cat([blk[2] for blk in stacked], 1),
                                    torch.cat([blk[3] for blk in stacked], 1) * scale)
        acc = correct.double() / n if need_acc else None
        return Evaluation((loss / n).to(W.dtype), acc), {"W": dW, "V": dV}, features

    def _autograd_step(self, params, batch, need_F):
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        n = batch.size
        chunk = Chunk(batch.rows, batch.rows.t().contiguous(), batch.labels, batch.targets)
        with torch.enable_grad():
            F = self.features(leaves, batch.rows)
            O = torch.bmm(F, leaves["V"])
            value, hits, _ = _block_loss(O, chunk, self.loss, n, need_grad=False)
            grads = torch.autograd.grad(value.sum() / n, list(leaves.values()))
        return (Evaluation(value.detach() / n, hits.double() / n), dict(zip(leaves.keys(), grads)),
                (Features(F.detach(), None) if need_F else None))


def init_params(order: int, operands: int, width: int, layers: int, seed: int, init_scale: float,
                top_init_scale: float, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """One model's parameters, uniform ±scale/√fan_in, from its own generator (so a model's
    init does not depend on which other models it is stacked with).  Shapes without the B axis."""
    gen = torch.Generator().manual_seed(int(seed))

    def uniform(shape, fan_in, scale):
        bound = scale / fan_in**0.5
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1).mul_(bound).to(dtype)

    params = {"W": uniform((operands * order, width), operands * order, init_scale)}
    params["V"] = uniform((width, order), width, top_init_scale)
    if layers > 0:
        params["U"] = uniform((layers, width, width), width, init_scale)
    return params
