"""Full-batch training of a stack of models, with evaluation, early stop, divergence handling,
diagnostics hooks and exact checkpoint/resume.

The trainer knows nothing of terminals or files beyond calling the callbacks it is given:
`progress(n)` after n model-steps, `checkpoint(step, tensors, meta)` when a checkpoint is due,
`evaluated(rows)` with the metrics rows an evaluation has just recorded (live loggers).
Its whole state is `state_dict()` → (tensors, meta) and `load_state_dict(tensors, meta)`.

One step of `run`, read top to bottom:
    _maybe_checkpoint   the state before the step, every checkpoint_every steps
    _apply_ridge        --top-layer ridge: V ← V_ridge(F) (the exact Stage-I limit)
    _maybe_snapshot     W kept at ≈ log-spaced steps for the spectrum figures
    _pass               one forward/backward over the training rows (diagnostics hooks ride on it)
    _evaluate           at evaluation steps: test split, metrics row, early stop
    _update             the optimiser step (W only in ridge mode)

Hooks with per-pass accumulators (`begin`/`block_part`/`add`/`columns`, as Diagnostics) have their
work run side by side on the fused CPU step's lanes, which are idle between passes (`on_lanes`; on
one thread or a GPU, `inline`): the blocks' statistics once the pass is done (added in row order),
then an evaluation's independent column tasks. Each piece's arithmetic is the same on any thread,
so the metrics are those of the inline run. Measured on 2 cores (`li2 train` defaults, 36
evaluations): with li2.theory.ridge.spd_solve, the diagnostics take 1.3 s of the 2.7 s training
loop (3.7 s of 5.1 s when they ran inline on one thread with torch's Cholesky).
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from ..config import TrainConfig
from ..task import Task, split
from ..theory.ridge import ridge_top_layer
from .blas import lane_pool
from .fused import LANES
from .model import Batch, Evaluation, Features, make_batch
from .networks import Network, build_network, embedding, initial_params
from .optim import Optimizer

BASE_COLUMNS = ("step", "seed", "train_loss", "train_acc", "test_loss", "test_acc", "w_norm", "v_norm")


@dataclass
class EvalContext:
    """What a diagnostics hook sees at an evaluation step (all tensors stacked over B models)."""

    step: int
    model: Network
    params: dict[str, torch.Tensor]
    W0: torch.Tensor                # the lowest layer at initialisation (model.bottom: W, or the embedding)
    train: Batch
    features: Features | None       # F and G_F on the training rows, (B, n, K) each; None when no
                                    # hook asked for them (needs_features = False)
    weight_decay: torch.Tensor      # (B,)
    task: Task
    config: TrainConfig
    V0: torch.Tensor | None = None  # the top layer at initialisation (model.top: V (B, K, M), or the unembedding)
    grads: dict[str, torch.Tensor] | None = None   # ∂L_mean/∂θ of this pass, like params (None at a final
                                                   # evaluation without hooks)
    init: dict[str, torch.Tensor] | None = None    # every parameter at initialisation, like params


class DiagnosticsHook(Protocol):
    def __call__(self, ctx: EvalContext) -> dict[str, torch.Tensor]: ...   # column → (B,) values


def inline(tasks: list[Callable[[], object]]) -> list:
    """Run independent tasks one after another (the `run` of hooks' columns on one thread)."""
    return [task() for task in tasks]


def on_lanes(tasks: list[Callable[[], object]]) -> list:
    """Run independent tasks on the lane threads and return their results in order (the lanes are
    idle between the fused step's passes)."""
    pool = lane_pool(LANES)
    return [f.result() for f in [pool.submit(task) for task in tasks]]


@dataclass
class UnitResult:
    """Outcome of training one stack: metrics rows, final parameters and per-model status."""

    seeds: list[int]
    rows: list[dict]
    params: dict[str, torch.Tensor]
    status: list[str]
    wall_seconds: list[float]
    stopped_step: list[int] = field(default_factory=list)
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)   # step → model.embedding (B, rows, width)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available; use --device auto or cpu")
    return torch.device(name)


