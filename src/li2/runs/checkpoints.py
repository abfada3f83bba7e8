"""Checkpoints of one run folder: which file a unit resumes from, whose run wrote it, and exact restore.

A unit is one stack of models trained together (`unit_name`): `<unit>-step<N>.safetensors` hold the
trainer's state before step N, `<unit>-final.safetensors` its state at the end (plus status, wall time
and stopped step per model). Each records the identity of the run that wrote it (`run_identity`): a
checkpoint is only ever restored into the very configuration, seeds and per-model hyperparameters
that wrote it (threads and device may change).
"""
from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from ..config import TrainConfig
from ..engine.trainer import Trainer
from ..store import StoreError, load_checkpoint, save_checkpoint
from .folder import RunError


def unit_name(seeds: list[int]) -> str:
    return f"seed{seeds[0]}" if len(seeds) == 1 else f"seeds{seeds[0]}-{seeds[-1]}x{len(seeds)}"


def final_path(ckpt_dir: Path, unit: str) -> Path:
    return ckpt_dir / f"{unit}-final.safetensors"


def step_path(ckpt_dir: Path, unit: str, step: int) -> Path:
    return ckpt_dir / f"{unit}-step{step:08d}.safetensors"


def latest_checkpoint(ckpt_dir: Path, unit: str) -> Path | None:
    """The final checkpoint of a unit if it has one, else its latest periodic one, else None."""
    if final_path(ckpt_dir, unit).exists():
        return final_path(ckpt_dir, unit)
    found = sorted(ckpt_dir.glob(f"{unit}-step*.safetensors"))
    return found[-1] if found else None


EXECUTION_FIELDS = ("threads", "device", "deterministic")   # may change between a run and its resume


def run_identity(config: TrainConfig, seeds: list[int], lr: list[float] | None = None,
                 weight_decay: list[float] | None = None) -> dict:
    """What a checkpoint must have been written by to be resumed here (EXECUTION_FIELDS may change)."""
    cfg = {k: v for k, v in config.model_dump(mode="json").items() if k not in EXECUTION_FIELDS}
    per_model = lambda vals, default: [float(v) for v in (vals if vals is not None else [default] * len(seeds))]
    return {"config": cfg, "seeds": [int(s) for s in seeds], "lr": per_model(lr, config.lr),
            "weight_decay": per_model(weight_decay, config.weight_decay)}


def verify(path: Path, identity: dict, shapes: dict[str, tuple[int, ...]] | None = None):
    """Load a checkpoint and check that it belongs to this very run (StoreError otherwise)."""
    tensors, meta = load_checkpoint(path, shapes)
    saved = _current_form(meta.get("run") if isinstance(meta.get("run"), dict) else {})
    if saved.get("seeds") != identity["seeds"]:
        raise StoreError(f"checkpoint {path} holds seeds {saved.get('seeds', meta.get('seeds'))}, "
                         f"this run has {identity['seeds']}")
    if saved != identity:
        theirs = saved.get("config") if isinstance(saved.get("config"), dict) else {}
        differ = [k for k, v in identity["config"].items() if theirs.get(k) != v]
        differ += [k for k in ("lr", "weight_decay") if saved.get(k) != identity[k] and k not in differ]
        raise StoreError(f"checkpoint {path} was written by another configuration "
                         f"(differs in {', '.join(differ) or 'its metadata'}); refusing to resume from it")
    return tensors, meta


def _current_form(identity: dict) -> dict:
    """A saved identity with TrainConfig's current fields: those added since it was written take their
    defaults, so checkpoints written before a new field still resume."""
    cfg = identity.get("config")
    try:
        full = TrainConfig.model_validate(cfg).model_dump(mode="json")
    except (ValidationError, TypeError, ValueError):
        return identity
    return {**identity, "config": {k: v for k, v in full.items() if k not in EXECUTION_FIELDS}}


def verify_units(config: TrainConfig, ckpt_dir: Path, units: list[list[int]]) -> None:
    """Check every checkpoint a resume would start from before anything is trained or written."""
    for seeds in units:
        path = latest_checkpoint(ckpt_dir, unit_name(seeds))
        if path is not None:
            try:
                verify(path, run_identity(config, seeds))
            except StoreError as e:
                raise RunError(str(e)) from None


def restore(path: Path, trainer: Trainer, identity: dict, final: bool = False) -> dict:
    """Verify a checkpoint against this run and load it into `trainer`; RunError on any mismatch."""
    shapes = {k: tuple(v.shape) for k, v in trainer.state_dict()[0].items() if not k.startswith("metric.")}
    try:
        tensors, meta = verify(path, identity, shapes)
        trainer.load_state_dict(tensors, meta)
        for key in ("status", "wall_seconds", "stopped_step") if final else ():
            if not isinstance(meta.get(key), list) or len(meta[key]) != len(trainer.seeds):
                raise KeyError(key)
    except StoreError as e:
        raise RunError(str(e)) from None
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
        raise RunError(f"checkpoint {path} does not fit this run ({e.__class__.__name__}: "
                       f"{str(e).splitlines()[0][:80] if str(e) else ''})") from None
    return meta


def save_step(ckpt_dir: Path, unit: str, identity: dict, step: int, tensors: dict, meta: dict) -> None:
    save_checkpoint(step_path(ckpt_dir, unit, step), tensors, {**meta, "run": identity})


def save_final(ckpt_dir: Path, unit: str, identity: dict, trainer: Trainer) -> None:
    result = trainer.result()
    tensors, meta = trainer.state_dict()
    meta.update(status=result.status, wall_seconds=result.wall_seconds, stopped_step=result.stopped_step,
                run=identity)
    save_checkpoint(final_path(ckpt_dir, unit), tensors, meta)
