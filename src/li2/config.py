"""The training configuration: one strictly validated object, saved fully resolved beside every run,
and the task it names (`resolve_group`, `build_task`).

Every field carries its help text (`Field(description=…)`): the `li2 train` options are generated
from this class, so a new field is a new flag with no other declaration.

Settings that can run but cannot show what the theory describes (a training set smaller than the
group, fewer hidden nodes than the group has frequencies) are warned about with `Li2Warning`, never
refused: such runs are legitimate experiments (docs/theory.md#memorisation--theorem-5).
"""
from __future__ import annotations

import difflib
import re
import warnings
from typing import TYPE_CHECKING, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .algebra.groups import Group, get_group
from .algebra.tables import expression_task, load_group_table
from .task import DEFAULT_CENTRING, REFERENCE_C, Centring, critical_ratio, make_task, train_size

if TYPE_CHECKING:
    from .task import Task

Activation = Literal["sqr", "relu", "silu", "relusqr", "gelu"]
Model = Literal["mlp2", "mlp", "transformer"]

# Fields a config leaves unset take its --model's default here (`TrainConfig._model_defaults`), so the
# config, and config.yaml, always hold resolved values. The fields' own defaults are mlp2's.
#   mlp2         the two-layer network of the theory (x², MSE on class-centred targets, Adam, coupled L2)
#   mlp          L hidden layers, ReLU (the paper's deeper nets, §6 and Fig 17: ReLU, MSE, Adam 5e-3, η 1e-4)
#   transformer  one layer, Nanda et al. (2023): ReLU MLP, cross-entropy, AdamW lr 1e-3, η 1, β₂ 0.98,
#                d_model 128, 4 heads, d_mlp 512
MODEL_DEFAULTS: dict[str, dict] = {
    "mlp2": {"activation": "sqr", "loss": "mse", "optimizer": "adam", "lr": 2e-3, "weight_decay": 5e-4,
             "beta2": 0.999},
    "mlp": {"activation": "relu", "loss": "mse", "optimizer": "adam", "lr": 5e-3, "weight_decay": 1e-4,
            "beta2": 0.999, "depth": 2, "residual": False},
    "transformer": {"activation": "relu", "loss": "ce", "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1.0,
                    "beta2": 0.98, "d_model": 128, "heads": 4, "d_mlp": 512},
}
MLP_ONLY = ("depth", "residual")
TRANSFORMER_ONLY = ("d_model", "heads", "d_mlp")


class Li2Warning(UserWarning):
    """A setting li2 runs but the theory says will not show what it describes (the CLI prints
    `warning: …`; the tests turn it into an error unless a test expects it)."""


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """" (did you mean 'width'?)" for the closest known name, or "": one wording for every unknown key."""
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_seeds(text: str | int | list) -> list[int]:
    """'0-7' → [0..7]; '0,3,5' → [0, 3, 5]; '4' → [4]; lists pass through."""
    whole = lambda s: type(s) is int or (isinstance(s, str) and re.fullmatch(r"\s*\d+\s*", s) is not None)
    if isinstance(text, bool) or (isinstance(text, list) and not all(whole(s) for s in text)):
        raise ValueError("seeds must be whole numbers: e.g. 0-7, 0,3,5 or a list [0, 3, 5]")
    if isinstance(text, int):
        return [text]
    if isinstance(text, list):
        if len(set(int(s) for s in text)) != len(text):
            raise ValueError("the seeds repeat a seed")
        return [int(s) for s in text]
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo or hi - lo > 100_000:
                raise ValueError(f"bad seed range '{part}': use LO-HI with LO <= HI")
            out.extend(range(lo, hi + 1))
        elif re.fullmatch(r"\d+", part):
            out.append(int(part))
        else:
            raise ValueError(f"bad seeds '{text}': use e.g. 0-7 or 0,3,5")
    if len(set(out)) != len(out):
        raise ValueError(f"seeds '{text}' repeat a seed")
    return out


