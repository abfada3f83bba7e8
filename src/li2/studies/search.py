"""The adaptive p_c search: per group order, train where the uncertainty about p_c is, until it is known.

Spec (YAML, `li2 phase-search SPEC --out DIR`; every key checked before anything runs):

    name: phase-search
    base: {steps: 2000, lr: 0.002}      # TrainConfig fields shared by every run (not group, train_ratio, seeds)
    orders: [23, 31, 41, 53, 71]        # cyclic groups Z_M searched
    kappa: 16                           # width K = round(κ·M) (omit to use base.width or the default)
    budget_cap: 8000                    # undecided runs are continued (budget doubled) up to this many steps
    start: [0.75, 1.0, 1.33]            # first batch, multiples of p_ref = reference_c·ln M/M
    batch: 2                            # runs per later batch
    tolerance: 0.05                     # stop an M when its p_c interval is narrower than this × p_c
    max_runs: 16                        # … or when it has spent this many runs
    reference_c: 2.7482

Each M is a chain of batches (li2.studies.design: probabilistic bisection on ln p). A run is an
ordinary run folder DIR/runs/<id> (<id>: li2.studies.spec.run_id of its config at the base budget;
the j-th run of an M trains seed j, so every run has its own init and split). When a run of a batch
ends without grokking, `li2.theory.outcomes.budget_outcome` says whether the budget decided it
(memorized, stalled, diverged) or not (undecided); an undecided run is continued in place to twice its
budget (li2.runs.continuation.extend_run), up to budget_cap, where it counts as a failure. When every
run of the batch is decided (or capped), the chain proposes the next batch from the successes so far.

Resumable and deterministic: a chain's proposals depend only on its own finished runs, so a rerun
replays every chain from its run folders (finished runs are read, not trained) and trains on where it
stopped; the chains of different M run concurrently on the executor (li2.studies.pool: local process
pool or Ray), and their scheduling changes no result. DIR also holds search.yaml (the spec; a DIR
holding another search is refused), results.parquet (one row per run, rewritten as runs finish,
RESULT_COLUMNS) and .lock while a search runs.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from ..config import TrainConfig
from ..runs.continuation import budgets, extend_run
from ..runs.training import train
from ..store import (
    StoreError,
    clean_leftovers,
    parse_yaml,
    read_json,
    read_parquet,
    read_text,
    read_yaml,
    write_parquet,
)
from ..task import REFERENCE_C, critical_ratio, train_size
from ..theory.outcomes import budget_outcome
from .design import Design, propose, status
from .pool import TaskPool
from .spec import SweepError, run_id
from .sweep import _locked, claim_study_folder, out_folder

RESULT_COLUMNS = ("order", "width", "probe", "batch", "seed", "train_ratio", "ratio_over_reference", "run_id",
                  "budget", "budgets", "outcome", "success", "grok_step", "final_test_acc", "final_train_acc",
                  "steps_trained", "wall_seconds", "status", "error")


class SearchSpec(BaseModel):
    """The parsed YAML (module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr | None = None
    base: dict = Field(default_factory=dict)
    orders: list[int]
    kappa: float | None = Field(None, gt=0)
    budget_cap: int | None = Field(None, ge=1)
    start: list[float] = Field(default_factory=lambda: list(Design.start))
    batch: int = Field(Design.batch, ge=1, le=64)
    tolerance: float = Field(Design.tolerance, gt=0, lt=2)
    max_runs: int = Field(Design.max_runs, ge=2, le=10_000)
    reference_c: float = Field(REFERENCE_C, gt=0)

    @classmethod
    def parse(cls, obj) -> "SearchSpec":
        if not isinstance(obj, dict):
            raise SweepError("the search spec must be a mapping with keys name, base, orders, kappa, budget_cap, "
                             "start, batch, tolerance, max_runs, reference_c")
        try:
            spec = cls.model_validate(obj)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "spec"
            if err.get("type") == "extra_forbidden":
                raise SweepError(f"{where}: unknown key (a search spec has {', '.join(cls.model_fields)})") from None
            raise SweepError(f"{where}: {err.get('msg', 'invalid value')}") from None
        spec.check()
        return spec

    @classmethod
    def load(cls, path: str | Path) -> "SearchSpec":
        try:
            return cls.parse(parse_yaml(read_text(path), str(path)))
        except StoreError as e:
            raise SweepError(f"search spec {e}") from None

    def check(self) -> None:
        """Semantic checks: every order makes a valid config, the start ratios are positive, the cap fits."""
        for key in ("group", "train_ratio", "seeds", "seed"):
            if key in self.base:
                raise SweepError(f"base.{key}: the search sets it (orders, its ratios, one seed per run)")
        if not self.orders or len(set(self.orders)) != len(self.orders) or min(self.orders) < 3:
            raise SweepError(f"orders: give distinct group orders >= 3, got {self.orders}")
        if not self.start or min(self.start) <= 0:
            raise SweepError(f"start: give positive multiples of p_ref, got {self.start}")
        if self.kappa is not None and "width" in self.base:
            raise SweepError("kappa: the width is κ·M; remove base.width (or kappa)")
        for m in self.orders:
            self.config(m, min(1.0, critical_ratio(m, self.reference_c)), 0)
        if self.budget_cap is not None and self.budget_cap < self.steps:
            raise SweepError(f"budget_cap: {self.budget_cap} is below the base budget steps = {self.steps}")

    @property
    def steps(self) -> int:
        """The base step budget (base.steps, or TrainConfig's default)."""
        return int(self.base.get("steps", TrainConfig.model_fields["steps"].default))

    @property
    def cap(self) -> int:
        return self.budget_cap or self.steps

    def width(self, order: int) -> int | None:
        return None if self.kappa is None else max(1, round(self.kappa * order))

    def design(self) -> Design:
        return Design(start=tuple(self.start), batch=self.batch, tolerance=self.tolerance, max_runs=self.max_runs)

    def config(self, order: int, ratio: float, seed: int) -> TrainConfig:
        """The run's config at the base budget (one seed, one thread)."""
        options = {"threads": 1, **self.base, "group": f"Z{order}", "train_ratio": ratio, "seeds": [seed]}
        if self.kappa is not None:
            options["width"] = self.width(order)
        try:
            return TrainConfig(**options)
        except ValidationError as e:
            err = e.errors()[0]
            raise SweepError(f"base.{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}") from None

    def to_yaml(self) -> str:
        import yaml
        return yaml.safe_dump(self.model_dump(), sort_keys=False)


# -- one run: train or continue it to a budget, and read what it became ----------------------------------

def bring_to_budget(config_json: dict, run_dir: str, steps: int) -> dict:
    """Worker task: train the run (base budget) if it is not started, then continue it to `steps`; never raises."""
    try:
        config = TrainConfig.model_validate(config_json)
        folder = Path(run_dir)
        if folder.exists() and not (folder / "config.yaml").exists():
            shutil.rmtree(folder)   # killed before its config was written: nothing worth keeping
        if not (folder / "config.yaml").exists():
            train(config, folder, figures=False)
            if steps == config.steps:
                return {"ok": True}
        extend_run(folder, steps)    # resumes an interrupted run, or continues a finished one to `steps`
        return {"ok": True}
    except Exception as e:   # the search records the failure of one run and goes on
        text = " ".join(str(e).split()) or "no message"
        return {"error": f"{type(e).__name__}: {text}"[:1000]}


def run_state(folder: Path, threshold: float) -> dict | None:
    """A finished run folder → {budget, budgets, outcome, grok_step, final accs, steps_trained, wall_seconds,
    status}; None when the folder holds no finished run (or a damaged one: it is trained again)."""
    try:
        saved = read_yaml(folder / "config.yaml")
        model = read_json(folder / "summary.json")["models"][0]
        metrics = read_parquet(folder / "metrics.parquet")
    except (StoreError, KeyError, IndexError, TypeError):
        return None
    outcome, _ = budget_outcome(metrics, str(model.get("status") or ""), threshold)
    return {"budget": int(saved["config"]["steps"]), "budgets": json.dumps([*budgets(folder), saved["config"]["steps"]]),
            "outcome": outcome, "success": outcome == "grokked", "grok_step": model.get("grok_step"),
            "final_test_acc": model.get("final_test_acc"), "final_train_acc": model.get("final_train_acc"),
            "steps_trained": model.get("steps_trained"), "wall_seconds": model.get("wall_seconds"),
            "status": model.get("status")}


# -- chains --------------------------------------------------------------------------------------------

@dataclass
class Probe:
    order: int
    index: int
    batch: int
    ratio: float
    config: TrainConfig
    run_id: str
    target: int                      # the budget it is being brought to
    state: dict | None = None        # run_state once finished at `target`
    error: str | None = None


@dataclass
class Chain:
    """One M's search: its probes in order; the last batch is open until every run in it is decided."""

    order: int
    spec: SearchSpec
    out: Path
    probes: list[Probe] = field(default_factory=list)
    closed: int = 0                  # probes in closed batches
    batches: int = 0
    done: bool = False

    def folder(self, probe: Probe) -> Path:
        return self.out / "runs" / probe.run_id

    def outcomes(self) -> tuple[list[float], list[float]]:
        """(ratios, successes) of the runs in closed batches (runs that failed to train are left out)."""
        done = [p for p in self.probes[:self.closed] if p.state is not None]
        return [p.ratio for p in done], [float(p.state["success"]) for p in done]

    def _open_batch(self) -> bool:
        ratios, wins = self.outcomes()
        nxt = propose(ratios, wins, critical_ratio(self.order, self.spec.reference_c), self.spec.design())
        if not nxt:
            self.done = True
            return False
        for ratio in nxt:
            j = len(self.probes)
            cfg = self.spec.config(self.order, ratio, j)
            self.probes.append(Probe(self.order, j, self.batches, ratio, cfg, run_id(cfg), cfg.steps))
        self.batches += 1
        return True

    def _needs(self, probe: Probe, threshold: float) -> bool:
        """Whether the probe needs a task: not finished at its target, or finished undecided below the cap."""
        if probe.error is not None:
            return False
        state = run_state(self.folder(probe), threshold)
        if state is not None and state["budget"] > probe.target:
            probe.target = state["budget"]          # continued in an earlier session
        if state is None or state["budget"] < probe.target:
            return True
        probe.state = state
        if state["outcome"] == "undecided" and state["budget"] < self.spec.cap:
            probe.target = min(2 * state["budget"], self.spec.cap)
            probe.state = None
            return True
        return False

    def advance(self, threshold: float) -> list[Probe]:
        """The probes that need training now ([] once the chain is done)."""
        while not self.done:
            if self.closed == len(self.probes) and not self._open_batch():
                return []
            todo = [p for p in self.probes[self.closed:] if p.state is None and self._needs(p, threshold)]
            if todo:
                return todo
            self.closed = len(self.probes)
        return []

    def summary(self) -> dict:
        st = status(*self.outcomes(), self.spec.design())
        return {k: v for k, v in st.items() if k != "profile"}


def _row(chain: Chain, probe: Probe) -> dict:
    row = {"order": probe.order, "width": probe.config.width, "probe": probe.index, "batch": probe.batch,
           "seed": probe.config.seeds[0], "train_ratio": probe.ratio,
           "ratio_over_reference": round(probe.ratio / critical_ratio(probe.order, chain.spec.reference_c), 6),
           "run_id": probe.run_id, "error": probe.error}
    state = probe.state or {}
    for key in RESULT_COLUMNS:
        row.setdefault(key, state.get(key))
    if probe.error is not None:
        row["status"], row["success"], row["outcome"] = "failed", False, "failed"
    return row


def results_table(chains: list[Chain]) -> pd.DataFrame:
    rows = [_row(c, p) for c in chains for p in c.probes if p.state is not None or p.error is not None]
    df = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    for key, dtype in (("grok_step", "Int64"), ("steps_trained", "Int64"), ("budget", "Int64"),
                       ("final_test_acc", "float64"), ("final_train_acc", "float64"), ("wall_seconds", "float64")):
        df[key] = pd.to_numeric(df[key], errors="coerce").astype(dtype)
    return df.sort_values(["order", "probe"], kind="stable").reset_index(drop=True)


# -- the driver ----------------------------------------------------------------------------------------

def run_search(spec: SearchSpec | dict | str | Path, out_dir: str | Path, executor: str = "local",
               workers: int | None = None, address: str | None = None,
               progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run (or resume) the search into out_dir; returns the results table (also results.parquet).

    progress(line) hears one line per finished task and per finished M."""
    spec = spec if isinstance(spec, SearchSpec) else (SearchSpec.load(spec) if isinstance(spec, (str, Path))
                                                      else SearchSpec.parse(spec))
    out = out_folder(out_dir)
    threshold = spec.config(spec.orders[0], 0.5, 0).grok_threshold
    say = progress or (lambda _line: None)
    with _locked(out), TaskPool(executor, workers, address) as pool:
        claim_study_folder(spec, out, "search")
        clean_leftovers(out)
        chains = [Chain(m, spec, out) for m in spec.orders]
        _drive(chains, pool, threshold, out, say)
        table = results_table(chains)
        write_parquet(out / "results.parquet", table)
        return table


def _drive(chains: list[Chain], pool: TaskPool, threshold: float, out: Path, say: Callable[[str], None]) -> None:
    """Advance every chain, keep at most pool.workers tasks in flight — the largest M first, as its runs are
    the longest and its chain the critical path — and record each finished task, until every chain is done.
    Scheduling changes no result: each chain depends on its own runs only."""
    ready: list[tuple[Chain, Probe]] = []
    busy: set[int] = set()
    t0 = time.perf_counter()
    while True:
        for c in chains:
            if c.order in busy or c.done:
                continue
            todo = c.advance(threshold)
            ready.extend((c, p) for p in todo)
            if todo:
                busy.add(c.order)
            else:
                s = c.summary()
                say(f"M = {c.order}: {s['state']} after {s['n']} runs")
        ready.sort(key=lambda cp: (-cp[0].order, cp[1].index))
        while ready and len(pool) < pool.workers:
            c, p = ready.pop(0)
            pool.submit((c.order, p.index), bring_to_budget, p.config.model_dump(mode="json"), str(c.folder(p)),
                        p.target)
        write_parquet(out / "results.parquet", results_table(chains))
        if not len(pool):
            return
        (order, index), result = pool.wait()
        chain = next(c for c in chains if c.order == order)
        probe = chain.probes[index]
        if "error" in result:
            probe.error = result["error"]
        if not any(k[0] == order for k in pool.keys()) and not any(c.order == order for c, _ in ready):
            busy.discard(order)
        say(f"M = {order}: run {index} (p = {probe.ratio:g}) at {probe.target} steps "
            f"{'failed' if probe.error else 'done'} ({time.perf_counter() - t0:.0f} s)")


# -- cost ----------------------------------------------------------------------------------------------

# Seconds per training step on one core, a + b·n·K·M (n training samples, K width, M classes): fixed
# overhead plus the three GEMMs of the step; measured with `measure_step_cost` on the 2-core development
# machine (shared, so a little pessimistic). Evaluations (test subset) are folded in.
STEP_FIXED_S = 7e-4
STEP_WORK_S = 1.3e-10
CONTINUED_SHARE = 1 / 3      # "typical": a third of the runs continued to the cap (the quick study's share)


def step_seconds(order: int, ratio: float, width: int, fixed: float = STEP_FIXED_S, per_work: float = STEP_WORK_S
                 ) -> float:
    return fixed + per_work * train_size(order * order, ratio) * width * order


def estimate_cost(spec: SearchSpec, fixed: float = STEP_FIXED_S, per_work: float = STEP_WORK_S) -> dict:
    """Core-seconds of a search before it starts: every M spends max_runs runs near p_ref; upper bound =
    every run trained to the cap, typical = every run to the base budget and CONTINUED_SHARE of them on to
    the cap. {"runs", "upper_core_seconds", "typical_core_seconds", "per_order": {M: typical}}."""
    per_order, upper, typical = {}, 0.0, 0.0
    for m in spec.orders:
        ratio = min(1.0, critical_ratio(m, spec.reference_c))
        s = step_seconds(m, ratio, spec.config(m, ratio, 0).width, fixed, per_work)
        up = spec.max_runs * spec.cap * s
        ty = spec.max_runs * (spec.steps + CONTINUED_SHARE * (spec.cap - spec.steps)) * s
        per_order[str(m)] = round(ty, 1)
        upper, typical = upper + up, typical + ty
    return {"runs": spec.max_runs * len(spec.orders), "upper_core_seconds": round(upper, 1),
            "typical_core_seconds": round(typical, 1), "per_order": per_order,
            "model": f"steps × ({fixed:g} s + {per_work:g} s × n·K·M) per run"}


def measure_step_cost(spec: SearchSpec, steps: int = 40) -> tuple[float, float]:
    """(fixed, per_work) of step_seconds fitted to two short timed single-thread runs (the smallest and the
    largest M of the spec at p_ref; nothing written)."""
    import torch
    lo, hi = min(spec.orders), max(spec.orders)
    points = []
    threads = torch.get_num_threads()
    try:
        for m in (lo, hi):
            ratio = min(1.0, critical_ratio(m, spec.reference_c))
            cfg = spec.config(m, ratio, 0).model_copy(update={"steps": steps, "early_stop": False, "threads": 1})
            t0 = time.perf_counter()
            train(cfg, write=False, figures=False)
            points.append((train_size(m * m, ratio) * cfg.width * m, (time.perf_counter() - t0) / steps))
    finally:
        torch.set_num_threads(threads)
    (w0, s0), (w1, s1) = points
    per_work = max((s1 - s0) / (w1 - w0), 0.0) if w1 > w0 else 0.0
    return max(s0 - per_work * w0, 0.0), per_work
