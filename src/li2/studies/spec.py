"""Sweep specs: a YAML grid of training runs, expanded and checked before anything runs.

Spec format (YAML, read with `yaml.safe_load`; every key is checked before anything runs):

    name: phase-quick                 # optional label
    base:                             # options shared by every run: any TrainConfig field, or `seed`
      width: 512
      steps: 2000
    grid:                             # options that vary; the runs are the cartesian product,
      group: [Z23, Z31]               #   first key slowest, in the order written
      train_ratio: {critical_multiple: [0.5, 1.0, 2.0]}
      seed: {range: [0, 3]}
    figures: false                    # per-run curves.png (default false: it costs more than a small run)

A grid entry is a list of values or a mapping with exactly one generator:

    {range: [start, stop]} or [start, stop, step]   integers, stop excluded (as Python's range)
    {linspace: [a, b, n]}             n evenly spaced numbers from a to b, both included
    {geomspace: [a, b, n]}            n numbers from a to b, both included, evenly spaced in log
    {logspace: [a, b, n]}             10^a … 10^b (numpy's convention: a and b are exponents)
    {critical_multiple: VALUES, c: C} train_ratio only: p = m·C·ln M / M for each multiple m, per group,
                                      capped at 1 (C defaults to 2.7482; VALUES is a list or a generator)

Each run trains one seed (`seed`, default 0, stands for TrainConfig's `seeds`) with `threads: 1`
unless base sets threads (the local executor runs one single-threaded run per core). Points that
resolve to the same configuration (capping at p = 1 can do that) are trained once.

Run ids (`run_id`): the first 12 hex digits of the sha256 of the fields of the run's resolved
TrainConfig that differ from the defaults, plus a schema version, so ids survive grid edits and new
config fields. (li2.studies.sweep runs them.)
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, StrictStr, ValidationError

from ..config import TrainConfig, did_you_mean, resolve_group
from ..store import StoreError, parse_yaml, read_text
from ..task import REFERENCE_C, critical_ratio

GENERATORS = ("range", "linspace", "geomspace", "logspace", "critical_multiple")
MAX_RUNS = 100_000


class SweepError(ValueError):
    """A sweep spec or folder is unusable; the message names the field and is one line."""


# -- spec ----------------------------------------------------------------------------------------------

class SweepSpec(BaseModel):
    """The parsed YAML; `expand` turns it into runs and does the semantic checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr | None = None
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Any] = Field(default_factory=dict)
    figures: StrictBool = False
    _source: str | None = PrivateAttr(None)   # the YAML text as written, for sweep.yaml

    @classmethod
    def parse(cls, obj: Any) -> "SweepSpec":
        if obj is None:
            raise SweepError("the sweep spec is empty: give at least a grid")
        if not isinstance(obj, dict):
            raise SweepError("the sweep spec must be a mapping with keys name, base, grid, figures")
        try:
            spec = cls.model_validate(obj)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ()))
            if err.get("type") == "extra_forbidden":
                raise SweepError(f"{where}: unknown key '{where}' (a spec has name, base, grid, figures)") from None
            raise SweepError(f"{where}: {err.get('msg', 'invalid value')}") from None
        expand(spec)  # validate everything up front
        return spec

    @classmethod
    def from_yaml(cls, text: str, source: str = "the sweep spec") -> "SweepSpec":
        try:
            obj = parse_yaml(text, source)
        except StoreError as e:
            raise SweepError(str(e)) from None
        spec = cls.parse(obj)
        spec._source = text
        return spec

    @classmethod
    def load(cls, path: str | Path) -> "SweepSpec":
        try:
            text = read_text(path)
        except StoreError as e:
            raise SweepError(f"sweep spec {e}") from None
        return cls.from_yaml(text, str(path))

    def to_yaml(self) -> str:
        return self._source if self._source is not None else yaml.safe_dump(self.model_dump(), sort_keys=False)


@dataclass(frozen=True)
class CriticalMultiple:
    """A train_ratio given as m·c·ln M / M; resolved once the run's group order is known."""

    multiple: float
    c: float


