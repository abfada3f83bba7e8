"""Two cores, two layouts: one 2-thread training process, or two 1-thread processes side by side.

For each benchmark shape it times --steps steps of li2's trainer (default evaluation cadence,
diagnostics off) (a) alone with --threads 2 and (b) twice at once with --threads 1 each, and reports
model-steps per second of each layout.  Results do not depend on the layout (the fused step's lanes
are a fixed partition), so the faster one can be chosen freely: sweeps and recipes use it.

    python benchmarks/thread_layout.py [--json] [--steps N] [--only M71,M127c]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

SHAPES = {"M71": dict(group="Z71", width=1024, train_ratio=0.4),
          "M127": dict(group="Z127", width=2048, train_ratio=0.4),
          "M127c": dict(group="Z127", width=1024, train_ratio="critical")}


def child(name: str, steps: int, threads: int) -> None:
    """Run in a fresh process: print ms/step of one training run."""
    import torch

    from li2.config import TrainConfig, build_task
    from li2.engine.trainer import Trainer
    torch.set_num_threads(threads)
    cfg = TrainConfig(**SHAPES[name], steps=steps, early_stop=False, diagnostics="off", checkpoint_every=0)
    task, ratio = build_task(cfg)
    warm = cfg.model_copy(update={"steps": 5})
    Trainer(warm, task, [0], ratio, torch.device("cpu")).run()   # load the kernels, choose the BLAS
    trainer = Trainer(cfg, task, [0], ratio, torch.device("cpu"))
    t = time.perf_counter()
    trainer.run()
    print(json.dumps({"ms_per_step": (time.perf_counter() - t) / steps * 1e3}))


def _spawn(name: str, steps: int, threads: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--child", name, "--steps", str(steps),
                             "--threads", str(threads)], stdout=subprocess.PIPE, text=True)


def _ms(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"error: benchmark child failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])["ms_per_step"]


def measure(name: str, steps: int) -> dict:
    one = _ms(_spawn(name, steps, 2))
    pair = [_spawn(name, steps, 1) for _ in range(2)]
    two = [_ms(p) for p in pair]
    rate_one, rate_two = 1e3 / one, sum(1e3 / t for t in two)
    return {"one_process_2_threads_ms_per_step": round(one, 3),
            "two_processes_1_thread_ms_per_step": [round(t, 3) for t in two],
            "model_steps_per_s": {"1x2": round(rate_one, 1), "2x1": round(rate_two, 1)},
            "faster": "2x1" if rate_two > rate_one else "1x2", "gain": round(max(rate_one, rate_two) /
                                                                            min(rate_one, rate_two), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--only", default="M71,M127c,M127")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.steps, args.threads)
        return
    result = {}
    for name in [s.strip() for s in args.only.split(",") if s.strip()]:
        steps = max(10, args.steps // 4) if name == "M127" else args.steps
        result[name] = {"steps": steps, **measure(name, steps)}
    if args.json:
        print(json.dumps(result))
        return
    for name, r in result.items():
        print(f"{name}: 1 process × 2 threads {r['model_steps_per_s']['1x2']} model-steps/s, "
              f"2 processes × 1 thread {r['model_steps_per_s']['2x1']} → {r['faster']} by {r['gain']}×")


if __name__ == "__main__":
    main()
