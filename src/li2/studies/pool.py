"""An asynchronous pool of training tasks for studies whose next runs depend on the last ones (the search).

`TaskPool(executor, workers, address)` takes tasks — a module-level function and plain arguments,
so a spawned process or a Ray worker can run it — with `submit(key, fn, *args)` and hands back
`(key, result)` pairs from `wait()` as tasks finish, in whatever order they finish. Executors:
    "local"  a spawn-context process pool of `workers` processes (li2.studies.sweep's worker set-up: the
             cores shared out, exit when the driver dies; the GEMM library measured once here and
             inherited); with workers == 1 the tasks
             run in this process, one per `wait()`, in the order submitted (tests, smoke runs);
    "ray"    Ray tasks of one CPU each (a cluster at `address`, or a local instance of `workers` CPUs).
A task function must not raise (it returns {"error": …} instead); a worker that dies (OOM, signal)
costs a fresh pool and one retry of each unfinished task, after which its result is an error.
"""
from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, Callable, Hashable, Iterator

from ..engine.blas import auto_blas
from .sweep import SweepError, _import_ray, worker_init, worker_threads

EXECUTORS = ("local", "ray")


@contextmanager
def ray_session(workers: int, address: str | None = None) -> Iterator[None]:
    """Ray started once for several TaskPools (they leave a running Ray alone), shut down at the end."""
    ray = _import_ray()
    auto_blas()       # before Ray's workers start, so they inherit LI2_BLAS
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


class TaskPool:
    """submit / wait over the local process pool, this process, or Ray (module doc)."""

    def __init__(self, executor: str = "local", workers: int | None = None, address: str | None = None):
        if executor not in EXECUTORS:
            raise SweepError(f"unknown executor '{executor}' (use {' or '.join(EXECUTORS)})")
        if workers is not None and workers < 1:
            raise SweepError(f"--workers must be >= 1, got {workers}")
        self.executor, self.address = executor, address
        self.workers = workers or os.cpu_count() or 1
        self._pending: dict[Any, tuple[Hashable, Callable, tuple, int]] = {}   # handle → (key, fn, args, tries)
        self._queue: deque = deque()            # in-process tasks
        self._pool: ProcessPoolExecutor | None = None
        self._ray = None
        self._ray_started = False
        self._remote: dict[Callable, Any] = {}
        if executor == "ray":
            self._ray = _import_ray()

    # -- submitting ------------------------------------------------------------------------------
    def submit(self, key: Hashable, fn: Callable, *args) -> None:
        self._launch(key, fn, args, 0)

    def _launch(self, key: Hashable, fn: Callable, args: tuple, tries: int) -> None:
        if self.executor == "ray":
            handle = self._ray_task(fn).remote(*args)
        elif self.workers == 1:
            handle = object()
            self._queue.append(handle)
        else:
            handle = self._local().submit(fn, *args)
        self._pending[handle] = (key, fn, args, tries)

    def _local(self) -> ProcessPoolExecutor:
        if self._pool is None:
            auto_blas()   # measured once here and inherited (LI2_BLAS): every worker multiplies alike
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=worker_init,
                                             initargs=(os.getpid(), worker_threads(self.workers)))
        return self._pool

    def _ray_task(self, fn: Callable):
        ray = self._ray
        auto_blas()
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
            else:
                ray.init(num_cpus=self.workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            self._ray_started = True
        if fn not in self._remote:
            self._remote[fn] = ray.remote(num_cpus=1, max_retries=1)(fn)
        return self._remote[fn]

    # -- collecting ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._pending)

    def keys(self) -> list[Hashable]:
        """The keys of the tasks not yet collected."""
        return [v[0] for v in self._pending.values()]

    def wait(self) -> tuple[Hashable, Any]:
        """The (key, result) of the next task to finish (blocks); SweepError when nothing is pending."""
        if not self._pending:
            raise SweepError("no task is pending")
        if self.executor == "ray":
            return self._wait_ray()
        if self.workers == 1:
            handle = self._queue.popleft()
            key, fn, args, _ = self._pending.pop(handle)
            return key, fn(*args)
        return self._wait_local()

    def _wait_ray(self) -> tuple[Hashable, Any]:
        done, _ = self._ray.wait(list(self._pending), num_returns=1)
        key, *_ = self._pending.pop(done[0])
        try:
            return key, self._ray.get(done[0])
        except Exception as e:   # the task's worker died twice, or the cluster went away
            return key, {"error": f"ray task failed: {' '.join(str(e).split())[:500]}"}

    def _wait_local(self) -> tuple[Hashable, Any]:
        while True:
            done, _ = wait([h for h in self._pending if isinstance(h, Future)], return_when=FIRST_COMPLETED)
            fut = next(iter(done))
            key, fn, args, tries = self._pending.pop(fut)
            try:
                return key, fut.result()
            except BrokenProcessPool:
                # a worker died: every unfinished task of this pool fails the same way; retry each once
                # in a fresh pool (they resume from their checkpoints)
                self._restart()
                if tries >= 1:
                    return key, {"error": "worker process died twice while running this task (out of memory?)"}
                self._launch(key, fn, args, tries + 1)

    def _restart(self) -> None:
        # tasks that finished before the pool broke keep their results; the others start again
        broken = [(h, v) for h, v in self._pending.items()
                  if isinstance(h, Future) and not (h.done() and not h.cancelled() and h.exception() is None)]
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        for handle, (key, fn, args, tries) in broken:
            del self._pending[handle]
            self._launch(key, fn, args, tries + 1)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._ray_started:
            self._ray.shutdown()
            self._ray_started = False
        self._pending.clear()
        self._queue.clear()

    def __enter__(self) -> "TaskPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