@dataclass(frozen=True)
class Run:
    index: int                # position in grid order
    run_id: str
    config: TrainConfig
    order: int
    ratio: float              # resolved train ratio


def _tidy(x: float) -> float:
    # 12 significant digits: 0.1·3 gives 0.3, not 0.30000000000000004, in configs and run ids
    return float(f"{float(x):.12g}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _generate(where: str, key: str, gen: dict) -> list:
    kinds = [k for k in gen if k in GENERATORS]
    for k in gen:
        if k not in GENERATORS and not (k == "c" and "critical_multiple" in gen):
            raise SweepError(f"{where}: unknown generator '{k}' (use one of {', '.join(GENERATORS)})")
    if len(kinds) != 1:
        raise SweepError(f"{where}: give exactly one generator ({', '.join(GENERATORS)}), got {len(kinds)}")
    kind = kinds[0]
    args = gen[kind]
    here = f"{where}.{kind}"
    if kind == "critical_multiple":
        if key != "train_ratio":
            raise SweepError(f"{here}: only train_ratio can be given as multiples of the critical ratio")
        c = gen.get("c", REFERENCE_C)
        if not _is_number(c) or c <= 0:
            raise SweepError(f"{where}.c: must be a positive number, got {c!r}")
        mults = _axis_values(here, key, args, nested=True)
        for m in mults:
            if not _is_number(m) or m <= 0:
                raise SweepError(f"{here}: multiples must be positive numbers, got {m!r}")
        return [CriticalMultiple(_tidy(m), float(c)) for m in mults]
    if not isinstance(args, list):
        raise SweepError(f"{here}: give a list, e.g. {{{kind}: [0, 1, 5]}}")
    if kind == "range":
        if len(args) not in (2, 3) or not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            raise SweepError(f"{here}: give [start, stop] or [start, stop, step] as integers, got {args}")
        if len(args) == 3 and args[2] == 0:
            raise SweepError(f"{here}: step must not be 0")
        if len(range(*args)) > MAX_RUNS:   # check before building the list: [0, 10**12] must not eat the RAM
            raise SweepError(f"{here}: range {args} has {len(range(*args))} values, more than {MAX_RUNS}")
        values = list(range(*args))
        if not values:
            raise SweepError(f"{here}: range {args} is empty (stop is excluded)")
        return values
    if len(args) != 3 or not (_is_number(args[0]) and _is_number(args[1])) \
            or not isinstance(args[2], int) or isinstance(args[2], bool):
        raise SweepError(f"{here}: give [a, b, n] with numbers a, b and an integer n, got {args}")
    a, b, n = args
    if not 1 <= n <= MAX_RUNS:
        raise SweepError(f"{here}: n must be between 1 and {MAX_RUNS}, got {n}")
    if kind == "geomspace":
        if a <= 0 or b <= 0:
            raise SweepError(f"{here}: a and b must be positive, got {a}, {b}")
        values = np.geomspace(a, b, n)
    elif kind == "logspace":
        if max(a, b) > 300:
            raise SweepError(f"{here}: exponents {a}, {b} are too large (10^a overflows)")
        values = np.logspace(a, b, n)
    else:
        values = np.linspace(a, b, n)
    return [_tidy(v) for v in values]


def _axis_values(where: str, key: str, value, nested: bool = False) -> list:
    """The values one grid entry takes (generators expanded), checked for shape and repeats."""
    if isinstance(value, list):
        values = value
        if not values:
            raise SweepError(f"{where}: empty list of values")
    elif isinstance(value, dict):
        values = _generate(where, key, value)
    else:
        hint = "" if nested else "; a single value belongs in base"
        raise SweepError(f"{where}: give a list of values or a generator mapping "
                         f"({', '.join(GENERATORS)}), got {value!r}{hint}")
    seen = set()
    for v in values:
        if isinstance(v, (list, dict)):
            raise SweepError(f"{where}: values must be single numbers, strings or booleans, got {v!r}")
        tag = (type(v).__name__, repr(v))
        if tag in seen:
            raise SweepError(f"{where}: value {getattr(v, 'multiple', v)!r} appears twice")
        seen.add(tag)
    return values


def _check_key(key: str, where: str) -> None:
    if not isinstance(key, str):
        raise SweepError(f"{where}: option names must be strings, got {key!r}")
    if key == "seeds":
        raise SweepError(f"{where}.seeds: a sweep run trains one seed; vary `seed` in the grid instead")
    if key != "seed" and key not in TrainConfig.model_fields:
        hint = did_you_mean(key, [*TrainConfig.model_fields, "seed"])
        raise SweepError(f"{where}.{key}: unknown option '{key}'{hint}")


def _config_error(e: ValidationError, point: dict, grid_keys: set[str]) -> SweepError:
    err = e.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
    field = "seed" if loc[:1] == ["seeds"] else (loc[0] if loc else "")
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    if not field:
        return SweepError(f"grid point {point}: {msg}")
    if field in grid_keys:
        return SweepError(f"grid.{field}: value {point[field]!r}: {msg}")
    return SweepError(f"base.{field}: {msg}")


def expand(spec: SweepSpec) -> list[Run]:
    """Every run of the sweep in grid order; SweepError naming the field for anything invalid."""
    for key in spec.base:
        _check_key(key, "base")
    if not spec.grid:
        raise SweepError("grid: empty; vary at least one option (a single run is `li2 train`)")
    axes = []
    for key, value in spec.grid.items():
        _check_key(key, "grid")
        if key in spec.base:
            raise SweepError(f"grid.{key}: also set in base; set it in one place")
        axes.append(_axis_values(f"grid.{key}", key, value))
    total = math.prod(len(v) for v in axes)
    if total > MAX_RUNS:
        raise SweepError(f"grid: {total} runs is more than {MAX_RUNS}; split the sweep")
    keys = list(spec.grid)
    grid_keys = set(keys)
    orders: dict[tuple, int] = {}
    runs: list[Run] = []
    seen: set[str] = set()
    for combo in itertools.product(*axes):
        point = dict(zip(keys, combo))
        options = {**spec.base, **point}
        seed = options.pop("seed", 0)
        multiple = options.get("train_ratio")
        if isinstance(multiple, CriticalMultiple):
            options.pop("train_ratio")
        options.setdefault("threads", 1)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            where = "grid" if "seed" in grid_keys else "base"
            raise SweepError(f"{where}.seed: must be an integer >= 0, got {seed!r}")
        try:
            config = TrainConfig(**options, seeds=[seed])
        except ValidationError as e:
            raise _config_error(e, point, grid_keys) from None
        task_key = (config.group, config.group_table, config.expression, config.modulus)
        if task_key not in orders:
            try:
                orders[task_key] = resolve_group(config).order
            except ValueError as e:
                field = next((k for k in ("group_table", "expression", "modulus", "group")
                              if options.get(k) is not None), "group")
                where = "grid" if field in grid_keys else "base"
                raise SweepError(f"{where}.{field}: {' '.join(str(e).split())}") from None
        order = orders[task_key]
        try:
            if isinstance(multiple, CriticalMultiple):
                ratio = min(1.0, _tidy(multiple.multiple * critical_ratio(order, multiple.c)))
                config.train_ratio = ratio  # validated on assignment
            ratio = config.resolved_ratio(order)
        except (ValueError, ValidationError) as e:
            where = "grid" if "train_ratio" in grid_keys else "base"
            text = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
            raise SweepError(f"{where}.train_ratio: {text} (group of order {order})") from None
        rid = run_id(config)
        if rid not in seen:
            seen.add(rid)
            runs.append(Run(len(runs), rid, config, order, ratio))
    return runs


RUN_ID_SCHEMA = 2   # 1: the whole config was hashed (ids changed whenever a field was added)


def run_id(config: TrainConfig) -> str:
    """12 hex digits of the sha256 of the fields that differ from TrainConfig's defaults (sorted-key
    JSON) and RUN_ID_SCHEMA: a field added later with a default leaves every existing id unchanged."""
    values = config.model_dump(mode="json")
    defaults = TrainConfig().model_dump(mode="json")
    changed = {k: v for k, v in values.items() if v != defaults.get(k, _MISSING)}
    text = json.dumps({"schema": RUN_ID_SCHEMA, "config": changed}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_MISSING = object()
