"""Training-step benchmark: li2 against a straightforward PyTorch baseline and the GEMM floor.

(a) fp32 GEMM throughput of this machine, with torch, on the model's own three GEMM shapes
    (forward F·V, and the two backward products Fᵀ·dO and dO·Vᵀ): 6·n·K·M FLOPs per step.
(b) li2's milliseconds per step (evaluation at li2's default cadence included).
(c) a baseline: nn.Linear on one-hot inputs, autograd, torch.optim.Adam, evaluated at the same steps.

    python benchmarks/train_step.py [--json] [--steps N] [--diagnostics off|basic]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from li2.groups import get_group
from li2.trainer import Trainer

from li2.config import TrainConfig
from li2.task import make_task, split

CONFIGS = {"M71": dict(group="Z71", width=1024), "M127": dict(group="Z127", width=2048)}


def gemm_rate(n: int, K: int, M: int, repeats: int = 20) -> float:
    """GFLOP/s of the three GEMMs of one training step, at these exact shapes."""
    F, V, dO = torch.randn(n, K), torch.randn(K, M), torch.randn(n, M)
    for _ in range(3):
        F @ V, F.T @ dO, dO @ V.T
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        F @ V, F.T @ dO, dO @ V.T
        best = min(best, time.perf_counter() - t)
    return 6 * n * K * M / best / 1e9


def li2_ms_per_step(cfg: TrainConfig, steps: int) -> float:
    task = make_task(get_group(cfg.group), 2)
    from li2.diagnostics import hooks_for
    trainer = Trainer(cfg, task, [0], cfg.train_ratio, torch.device("cpu"), hooks=hooks_for(cfg, task))
    t = time.perf_counter()
    trainer.run()
    return (time.perf_counter() - t) / steps * 1e3


def baseline_ms_per_step(cfg: TrainConfig, steps: int) -> float:
    """The obvious PyTorch program: one-hot inputs, nn.Linear layers, autograd, torch.optim.Adam."""
    torch.set_flush_denormal(True)   # li2 flushes denormals while it trains; give the baseline the same
    task = make_task(get_group(cfg.group), 2)
    M = task.order
    tr, te = split(task.num_samples, cfg.train_ratio, 0)
    onehot = lambda idx: torch.cat([torch.nn.functional.one_hot(task.inputs[idx, j], M).float() for j in (0, 1)], 1)
    Xtr, Xte = onehot(tr), onehot(te)
    Ytr = torch.nn.functional.one_hot(task.labels[tr], M).float() - 1.0 / M
    Yte = torch.nn.functional.one_hot(task.labels[te], M).float() - 1.0 / M
    torch.manual_seed(0)
    W = torch.nn.Linear(2 * M, cfg.width, bias=False)
    V = torch.nn.Linear(cfg.width, M, bias=False)
    opt = torch.optim.Adam(list(W.parameters()) + list(V.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    evals = set(cfg.eval_steps())

    def loss_fn(X, Y):
        O = V(W(X) ** 2)
        O = O - O.mean(1, keepdim=True)
        return ((O - Y) ** 2).sum(1).mean(), O

    t = time.perf_counter()
    for step in range(steps):
        loss, O = loss_fn(Xtr, Ytr)
        if step in evals:
            with torch.no_grad():
                test_loss, Ot = loss_fn(Xte, Yte)
                _ = (Ot.argmax(1) == task.labels[te]).float().mean().item(), loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t) / steps * 1e3


def measure(name: str, steps: int, diagnostics: str) -> dict:
    cfg = TrainConfig(**CONFIGS[name], train_ratio=0.4, steps=steps, early_stop=False, diagnostics=diagnostics,
                      checkpoint_every=0)
    task_n = round(0.4 * int(cfg.group[1:]) ** 2)
    M = int(cfg.group[1:])
    rate = gemm_rate(task_n, cfg.width, M)
    floor = 6 * task_n * cfg.width * M / (rate * 1e9) * 1e3
    li2_ms = min(li2_ms_per_step(cfg, steps) for _ in range(2))
    base_ms = min(baseline_ms_per_step(cfg, steps) for _ in range(2))
    return {"M": M, "K": cfg.width, "n_train": task_n, "steps": steps, "diagnostics": diagnostics,
            "gemm_gflops": round(rate, 1), "floor_ms_per_step": round(floor, 3),
            "li2_ms_per_step": round(li2_ms, 3), "baseline_ms_per_step": round(base_ms, 3),
            "speedup_vs_baseline": round(base_ms / li2_ms, 3), "ratio_to_floor": round(li2_ms / floor, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--steps", type=int, default=200, help="steps timed for M=71 (M=127 uses half)")
    ap.add_argument("--diagnostics", default="off", choices=["off", "basic", "full"])
    ap.add_argument("--m71-only", action="store_true", help="skip the (slow) M=127 configuration")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    result = measure("M71", args.steps, args.diagnostics)
    if not args.m71_only:
        result["M127"] = measure("M127", max(10, args.steps // 2), args.diagnostics)
    result["threads"] = torch.get_num_threads()
    result["torch"] = str(torch.__version__)
    if args.json:
        print(json.dumps(result))
    else:
        for key in ("M71", "M127") if "M127" in result else ("M71",):
            r = result if key == "M71" else result["M127"]
            print(f"{key}: li2 {r['li2_ms_per_step']:.2f} ms/step, baseline {r['baseline_ms_per_step']:.2f}, "
                  f"floor {r['floor_ms_per_step']:.2f} (GEMM {r['gemm_gflops']} GFLOP/s) → "
                  f"speedup {r['speedup_vs_baseline']:.2f}×, ratio to floor {r['ratio_to_floor']:.2f}",
                  file=sys.stdout)


if __name__ == "__main__":
    main()
