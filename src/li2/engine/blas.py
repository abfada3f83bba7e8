"""GEMMs for the fused CPU step: numpy (OpenBLAS) or torch (MKL), one thread per lane, and the
worker threads (lanes) the step runs on.

Which library multiplies fastest depends on the CPU (measured on this AMD EPYC: OpenBLAS ≈ 105,
MKL ≈ 80 GFLOP/s per core on the step's block shapes), so `auto_blas()` times both once per process
on a block-shaped probe and keeps the faster; torch must win by CHOICE_MARGIN to be taken, so that
noise does not flip the choice between runs.  The choice is exported as LI2_BLAS, so worker processes
started afterwards (sweeps) inherit it, and LI2_BLAS=numpy|torch set by the user pins it.  A run's
arithmetic depends on the library (different summation orders), not on which thread ran it.

Lane threads flush denormals (FTZ/DAZ): they only ever run li2's kernels, and denormals from decaying
weights slow CPU arithmetic by orders of magnitude (torch.set_flush_denormal acts on its own thread).
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

BLAS_CHOICES = ("numpy", "torch")
CHOICE_MARGIN = 1.15          # torch must be ≥ 15% faster than numpy to be chosen
_chosen: dict[str, str] = {}
_pools: dict[int, ThreadPoolExecutor] = {}
_lock = threading.Lock()
_blas_single = False


def gemm_numpy(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = a @ b through numpy's BLAS (transposed views are passed as BLAS flags, not copied)."""
    np.matmul(a, b, out=out)


def gemm_torch(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = a @ b through torch's BLAS, on zero-copy views of the numpy arrays."""
    torch.mm(torch.from_numpy(a), torch.from_numpy(b), out=torch.from_numpy(out))


GEMMS = {"numpy": gemm_numpy, "torch": gemm_torch}


def single_threaded_blas() -> None:
    """Pin numpy's BLAS to one thread (lanes run GEMMs concurrently; nested BLAS threads would fight)."""
    global _blas_single
    if not _blas_single:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1, user_api="blas")
        _blas_single = True


def step_gemm_rate(gemm, c: int, K: int, M: int, dtype=np.float32, repeats: int = 5) -> float:
    """GFLOP/s of the three GEMMs of a block step (F·V, Fᵀ·dO, dO·Vᵀ) at shapes (c, K, M), best of repeats."""
    rng = np.random.default_rng(0)
    F, V, dO = (rng.standard_normal(s).astype(dtype) for s in ((c, K), (K, M), (c, M)))
    O, dV, D = np.empty((c, M), dtype), np.empty((K, M), dtype), np.empty((c, K), dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        t = time.perf_counter()
        gemm(F, V, O)
        gemm(F.T, dO, dV)
        gemm(dO, V.T, D)
        best = min(best, time.perf_counter() - t)
    return 6 * c * K * M / best / 1e9


PROBE_SHAPE = (256, 1024, 64)   # (c, K, M): a block of the step at a typical width


def auto_blas() -> str:
    """The faster GEMM library of this machine: LI2_BLAS when set, else measured once on PROBE_SHAPE
    (one thread each) and exported as LI2_BLAS, so that processes started later make the same choice."""
    env = os.environ.get("LI2_BLAS")
    if env in BLAS_CHOICES:
        return env
    if "auto" not in _chosen:
        single_threaded_blas()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            rates = {name: step_gemm_rate(fn, *PROBE_SHAPE) for name, fn in GEMMS.items()}
        finally:
            torch.set_num_threads(threads)
        _chosen["auto"] = "torch" if rates["torch"] > CHOICE_MARGIN * rates["numpy"] else "numpy"
        os.environ["LI2_BLAS"] = _chosen["auto"]
    return _chosen["auto"]


def choose(blas: str) -> str:
    """The GEMM library for the fused step: `blas` itself unless it is "auto"."""
    if blas not in BLAS_CHOICES + ("auto",):
        raise ValueError(f"unknown BLAS '{blas}': choose auto, numpy or torch")
    return auto_blas() if blas == "auto" else blas


def resolved_blas(requested: str, device: torch.device) -> str:
    """What multiplies a run's matrices: "numpy" or "torch" in the fused CPU step, "torch" on CUDA or
    without numba (the torch-ops path)."""
    from .kernels import available
    if device.type != "cpu" or not available():
        return "torch"
    return choose(requested)


def _flush_denormals() -> None:
    torch.set_flush_denormal(True)


def _forget_pools() -> None:
    _pools.clear()   # a forked child has none of its parent's threads: let it start its own


os.register_at_fork(after_in_child=_forget_pools)


def lane_pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool of `threads` lane workers (created once, reused by every model)."""
    with _lock:
        if threads not in _pools:
            _pools[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="li2-lane",
                                                 initializer=_flush_denormals)
        return _pools[threads]
