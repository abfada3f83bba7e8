"""The two-layer step on the CPU: fused numba kernels between BLAS GEMMs, in parallel lanes.

The training rows of each model are cut into LANES contiguous lanes (a fixed partition: the
arithmetic does not depend on how many threads run them, so results are identical for any thread
count ≤ LANES).  A lane walks its rows in blocks of c (the block's (c, K) tensors stay in L2):

    forward_block   F = σ(H), S = σ'(H), H = Σ_j W[rows_j]                    one pass
    GEMM            O = F·V                                                    (c, M)
    loss_block      loss, hits, dO in place of O                              one pass over (c, M)
    GEMM            D = dO·Vᵀ                                                  (c, K)
    backward_block  dW[rows_j] += D ⊙ S                                        one pass
and after its last block one GEMM dV = F_laneᵀ·dO_lane.  Lane partials are summed in lane order.
Every GEMM is one-threaded: the lanes are the parallelism (no BLAS thread pool spinning against them).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from .blas import GEMMS, choose, lane_pool, single_threaded_blas
from .kernels import ACTIVATION_CODES, LOSS_CODES, backward_block, forward_block, loss_block

LANES = 2
PAD = 8   # classes padded to a multiple of 8 for the GEMMs: M = 71 → 72 runs F·V and Fᵀ·dO ≈ 12% faster


def block_rows(width: int) -> int:
    """Rows per block: c·K ≤ 2^18 (F, S, D of a block ≈ 3 MiB, mostly L2-resident).  Measured (CPU ms per
    step, one lane, M=127, K=2048, n=6452): 115 at 32 rows, 110 at 64, 105 at 128, 108 at 256;
    M=71, K=1024: 11.1 / 10.2 / 9.9 / 9.8 at 32 / 64 / 128 / 256 (before the padding of M)."""
    return max(16, min(256, (1 << 18) // max(1, width)))


def lane_bounds(n: int, lanes: int) -> list[int]:
    return [(n * lane) // lanes for lane in range(lanes + 1)]


@dataclass
class Plan:
    """One split prepared for the kernels: rows (B, n, k) int64 rows of each model's W (kM, K),
    labels (B, n) int64, and the lane boundaries."""

    rows: np.ndarray
    labels: np.ndarray
    bounds: list[int]


def make_plan(batch_rows: torch.Tensor, labels: torch.Tensor, rows_per_model: int, lanes: int) -> Plan:
    """batch_rows (B·n, k) with model offsets b·kM baked in → per-model rows."""
    b, n = labels.shape
    rows = batch_rows.view(b, n, -1).numpy() - (np.arange(b) * rows_per_model)[:, None, None]
    return Plan(np.ascontiguousarray(rows, dtype=np.int64), np.ascontiguousarray(labels.numpy(), dtype=np.int64),
                lane_bounds(n, lanes))


@dataclass
class LaneResult:
    loss: float
    correct: int
    blocks: list                 # [(start, stop, F, D)] kept for hooks: the lane's rows, F and D = dO·Vᵀ
    dV: np.ndarray | None


class _Scratch(threading.local):
    """Per-thread buffers, reused across steps (keyed by shape and dtype)."""

    def get(self, name: str, shape: tuple, dtype) -> np.ndarray:
        store = self.__dict__.setdefault("arrays", {})
        key = (name, shape, np.dtype(dtype).str)
        if key not in store:
            store[key] = np.empty(shape, dtype)
        return store[key]


def _quiet(fn, *args):
    # a diverging model's NaN/inf are handled by the trainer; numpy need not warn about them
    with np.errstate(all="ignore"):
        return fn(*args)


class FusedStep:
    """Loss, accuracy and gradients of the two-layer network (layers = 0) on CPU tensors.

    activation, loss: as TwoLayerNet; blas: "auto" | "numpy" | "torch"; threads: lane workers.
    """

    def __init__(self, activation: str, loss: str, blas: str = "auto", threads: int | None = None,
                 lanes: int = LANES, block: int | None = None):
        self.act = ACTIVATION_CODES[activation]
        self.loss = LOSS_CODES[loss]
        self.blas_request = blas
        self.blas: str | None = None
        self.threads = threads or torch.get_num_threads()
        self.lanes = max(lanes, self.threads)
        self.block = block
        self._scratch = _Scratch()
        self._partials: dict = {}

    def _setup(self, W: np.ndarray, M: int) -> None:
        if self.blas is None:
            single_threaded_blas()
            self.blas = choose(self.blas_request)
        self.gemm = GEMMS[self.blas]

    def _run(self, tasks):
        pool = lane_pool(self.threads)
        return [f.result() for f in [pool.submit(_quiet, *t) for t in tasks]]

    # -- training pass ------------------------------------------------------------------------------
    def loss_and_grads(self, W: torch.Tensor, V: torch.Tensor, plan: Plan, keep_blocks: bool):
        """W (B, kM, K), V (B, K, M) → loss (B,) float64, correct (B,), dW, dV (torch, like W, V), and
        per model the kept blocks [(start, stop, F, D)] (D = dO·Vᵀ) when keep_blocks."""
        Wn, Vn = W.detach().numpy(), V.detach().numpy()
        B, _, K = Wn.shape
        M = Vn.shape[-1]
        self._setup(Wn, M)
        Vp = self._padded(Vn)
        n = plan.labels.shape[1]
        dW, dV = np.empty_like(Wn), np.empty_like(Vn)
        tasks = []
        for b in range(B):
            for lane in range(self.lanes):
                out = dW[b] if lane == 0 else self._partial("dW", b, lane, Wn.shape[1:], Wn.dtype)
                tasks.append((self._lane_step, Wn[b], Vp[b], M, plan, b, lane, out, 1.0 / n, keep_blocks))
        results = self._run(tasks)
        loss, correct, kept = np.zeros(B), np.zeros(B, np.int64), []
        for b in range(B):
            parts = results[b * self.lanes:(b + 1) * self.lanes]
            np.copyto(dV[b], parts[0].dV[:, :M])
            for lane, part in enumerate(parts):
                loss[b] += part.loss
                correct[b] += part.correct
                if lane > 0:
                    np.add(dW[b], self._partials[("dW", b, lane)], out=dW[b])
                    np.add(dV[b], part.dV[:, :M], out=dV[b])
            kept.append([blk for part in parts for blk in part.blocks])
        return torch.from_numpy(loss), torch.from_numpy(correct), torch.from_numpy(dW), torch.from_numpy(dV), kept

    def _partial(self, name, b, lane, shape, dtype) -> np.ndarray:
        key = (name, b, lane)
        if key not in self._partials or self._partials[key].shape != shape or self._partials[key].dtype != dtype:
            self._partials[key] = np.empty(shape, dtype)
        return self._partials[key]

    def _padded(self, Vn: np.ndarray) -> np.ndarray:
        """V (B, K, M) copied into a zero-padded (B, K, Mp) buffer, Mp = M rounded up to PAD."""
        B, K, M = Vn.shape
        Mp = -(-M // PAD) * PAD
        key = ("Vp", B, K, Mp, Vn.dtype.str)
        if key not in self._partials:
            self._partials[key] = np.zeros((B, K, Mp), Vn.dtype)
        Vp = self._partials[key]
        Vp[:, :, :M] = Vn
        return Vp

    def _lane_step(self, W, V, M: int, plan: Plan, b: int, lane: int, dW, inv_n: float,
                   keep: bool) -> LaneResult:
        """One lane's rows: V is padded (K, Mp); returns its loss, hits, dV (K, Mp) and kept blocks."""
        s0, s1 = plan.bounds[lane], plan.bounds[lane + 1]
        rows, labels = plan.rows[b, s0:s1], plan.labels[b, s0:s1]
        nl, K, Mp = s1 - s0, W.shape[1], V.shape[1]
        c = self.block or block_rows(K)
        sc = self._scratch
        F = np.empty((nl, K), W.dtype) if keep else sc.get("F", (nl, K), W.dtype)
        dO = sc.get("dO", (nl, Mp), W.dtype)
        S = sc.get("S", (c, K), W.dtype)
        D_lane = np.empty((nl, K), W.dtype) if keep else None
        D_block = sc.get("D", (c, K), W.dtype)
        dW.fill(0)
        total, hits = 0.0, 0
        for s in range(0, nl, c):
            e = min(nl, s + c)
            Fb, Ob = F[s:e], dO[s:e]
            D = D_lane[s:e] if keep else D_block[:e - s]
            forward_block(W, rows[s:e], self.act, Fb, S[:e - s])
            self.gemm(Fb, V, Ob)
            value, correct = loss_block(Ob, labels[s:e], M, self.loss, inv_n, True)
            total, hits = total + value, hits + correct
            self.gemm(Ob, V.T, D)
            backward_block(D, S[:e - s], rows[s:e], dW)
        dV = np.empty((K, Mp), W.dtype)
        self.gemm(F.T, dO[:nl], dV)
        # hooks get the lane whole (one call per lane: their per-call overhead is paid twice, not n/c times)
        return LaneResult(total, hits, [(s0, s1, F, D_lane)] if keep else [], dV)

    # -- forward only -------------------------------------------------------------------------------
    def evaluate(self, W: torch.Tensor, V: torch.Tensor, plan: Plan):
        """Loss (B,) float64 summed over rows and correct count (B,) of every model on `plan`'s rows."""
        Wn, Vn = W.detach().numpy(), V.detach().numpy()
        B, M = Wn.shape[0], Vn.shape[-1]
        self._setup(Wn, M)
        Vp = self._padded(Vn)
        tasks = [(self._lane_forward, Wn[b], Vp[b], M, plan, b, lane) for b in range(B) for lane in range(self.lanes)]
        results = self._run(tasks)
        loss, correct = np.zeros(B), np.zeros(B, np.int64)
        for i, (value, hits) in enumerate(results):
            loss[i // self.lanes] += value
            correct[i // self.lanes] += hits
        return torch.from_numpy(loss), torch.from_numpy(correct)

    def _lane_forward(self, W, V, M: int, plan: Plan, b: int, lane: int):
        s0, s1 = plan.bounds[lane], plan.bounds[lane + 1]
        rows, labels = plan.rows[b, s0:s1], plan.labels[b, s0:s1]
        K, Mp = W.shape[1], V.shape[1]
        c = self.block or block_rows(K)
        F = self._scratch.get("Fe", (c, K), W.dtype)
        O = self._scratch.get("Oe", (c, Mp), W.dtype)
        no_S = self._scratch.get("S0", (0, K), W.dtype)
        total, hits = 0.0, 0
        for s in range(0, s1 - s0, c):
            e = min(s1 - s0, s + c)
            forward_block(W, rows[s:e], self.act, F[:e - s], no_S)
            self.gemm(F[:e - s], V, O[:e - s])
            value, correct = loss_block(O[:e - s], labels[s:e], M, self.loss, 1.0, False)
            total, hits = total + value, hits + correct
        return total, hits
