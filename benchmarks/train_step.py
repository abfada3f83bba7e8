"""Training-step benchmark: li2 against a straightforward PyTorch baseline and the GEMM floor.

(a) fp32 GEMM throughput of this machine on the model's own three GEMM shapes (forward F·V, and the
    two backward products Fᵀ·dO and dO·Vᵀ: 6·n·K·M FLOPs per step), with every BLAS li2 can use:
    torch (MKL on x86 CPUs) and numpy (OpenBLAS), at the benchmark's thread count.  The best of them
    is `best_gemm_gflops` and `floor_best_ms_per_step` the step at that rate (`gemm_gflops` and
    `floor_ms_per_step` are torch's, the keys of earlier versions).
(b) li2's milliseconds per step over --steps of Trainer.run (evaluation at li2's default cadence, test
    subset and all, included): the best 25-step window (each window holds the same 5 evaluations; the
    counterpart of the floor's best-of-repeats on a shared machine) and the whole-run mean, best of two runs.
(c) a baseline: nn.Linear on one-hot inputs, autograd, torch.optim.Adam, evaluated at the same steps.

Configurations: M71 (K=1024, p=0.4: the paper's Fig. 1 run), M127 (K=2048, p=0.4), M127c (K=1024,
p = p_c = 2.7482·ln M/M: the scaling study's shape).  The top-level keys are M71's (as before).

    python benchmarks/train_step.py [--json] [--steps N] [--diagnostics off|basic] [--only M71,M127c]
                                    [--device cpu|cuda] [--stacked 1,16,256]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from li2.config import TrainConfig, build_task
from li2.engine.diagnostics import hooks_for
from li2.engine.trainer import Trainer
from li2.task import split

CONFIGS = {"M71": dict(group="Z71", width=1024, train_ratio=0.4),
           "M127": dict(group="Z127", width=2048, train_ratio=0.4),
           "M127c": dict(group="Z127", width=1024, train_ratio="critical")}


def _best_seconds(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def gemm_rates(n: int, K: int, M: int, threads: int, device: torch.device, repeats: int = 20) -> dict[str, float]:
    """GFLOP/s of the three GEMMs of one training step, at these exact shapes, per BLAS library."""
    flops = 6 * n * K * M
    if device.type == "cuda":
        F, V, dO = (torch.randn(s, device=device) for s in ((n, K), (K, M), (n, M)))

        def run():
            F @ V, F.T @ dO, dO @ V.T
            torch.cuda.synchronize()
        return {"torch": flops / _best_seconds(run, repeats) / 1e9}
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    F, V, dO = (rng.standard_normal(s).astype(np.float32) for s in ((n, K), (K, M), (n, M)))
    Ft, Vt, dOt = (torch.from_numpy(a) for a in (F, V, dO))
    rates = {"torch": flops / _best_seconds(lambda: (Ft @ Vt, Ft.T @ dOt, dOt @ Vt.T), repeats) / 1e9}
    with threadpool_limits(threads, user_api="blas"):
        rates["numpy"] = flops / _best_seconds(lambda: (F @ V, F.T @ dO, dO @ V.T), repeats) / 1e9
    return rates


WINDOW = 25   # steps per timing window: each holds the same 5 evaluations of the default cadence (≤ step 200)


def li2_ms_per_step(cfg: TrainConfig, device: torch.device) -> tuple[float, float, str]:
    """(best 25-step window, whole-run mean incl. set-up and the final evaluation) in ms per step, BLAS used.

    The best window is to li2 what best-of-repeats is to the GEMM floor: the rate when the (shared)
    machine lets it run; on a quiet machine the two agree."""
    task, ratio = build_task(cfg)
    trainer = Trainer(cfg, task, [0], ratio, device, hooks=hooks_for(cfg, task))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    stamps = [time.perf_counter()]

    def tick(_):
        sync()   # a no-op on the CPU; the trainer syncs every step on CUDA anyway (its finite check)
        stamps.append(time.perf_counter())
    trainer.run(progress=tick)
    sync()
    mean = (time.perf_counter() - stamps[0]) / cfg.steps * 1e3
    windows = [(stamps[i + WINDOW] - stamps[i]) / WINDOW * 1e3 for i in range(0, len(stamps) - WINDOW, WINDOW)]
    best = min(windows) if windows else mean
    if trainer.model.uses_fused(device):
        return best, mean, f"{trainer.model.fused.blas}, fused kernels in {trainer.model.fused.lanes} lanes"
    return best, mean, "torch"


def baseline_ms_per_step(cfg: TrainConfig, device: torch.device) -> float:
    """The obvious PyTorch program: one-hot inputs, nn.Linear layers, autograd, torch.optim.Adam."""
    torch.set_flush_denormal(True)   # li2 flushes denormals while it trains; give the baseline the same
    task, ratio = build_task(cfg)
    M = task.order
    tr, te = split(task.num_samples, ratio, 0)
    onehot = lambda idx: torch.cat([torch.nn.functional.one_hot(task.inputs[idx, j], M).float()
                                    for j in (0, 1)], 1).to(device)
    Xtr, Xte = onehot(tr), onehot(te)
    Ytr = (torch.nn.functional.one_hot(task.labels[tr], M).float() - 1.0 / M).to(device)
    Yte = (torch.nn.functional.one_hot(task.labels[te], M).float() - 1.0 / M).to(device)
    labels_te = task.labels[te].to(device)
    torch.manual_seed(0)
    W = torch.nn.Linear(2 * M, cfg.width, bias=False).to(device)
    V = torch.nn.Linear(cfg.width, M, bias=False).to(device)
    opt = torch.optim.Adam(list(W.parameters()) + list(V.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    evals = set(cfg.eval_steps())

    def loss_fn(X, Y):
        O = V(W(X) ** 2)
        O = O - O.mean(1, keepdim=True)
        return ((O - Y) ** 2).sum(1).mean(), O

    t = time.perf_counter()
    for step in range(cfg.steps):
        loss, O = loss_fn(Xtr, Ytr)
        if step in evals:
            with torch.no_grad():
                test_loss, Ot = loss_fn(Xte, Yte)
                _ = (Ot.argmax(1) == labels_te).float().mean().item(), loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / cfg.steps * 1e3


def measure(name: str, steps: int, diagnostics: str, device: torch.device) -> dict:
    cfg = TrainConfig(**CONFIGS[name], steps=steps, early_stop=False, diagnostics=diagnostics, checkpoint_every=0,
                      device=device.type)
    task, ratio = build_task(cfg)
    M, K = task.order, cfg.width
    n = split(task.num_samples, ratio, 0)[0].shape[0]
    flops = 6 * n * K * M
    rates = gemm_rates(n, K, M, torch.get_num_threads(), device)
    best_blas = max(rates, key=rates.get)
    runs = [li2_ms_per_step(cfg, device) for _ in range(2)]
    li2_ms, li2_mean, blas = min(r[0] for r in runs), min(r[1] for r in runs), runs[-1][2]
    base_ms = min(baseline_ms_per_step(cfg, device) for _ in range(2))
    floor = flops / (rates["torch"] * 1e9) * 1e3
    best_floor = flops / (rates[best_blas] * 1e9) * 1e3
    return {"M": M, "K": K, "train_ratio": round(ratio, 4), "n_train": n, "steps": steps, "diagnostics": diagnostics,
            "gemm_gflops": round(rates["torch"], 1), "floor_ms_per_step": round(floor, 3),
            "gemm_gflops_by_blas": {k: round(v, 1) for k, v in rates.items()},
            "best_gemm_gflops": round(rates[best_blas], 1), "best_gemm_blas": best_blas,
            "floor_best_ms_per_step": round(best_floor, 3),
            "li2_ms_per_step": round(li2_ms, 3), "li2_ms_per_step_whole_run": round(li2_mean, 3),
            "li2_blas": blas, "baseline_ms_per_step": round(base_ms, 3),
            "speedup_vs_baseline": round(base_ms / li2_ms, 3), "ratio_to_floor": round(li2_ms / floor, 3),
            "ratio_to_best_floor": round(li2_ms / best_floor, 3),
            "ratio_to_best_floor_whole_run": round(li2_mean / best_floor, 3)}


def stacked_model_steps(sizes: list[int], steps: int, device: torch.device) -> dict[str, float]:
    """Model-steps per second of B equal-shape models (M=71, K=1024, p=0.4) trained on one model axis."""
    out = {}
    for b in sizes:
        cfg = TrainConfig(**CONFIGS["M71"], steps=steps, early_stop=False, diagnostics="off", checkpoint_every=0,
                          device=device.type, seeds=list(range(b)))
        task, ratio = build_task(cfg)
        trainer = Trainer(cfg, task, cfg.seeds, ratio, device)
        t = time.perf_counter()
        trainer.run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out[str(b)] = round(b * steps / (time.perf_counter() - t), 1)
    return out


def blas_info() -> dict:
    from threadpoolctl import threadpool_info
    libs = [f"{i.get('internal_api')} {i.get('version') or ''} ({i.get('architecture') or '-'})"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return {"numpy_blas": libs, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--steps", type=int, default=200, help="steps timed for M71 and M127c (M127 uses half)")
    ap.add_argument("--diagnostics", default="off", choices=["off", "basic", "full"])
    ap.add_argument("--only", default="M71,M127,M127c", help="comma-separated configurations")
    ap.add_argument("--m71-only", action="store_true", help="same as --only M71")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--stacked", default="", help="also time B stacked models, e.g. 1,16,64,256 (model-steps/s)")
    args = ap.parse_args()
    names = ["M71"] if args.m71_only else [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in names if s not in CONFIGS]
    if bad:
        print(f"error: unknown configuration {bad[0]} (choose from {', '.join(CONFIGS)})", file=sys.stderr)
        sys.exit(2)
    device = torch.device(args.device)
    torch.set_flush_denormal(True)
    result: dict = {}
    for name in names:
        steps = max(10, args.steps // 2) if name == "M127" else args.steps
        result[name] = measure(name, steps, args.diagnostics, device)
    if "M71" in result:
        result.update({k: v for k, v in result["M71"].items()})   # the top-level keys of earlier versions
    if args.stacked:
        result["stacked_model_steps_per_s"] = stacked_model_steps([int(b) for b in args.stacked.split(",")],
                                                                  max(10, args.steps // 4), device)
    result["threads"] = torch.get_num_threads()
    result["torch"] = str(torch.__version__)
    result["numpy"] = np.__version__
    result["blas"] = blas_info()
    result["device"] = args.device
    if args.json:
        print(json.dumps(result))
        return
    for key in names:
        r = result[key]
        print(f"{key}: li2 {r['li2_ms_per_step']:.2f} ms/step ({r['li2_blas']}), baseline "
              f"{r['baseline_ms_per_step']:.2f}, best floor {r['floor_best_ms_per_step']:.2f} "
              f"(GEMM {r['best_gemm_gflops']} GFLOP/s, {r['best_gemm_blas']}) → speedup "
              f"{r['speedup_vs_baseline']:.2f}×, ratio to best floor {r['ratio_to_best_floor']:.2f}")
    if "stacked_model_steps_per_s" in result:
        print(f"stacked M71 model-steps/s: {result['stacked_model_steps_per_s']}")


if __name__ == "__main__":
    main()