def evaluation_subset(test_idx: torch.Tensor, seeds: list[int], size: int) -> torch.Tensor:
    """The test samples evaluated during training: per model a fixed random subset of `size` of its
    test indices (B, n_test), drawn by its seed and kept sorted; all of them when size is 0 or ≥ n_test.

    At the default 4096 samples the standard error of an accuracy near 0.95 is ≈ 0.34%, so the step at
    which the subset crosses --grok-threshold is the whole test set's to within one evaluation interval
    unless the accuracy lingers within ~1% of the threshold."""
    if size == 0 or size >= test_idx.shape[1]:
        return test_idx
    picks = []
    for row, seed in zip(test_idx, seeds):
        gen = torch.Generator().manual_seed(int(seed) + TEST_SUBSET_SEED_OFFSET)
        picks.append(row[torch.randperm(row.shape[0], generator=gen)[:size].sort().values])
    return torch.stack(picks)


TEST_SUBSET_SEED_OFFSET = 7919   # the subset's draw is independent of the split's (seeded by the seed itself)


def _norms(x: torch.Tensor) -> torch.Tensor:
    """‖x_b‖_F per model: (B, …) → (B,)."""
    return x.norm(dim=(1, 2)) if x.dim() == 3 else x.reshape(x.shape[0], -1).norm(dim=1)