class TrainConfig(BaseModel):
    """Everything that defines a training run (a stack of models differing only by seed)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    # task
    group: str = Field("Z71", description="group: Z71, 71, Z2xZ3xZ4, S4, D7, … (li2 groups list)")
    group_table: str | None = Field(None, description="Cayley table file (JSON or CSV) instead of --group")
    expression: str | None = Field(None, description="operation x∘y = EXPR mod --modulus (not a group)")
    modulus: int | None = Field(None, description="modulus for --expression")
    operands: int = Field(2, ge=2, le=4, description="operands per sample (M^k samples)")
    train_ratio: float | str = Field(0.4, description="training fraction p in (0, 1], or critical / critical:C "
                                                      "(p = C·ln M / M, C = 2.7482)")
    seeds: list[int] = Field(default_factory=lambda: [0], description="seeds, e.g. 0-7 or 0,3,5: each its own "
                                                                      "init and split")
    # model
    model: Model = Field("mlp2", description="mlp2 (the two-layer network of the theory), mlp (--depth hidden "
                                             "layers) or transformer (one layer, Nanda et al.); options left unset "
                                             "take the model's defaults (docs/usage.md#models)")
    width: int = Field(1024, ge=1, le=1_000_000, description="hidden nodes K (every hidden layer of mlp2 and mlp)")
    depth: int | None = Field(None, ge=2, le=8, description="mlp: hidden layers L (default 2)")
    residual: bool | None = Field(None, description="mlp: residual hidden layers F_l = σ(F_{l−1} + F_{l−1}U_l) "
                                                    "(the paper's §6; default off: F_l = σ(F_{l−1}U_l))")
    d_model: int | None = Field(None, ge=1, le=65536, description="transformer: residual width (default 128)")
    heads: int | None = Field(None, ge=1, le=256, description="transformer: attention heads, each d_model/heads "
                                                              "wide (default 4)")
    d_mlp: int | None = Field(None, ge=1, le=1_000_000, description="transformer: MLP width (default 512)")
    activation: Activation = Field("sqr", description="hidden activation σ (default per --model: mlp2 sqr, "
                                                      "mlp and transformer relu)")
    loss: Literal["mse", "ce"] = Field("mse", description="mse (outputs centred over classes, as the reference "
                                                         "code) or ce (cross-entropy); default per --model: "
                                                         "transformer ce, else mse")
    init_scale: float = Field(1.0, ge=0, description="W init: uniform ±s/√fan_in")
    top_init_scale: float = Field(1.0, ge=0, description="V init multiplier (0 = zero-initialised top layer)")
    layers: int = Field(0, ge=0, le=8, description="mlp2: extra residual hidden layers x ← σ(x + x U)")
    top_layer: Literal["learned", "ridge"] = Field("learned", description="learned, or ridge: V = the ridge "
                                                                         "solution at every step (Stage-I limit)")
    # optimiser
    optimizer: Literal["sgd", "adam", "adamw", "muon"] = Field(
        "adam", description="sgd (momentum), adam (coupled L2, as the reference), adamw, muon (on W; Adam on V); "
                            "default per --model: transformer adamw, else adam")
    lr: float = Field(2e-3, gt=0, le=100, description="learning rate (default per --model: mlp2 2e-3, mlp 5e-3, "
                                                      "transformer 1e-3)")
    weight_decay: float = Field(5e-4, ge=0, le=100, description="weight decay η (default per --model: mlp2 5e-4, "
                                                                "mlp 1e-4, transformer 1)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam β₁")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam β₂ (default per --model: transformer 0.98, "
                                                        "else 0.999)")
    eps: float = Field(1e-8, gt=0, description="Adam ε")
    muon_lr: float | None = Field(None, gt=0, description="Muon's learning rate on W (default: --lr)")
    # schedule
    steps: int = Field(3000, ge=1, le=10_000_000, description="step budget")
    eval_every: int | None = Field(None, ge=1, description="evaluate every N steps (default: every 5 steps to "
                                                          "200, 25 to 2000, then 100)")
    early_stop: bool = Field(True, description="stop a model once test acc ≥ --grok-threshold held for "
                                               "--stop-margin steps")
    stop_margin: int = Field(100, ge=0, description="steps test accuracy must hold before an early stop")
    grok_threshold: float = Field(0.95, gt=0, le=1, description="test accuracy that counts as generalised")
    test_subset: int = Field(4096, ge=0, description="evaluate test accuracy during training on a fixed random "
                                                     "subset of at most this many test samples per model, chosen by "
                                                     "its seed (0 = whole test set); a model's last row (end of "
                                                     "budget or early stop) always uses the whole test set")
    checkpoint_every: int = Field(500, ge=0, description="periodic checkpoint interval (0 = final only)")
    diagnostics: Literal["off", "basic", "full"] = Field("basic", description="theory diagnostics at each "
                                                                            "evaluation (full adds FFᵀ's distance "
                                                                            "from aI + b11ᵀ)")
    centring: Centring = Field(DEFAULT_CENTRING, description="Ỹ, F̃ of the theory diagnostics and li2 energy: "
                                                            "samples (the paper: centred over the training rows) "
                                                            "or classes (the reference loss; training always "
                                                            "uses it)")
    # execution
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when present, else cpu")
    execution: Literal["auto", "stack", "sequential"] = Field(
        "auto", description="stack (one model axis: pays on a GPU) or sequential (CPU default); auto picks")
    threads: int | None = Field(None, ge=1, le=1024, description="torch CPU threads (default: torch's)")
    blas: Literal["auto", "numpy", "torch"] = Field("auto", description="GEMM library of the CPU step: numpy "
                                                                       "(OpenBLAS) or torch (MKL); auto times both "
                                                                       "once and keeps the faster (CUDA: torch)")
    dtype: Literal["float32", "float64"] = Field("float32", description="floating-point precision")
    deterministic: bool = Field(False, description="CUDA: torch deterministic algorithms (index_add_ / "
                                                   "scatter_add_ without atomics; steps are slower, see the "
                                                   "README); CPU runs are deterministic already")

    @model_validator(mode="before")
    @classmethod
    def _model_defaults(cls, data):
        """Fields absent from the input take the --model's defaults (MODEL_DEFAULTS); options of another
        model must stay unset (an explicit width must not be silently ignored by the transformer)."""
        if not isinstance(data, dict):
            return data
        model = data.get("model", "mlp2")
        if model not in MODEL_DEFAULTS:
            return data    # the field's own validation names the bad value
        for key, value in MODEL_DEFAULTS[model].items():
            if data.get(key) is None:
                data = {**data, key: value}
        flag = lambda k: f"--{k.replace('_', '-')}"
        foreign = [k for k in (*MLP_ONLY, *TRANSFORMER_ONLY)
                   if data.get(k) is not None and k not in MODEL_DEFAULTS[model]]
        if model == "transformer" and data.get("width") not in (None, 1024):
            foreign.append("width")
        if model != "mlp2" and data.get("layers") not in (None, 0):
            foreign.append("layers")
        if foreign:
            owner = {"width": "the MLPs", "layers": "--model mlp2 (--model mlp has --depth)"}
            k = foreign[0]
            owner = owner.get(k, "--model mlp" if k in MLP_ONLY else "--model transformer")
            raise ValueError(f"{flag(k)} applies to {owner}, not to --model {model}")
        return data

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v):
        seeds = parse_seeds(v)
        if not seeds:
            raise ValueError("need at least one seed")
        if any(s < 0 for s in seeds):
            raise ValueError("seeds must be >= 0")
        if any(s >= 2**32 for s in seeds):
            raise ValueError("seeds must be < 2^32")
        return seeds

    @field_validator("train_ratio", mode="before")
    @classmethod
    def _ratio(cls, v):
        if isinstance(v, str):
            s = v.strip()
            if s == "critical" or re.fullmatch(r"critical:[0-9]*\.?[0-9]+(e-?[0-9]+)?", s):
                return s
            try:
                v = float(s)
            except ValueError:
                raise ValueError(f"train ratio '{v}' is not a number in (0, 1] nor 'critical[:C]'") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError("train ratio must be a number in (0, 1] or 'critical[:C]'")
        if not (0 < float(v) <= 1):
            raise ValueError(f"train ratio must be in (0, 1], got {v}")
        return float(v)

    @model_validator(mode="after")
    def _task_source(self):
        if self.expression is not None and self.modulus is None:
            raise ValueError("--expression needs --modulus")
        if self.modulus is not None and self.expression is None:
            raise ValueError("--modulus only makes sense with --expression")
        if self.expression is not None and self.group_table is not None:
            raise ValueError("give either --group-table or --expression, not both")
        if self.model == "transformer":
            if self.d_model % self.heads:
                raise ValueError(f"--d-model {self.d_model} is not a multiple of --heads {self.heads}")
            if self.optimizer == "muon":
                raise ValueError("--optimizer muon orthogonalises W of the MLPs; the transformer has no W")
            if self.top_layer == "ridge":
                raise ValueError("--top-layer ridge needs an MLP (V on top of hidden features), not the transformer")
        return self

    def resolved_ratio(self, order: int) -> float:
        """The numeric training ratio for a group of this order ('critical:C' → C·ln M / M)."""
        r = self.train_ratio
        if isinstance(r, float):
            return r
        c = REFERENCE_C if r == "critical" else float(r.split(":", 1)[1])
        p = critical_ratio(order, c)
        if not (0 < p <= 1):
            raise ValueError(f"critical ratio {c}·ln M/M = {p:.3g} is outside (0, 1] for M = {order}")
        return p

    def eval_steps(self) -> list[int]:
        """Steps at which models are evaluated (0 and the last step always included)."""
        if self.eval_every is not None:
            steps = list(range(0, self.steps, self.eval_every))
        else:
            steps = [s for s in range(self.steps) if
                     (s <= 200 and s % 5 == 0) or (s <= 2000 and s % 25 == 0) or s % 100 == 0]
        return steps + [self.steps]


# -- the task a config names ----------------------------------------------------------------------

def resolve_group(config: TrainConfig) -> Group:
    """The group (or operation table) of --group, --group-table or --expression/--modulus."""
    if config.expression is not None:
        return expression_task(config.expression, config.modulus)
    if config.group_table is not None:
        return load_group_table(config.group_table)
    return get_group(config.group)


def capacity_warnings(config: TrainConfig, order: int, num_samples: int, ratio: float) -> list[str]:
    """What makes this run unable to show feature learning, in words (empty when nothing does).

    Fewer training samples than the group's order M cannot pin down any irrep (every sample is then
    memorised); fewer than (M−1)/2 hidden nodes cannot hold one node per frequency of Z_M."""
    found = []
    n = train_size(num_samples, ratio)
    if n < order:
        found.append(f"the training set has {n} sample{'s' if n != 1 else ''} (p = {ratio:.3g} of {num_samples}), "
                     f"fewer than the group's order M = {order}: expect memorisation, not features "
                     f"(raise --train-ratio)")
    if config.width < (order - 1) / 2:
        found.append(f"--width {config.width} is below (M−1)/2 = {(order - 1) / 2:g} hidden nodes: too few to "
                     f"cover every frequency of a group of order {order}")
    return found


def warn_capacity(config: TrainConfig, task: Task, ratio: float) -> None:
    """Warn (Li2Warning) about each of the config's `capacity_warnings`. Training calls it once the
    run is set up, so a refused run prints its one error line and nothing else."""
    for text in capacity_warnings(config, task.order, task.num_samples, ratio):
        warnings.warn(text, Li2Warning, stacklevel=3)


def build_task(config: TrainConfig) -> tuple[Task, float]:
    """(all samples of the config's task, the numeric training ratio)."""
    group = resolve_group(config)
    return make_task(group, config.operands), config.resolved_ratio(group.order)
