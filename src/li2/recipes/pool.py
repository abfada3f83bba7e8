"""One pool of training processes for a whole `li2 reproduce` call.

A spawned worker pays for importing torch and li2 once (seconds on a busy 2-core machine); a pool per
grid would pay it for every grid of every recipe. The registry makes one RunPool per reproduce call,
hands it to every recipe through RecipeContext, and closes it at the end.

Each task trains one run folder (resuming it when it was started) with the threads `worker_threads` gives
(the fused step's lanes make results independent of it), so results
equal a single-threaded run of the same config, whichever worker ran it.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Iterator

from ..studies.sweep import execute_run, worker_init, worker_threads


def train_one(config_json: dict, run_dir: str) -> dict:
    """Train one run in its folder, as a sweep worker does (resume, Li2Warnings recorded, never raises)."""
    return execute_run(config_json, run_dir, figures=False)


class RunPool:
    """`workers` spawned processes, started on first use; with workers == 1 runs train in this process."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=worker_init,
                                             initargs=(os.getpid(), worker_threads(self.workers)))
        return self._pool

    def train(self, todo: list[tuple[dict, Path]], done: Callable[[int], None] | None = None,
              in_process: bool = False) -> Iterator[tuple[int, dict]]:
        """Train (config_json, run_dir) pairs; yield (index into todo, outcome) as runs finish.
        A dead worker (OOM, signal) costs a fresh pool and one retry per unfinished run."""
        if self.workers == 1 or in_process or len(todo) == 1:
            import torch
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for i, (cfg, d) in enumerate(todo):
                    yield i, train_one(cfg, str(d))
                    if done:
                        done(1)
            finally:
                torch.set_num_threads(threads)
            return
        queue, attempts = list(range(len(todo))), {}
        while queue:
            pool = self._executor()
            futures = {pool.submit(train_one, todo[i][0], str(todo[i][1])): i for i in queue}
            queue = []
            try:
                for fut in as_completed(futures):
                    i = futures[fut]
                    try:
                        outcome = fut.result()
                    except BrokenProcessPool:
                        attempts[i] = attempts.get(i, 0) + 1
                        if attempts[i] < 2:
                            queue.append(i)
                            continue
                        outcome = {"error": "worker process died twice while training this run (out of memory?)"}
                    yield i, outcome
                    if done:
                        done(1)
            finally:
                if queue:   # the pool broke: start a fresh one for the retries
                    self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