class Trainer:
    """Trains B models (one per seed) of identical shapes on the same task, stacked."""

    def __init__(self, config: TrainConfig, task: Task, seeds: list[int], ratio: float, device: torch.device,
                 lr: list[float] | None = None, weight_decay: list[float] | None = None,
                 hooks: tuple[DiagnosticsHook, ...] = ()):
        self.config, self.task, self.seeds, self.device = config, task, list(seeds), device
        self.dtype = torch.float64 if config.dtype == "float64" else torch.float32
        self.hooks = hooks
        self.block_hooks = [h for h in hooks if hasattr(h, "on_block")]
        # hooks driven through per-pass accumulators (their blocks' statistics may be computed anywhere)
        self.acc_hooks = [h for h in self.block_hooks if hasattr(h, "columns") and not getattr(h, "needs_features", True)]
        self.run_tasks: Callable[[list], list] = inline   # on_lanes while a fused CPU run has lanes to spare
        self._accs: dict = {}                              # hook → its statistics of this pass
        self._parts: list = []                             # (hook, task computing a block's part) in row order
        # hooks that accumulate statistics block by block don't need the whole F and G_F
        self.want_F = any(getattr(h, "needs_features", True) for h in hooks)
        b = len(self.seeds)
        m = task.order
        self.model = build_network(config, task)
        splits = [split(task.num_samples, ratio, s) for s in self.seeds]
        train_idx = torch.stack([s[0] for s in splits])
        test_idx = torch.stack([s[1] for s in splits])
        self.train = make_batch(task.inputs, task.labels, train_idx, m, config.loss, self.dtype, device)
        self.test = (make_batch(task.inputs, task.labels, test_idx, m, config.loss, self.dtype, device)
                     if test_idx.shape[1] > 0 else None)
        sub_idx = evaluation_subset(test_idx, self.seeds, config.test_subset)
        self.test_during = (self.test if sub_idx is test_idx else
                            make_batch(task.inputs, task.labels, sub_idx, m, config.loss, self.dtype, device))
        inits = [initial_params(config, task, s, self.dtype) for s in self.seeds]
        self.params = {k: torch.stack([p[k] for p in inits]).to(device) for k in inits[0]}
        # not checkpointed (but W0, the lowest layer's, is): the init is a function of the seed
        self.init = {k: v.clone() for k, v in self.params.items()}
        self.W0 = self.init[self.model.bottom]
        self.V0 = self.init[self.model.top]
        per_model = lambda vals, default: torch.tensor(vals if vals is not None else [default] * b,
                                                       dtype=torch.float64, device=device)
        self.lr = per_model(lr, config.lr)
        self.weight_decay = per_model(weight_decay, config.weight_decay)
        muon_lr = None if config.muon_lr is None else per_model(None, config.muon_lr)
        self.opt = Optimizer(config.optimizer, self.params, self.lr, self.weight_decay, config.momentum,
                             (config.beta1, config.beta2), config.eps, muon_lr=muon_lr)
        self.ridge = config.top_layer == "ridge"
        # Coupled L2 makes the objective (1/n)‖FV−Ỹ‖² + (η/2)‖V‖², whose minimiser is the ridge
        # solution with λ = n·η/2 — the exact Stage-I limit of this very training run.
        self.ridge_lambda = self.weight_decay * (self.train.size / 2.0)
        self.eval_steps = set(config.eval_steps())
        self.snap_steps = self.snapshot_steps()
        # run state (all of it goes into checkpoints)
        self.step = 0
        self.active = torch.ones(b, dtype=torch.bool, device=device)
        self.good_since = torch.full((b,), -1, dtype=torch.long)    # first step of the current ≥ threshold streak
        self.stopped = torch.full((b,), -1, dtype=torch.long)       # step a model stopped (-1: still running)
        self.diverged = torch.zeros(b, dtype=torch.bool)
        self.last_good = {k: v.clone() for k, v in self.params.items()}
        self.rows: list[dict] = []
        self.snapshots: dict[int, torch.Tensor] = {}               # step → embedding for spectrum figures
        self.elapsed = 0.0
        self._start = 0.0                                          # perf_counter origin of `elapsed`

    def snapshot_steps(self) -> set[int]:
        """Evaluation steps at which W is kept for figures: the first eval at or after each of
        0, 10, 30, 100, 300, … (≈ log-spaced), plus the last step."""
        evals = sorted(self.config.eval_steps())
        marks, m = [0], 10
        while m < self.config.steps:
            marks += [m, 3 * m]
            m *= 10
        return {next(e for e in evals if e >= mark) for mark in marks if mark <= evals[-1]} | {evals[-1]}

    # -- main loop -------------------------------------------------------------------------------
    def run(self, progress: Callable[[int], None] | None = None,
            checkpoint: Callable[[int, dict, dict], None] | None = None,
            evaluated: Callable[[list[dict]], None] | None = None) -> UnitResult:
        """Train until --steps or until every model has stopped; returns the unit's results."""
        # Denormals appear as weights decay and slow CPU kernels by orders of magnitude; flushing
        # them to zero is deterministic and changes nothing measurable. Only while training.
        flush = self.device.type == "cpu" and torch.set_flush_denormal(True)
        # The fused CPU step runs its own lanes; torch's remaining small ops (optimiser, hooks) stay on
        # this thread, whose denormals are flushed (torch's pool threads would not be).
        threads = torch.get_num_threads()
        fused = self.model.uses_fused(self.device)
        if fused:
            torch.set_num_threads(1)
        self.run_tasks = on_lanes if fused and threads > 1 else inline
        try:
            self._start = time.perf_counter() - self.elapsed
            while True:
                step = self.step
                self._maybe_checkpoint(step, checkpoint)
                self._apply_ridge()
                self._maybe_snapshot(step)
                final = step >= self.config.steps
                evaluating = final or step in self.eval_steps
                train_eval, grads, feats = self._pass(evaluating, final)
                if not final:
                    self._check_finite(train_eval.loss)
                if evaluating:
                    recorded = len(self.rows)
                    self._evaluate(step, train_eval, feats, final, grads)
                    if evaluated is not None:
                        evaluated(self.rows[recorded:])
                if final or not bool(self.active.any()):
                    break
                self._update(grads)
                self.step += 1
                if progress is not None:
                    progress(int(self.active.sum()))
            self._tick()
            if self.step not in self.snapshots:
                self.snapshots[self.step] = embedding(self.config, self.params, self.task.order).detach().cpu().clone()
            return self.result()
        finally:
            torch.set_num_threads(threads)
            if flush:
                torch.set_flush_denormal(False)

    def _tick(self) -> None:
        self.elapsed = time.perf_counter() - self._start

    def _maybe_checkpoint(self, step: int, checkpoint) -> None:
        every = self.config.checkpoint_every
        if checkpoint is not None and every and 0 < step < self.config.steps and step % every == 0:
            self._tick()
            checkpoint(step, *self.state_dict())

    def _apply_ridge(self) -> None:
        if self.ridge:
            with torch.no_grad():
                F = self.model.features(self.params, self.train.rows)
                # class centring: the minimiser of this run's own loss (not the paper's sample-centred one)
                self.params["V"].copy_(ridge_top_layer(F, self.train.targets, self.ridge_lambda, centring="classes"))

    def _maybe_snapshot(self, step: int) -> None:
        if step in self.snap_steps or step >= self.config.steps:
            self.snapshots[step] = embedding(self.config, self.params, self.task.order).detach().cpu().clone()

    def _pass(self, evaluating: bool, final: bool):
        """One pass over the training rows → (Evaluation, grads or None, Features or None).

        At evaluation steps the block hooks accumulate their statistics on this very pass; the final
        evaluation needs no gradients, so without hooks it is a plain forward pass."""
        if final and not self.hooks:
            return self.model.evaluate(self.params, self.train), None, None
        on_block = None
        if evaluating and self.block_hooks:
            self._accs = {hook: hook.begin(self.params) for hook in self.acc_hooks}
            for hook in self.block_hooks:
                if hook not in self._accs:
                    hook.reset(self.params)
            on_block = self._on_block
        result = self.model.loss_and_grads(self.params, self.train, need_F=self.want_F and evaluating,
                                           need_acc=evaluating, on_block=on_block)
        if self._parts:   # the blocks' statistics side by side, then added in row order
            parts = self.run_tasks([task for _, task in self._parts])
            for (hook, _), part in zip(self._parts, parts):
                hook.add(self._accs[hook], part)
            self._parts = []
        return result

    def _on_block(self, chunk, F, D, scale) -> None:
        """Feed one block to the block hooks (an accumulator hook's part of it is computed after the pass)."""
        for hook in self.block_hooks:
            if hook in self._accs:
                self._parts.append((hook, functools.partial(hook.block_part, self._accs[hook], chunk, F, D, scale)))
            else:
                hook.on_block(chunk, F, D, scale)

    def _update(self, grads: dict[str, torch.Tensor]) -> None:
        if self.ridge:   # V is the ridge solution: every layer below it learns
            grads.pop(self.model.top)
            self.opt.step({k: v for k, v in self.params.items() if k != self.model.top}, grads, self.active)
        else:
            self.opt.step(self.params, grads, self.active)

    # -- one evaluation ------------------------------------------------------------------------
    def _evaluate(self, step: int, train_eval: Evaluation, feats: Features | None, final: bool,
                  grads: dict[str, torch.Tensor] | None = None) -> None:
        """Test split (its fixed subset before the final step: config.test_subset), diagnostics hooks,
        one metrics row per running model, early stop."""
        self._tick()
        test = self.test if final else self.test_during
        test_eval = self.model.evaluate(self.params, test) if test is not None else None
        cols = {
            "train_loss": train_eval.loss, "train_acc": train_eval.acc,
            "test_loss": test_eval.loss if test_eval else torch.full_like(train_eval.loss, float("nan")),
            "test_acc": test_eval.acc if test_eval else torch.full_like(train_eval.acc, float("nan")),
            "w_norm": _norms(self.params[self.model.bottom]), "v_norm": _norms(self.params[self.model.top]),
        }
        if self.hooks:
            ctx = EvalContext(step, self.model, self.params, self.W0, self.train, feats, self.weight_decay,
                              self.task, self.config, self.V0, grads, self.init)
            for hook in self.hooks:
                cols.update(hook.columns(ctx, self._accs[hook], self.run_tasks) if hook in self._accs else hook(ctx))
        cols = {k: v.detach().double().cpu().tolist() for k, v in cols.items()}
        new_rows = {}
        for i, seed in enumerate(self.seeds):
            if step > 0 and not bool(self.active[i]) and int(self.stopped[i]) < step:
                continue   # stopped models keep their last row
            row = {"step": step, "seed": seed}
            row.update({k: v[i] for k, v in cols.items()})
            row["wall_seconds"] = self.elapsed
            self.rows.append(row)
            new_rows[i] = row
        self._early_stop(step, torch.tensor(cols["test_acc"]))
        self._whole_test_for_stopped(step, new_rows, final)
        if not final:
            finite = torch.isfinite(train_eval.loss)
            for k in self.params:
                self.last_good[k][finite] = self.params[k][finite]

    def _whole_test_for_stopped(self, step: int, new_rows: dict[int, dict], final: bool) -> None:
        """A model that early-stops at this step ends here: its last row reports the whole test set
        (the subset decided the stop), like the final evaluation of a run that used its budget."""
        if final or self.test_during is self.test or self.test is None:
            return
        stopping = [i for i in new_rows if int(self.stopped[i]) == step and not bool(self.diverged[i])]
        if stopping:
            whole = self.model.evaluate(self.params, self.test)
            for i in stopping:
                new_rows[i]["test_loss"], new_rows[i]["test_acc"] = float(whole.loss[i]), float(whole.acc[i])

    def _early_stop(self, step: int, test_acc: torch.Tensor) -> None:
        """Stop a model once test accuracy ≥ grok_threshold has held for stop_margin steps."""
        ok = test_acc >= self.config.grok_threshold
        self.good_since = torch.where(ok, torch.where(self.good_since < 0, torch.tensor(step), self.good_since),
                                      torch.tensor(-1))
        if self.config.early_stop:
            done = ok & (step - self.good_since >= self.config.stop_margin) & self.active.cpu()
            for i in torch.nonzero(done).flatten().tolist():
                self.active[i] = False
                self.stopped[i] = step

    def _check_finite(self, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss) & self.active
        if bool(bad.any()):
            for i in torch.nonzero(bad).flatten().tolist():
                self.active[i] = False
                self.diverged[i] = True
                self.stopped[i] = self.step
                for k in self.params:   # keep the last good weights, not the NaNs
                    self.params[k][i].copy_(self.last_good[k][i])

    def result(self) -> UnitResult:
        """The unit's results so far: rows, final parameters, per-model status."""
        status = []
        for i in range(len(self.seeds)):
            if bool(self.diverged[i]):
                status.append(f"diverged at step {int(self.stopped[i])}")
            elif int(self.stopped[i]) >= 0:
                status.append("early_stop")
            else:
                status.append("completed")
        return UnitResult(self.seeds, self.rows, {k: v.detach().cpu() for k, v in self.params.items()},
                          status, [self.elapsed] * len(self.seeds),
                          [int(s) if s >= 0 else self.step for s in self.stopped.tolist()], dict(self.snapshots))

    # -- checkpoint state --------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, meta): everything needed to continue this stack exactly. Metrics rows so far
        are stored column by column (float64 is exact for every value logged)."""
        t = {f"param.{k}": v for k, v in self.params.items()}
        t.update({f"last_good.{k}": v for k, v in self.last_good.items()})
        t["W0"] = self.W0
        t.update(self.opt.state_tensors())
        t["active"] = self.active.to(torch.uint8)
        t["good_since"], t["stopped"] = self.good_since, self.stopped
        t["diverged"] = self.diverged.to(torch.uint8)
        t.update({f"snapshot.{step}": w for step, w in self.snapshots.items()})
        for key in (self.rows[0] if self.rows else ()):
            t[f"metric.{key}"] = torch.tensor([r.get(key, float("nan")) for r in self.rows], dtype=torch.float64)
        meta = {"step": self.step, "seeds": self.seeds, "elapsed": self.elapsed,
                "opt_steps": self.opt.step_count, "metric_columns": list(self.rows[0]) if self.rows else []}
        return t, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        if meta.get("seeds") != self.seeds:
            raise ValueError(f"checkpoint holds seeds {meta.get('seeds')}, this run has {self.seeds}")
        dev = self.device
        for k in self.params:
            self.params[k].copy_(tensors[f"param.{k}"].to(dev))
            self.last_good[k].copy_(tensors[f"last_good.{k}"].to(dev))
        self.W0.copy_(tensors["W0"].to(dev))
        self.opt.load_state_tensors({k: v.to(dev) for k, v in tensors.items() if k.startswith("opt.")},
                                    int(meta["opt_steps"]))
        self.active = tensors["active"].bool().to(dev)
        self.good_since, self.stopped = tensors["good_since"].clone(), tensors["stopped"].clone()
        self.diverged = tensors["diverged"].bool()
        self.step, self.elapsed = int(meta["step"]), float(meta["elapsed"])
        self.snapshots = {int(k.split(".", 1)[1]): v.clone() for k, v in tensors.items() if k.startswith("snapshot.")}
        cols = meta["metric_columns"]
        self.rows = []
        if cols:
            n = tensors[f"metric.{cols[0]}"].shape[0]
            data = {c: tensors[f"metric.{c}"].tolist() for c in cols}
            for j in range(n):
                row = {c: data[c][j] for c in cols}
                row["step"], row["seed"] = int(row["step"]), int(row["seed"])
                self.rows.append(row)
