"""`li2 train` with its defaults, end to end (process start, imports, training, checkpoints, figures).

Runs `python -m li2.cli train --quiet --out DIR` --repeats times and reports for each the wall time,
the CPU time (user + sys) and, from the kernel's per-thread scheduler statistics
(/proc/<pid>/task/*/schedstat, Linux), the time its threads sat runnable while other processes had
the cores.  `idle_estimate_s` = wall − the main thread's wait − the longest lane thread's wait: what
the run would take on an idle machine (the lanes' waits hold up the main thread, which blocks on them);
a rough guide only: a busy machine also slows the threads that run (shared caches, memory).

    python benchmarks/end_to_end.py [--json] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

# Run inside the child: at exit, dump each thread's (name, run ns, runqueue-wait ns) to a file.
CHILD = """
import atexit, json, os, sys
def _dump(path=sys.argv[1]):
    rows = []
    for tid in os.listdir('/proc/self/task'):
        try:
            run, wait, _ = open(f'/proc/self/task/{tid}/schedstat').read().split()
            name = open(f'/proc/self/task/{tid}/comm').read().strip()
        except OSError:
            continue
        rows.append([name, int(tid) == os.getpid(), int(run), int(wait)])
    open(path, 'w').write(json.dumps(rows))
atexit.register(_dump)
sys.argv = ['li2', 'train', '--quiet', '--out', sys.argv[2]]
from li2.cli.root import main
main()
"""


def one_run(workdir: str, index: int) -> dict:
    stats, out = os.path.join(workdir, f"sched{index}.txt"), os.path.join(workdir, f"run{index}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, stats, out], capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"error: li2 train failed: {proc.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}
    if os.path.exists(stats):
        with open(stats) as f:
            rows = json.load(f)
        main_wait = sum(r[3] for r in rows if r[1]) / 1e9
        lane_wait = max([r[3] / 1e9 for r in rows if not r[1]] or [0.0])   # lanes: the busy other threads
        result.update({"main_wait_s": round(main_wait, 3), "lane_wait_s": round(lane_wait, 3),
                       "idle_estimate_s": round(wall - main_wait - lane_wait, 3)})
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        runs = [one_run(workdir, i) for i in range(args.repeats)]
    load = os.getloadavg()[0]
    result = {"runs": runs, "best_wall_s": min(r["wall_s"] for r in runs),
              "best_idle_estimate_s": min((r.get("idle_estimate_s", r["wall_s"]) for r in runs)),
              "load_average_1min": round(load, 2), "cores": os.cpu_count()}
    if args.json:
        print(json.dumps(result))
        return
    for r in runs:
        print(" ".join(f"{k} {v}" for k, v in r.items()))
    print(f"best wall {result['best_wall_s']} s, best idle estimate {result['best_idle_estimate_s']} s "
          f"(load average {load:.2f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
