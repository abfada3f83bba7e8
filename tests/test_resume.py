"""Exact resume after SIGKILL (issue 6): a run killed at random points and resumed with
`li2 train --resume DIR` ends bit-for-bit like a run that was never interrupted (CPU).

The kills are real: `li2 train` runs as a subprocess and is SIGKILLed when a chosen file of the
run folder appears (config.yaml, a periodic checkpoint, a final checkpoint) plus a seeded random
delay, so they land before the first checkpoint, between checkpoints and after the last one.
Each resume is itself killed at the next point, and the last one runs to the end.  Phases a kill
cannot hit reliably by timing are also rebuilt exactly from a finished run folder.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from li2.store import load_checkpoint

WALL = ("wall_seconds",)                 # wall-clock columns: the only thing allowed to differ
STEPS, EVERY, EVAL = 600, 50, 20
BASE = ["train", "--group", "Z7", "--width", "16", "--steps", str(STEPS), "--checkpoint-every", str(EVERY),
        "--eval-every", str(EVAL), "--seeds", "0,1", "--threads", "1", "--device", "cpu", "--quiet"]
EXECUTIONS = {  # the stacked run also records the theory diagnostics, which must survive a resume too
    "sequential": (["--execution", "sequential", "--diagnostics", "off"], ["seed0", "seed1"]),
    "stack": (["--execution", "stack", "--diagnostics", "basic"], ["seeds0-1x2"])}


def li2_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "li2.cli", *args]


def env() -> dict:
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    return e


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(li2_cmd(*args), capture_output=True, text=True, timeout=timeout, env=env())


from li2_cli import cli_in_process as cli_inprocess  # noqa: E402

# -- comparing run folders -------------------------------------------------------------------------------

def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return a.tobytes() == b.tobytes()      # NaN == NaN, and -0.0 != 0.0
    return bool((a == b).all()) if a.dtype.kind != "O" else list(a) == list(b)


def assert_same_metrics(ref: Path, got: Path) -> None:
    a, b = pd.read_parquet(ref / "metrics.parquet"), pd.read_parquet(got / "metrics.parquet")
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for col in a.columns:
        if col in WALL:
            continue
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if not same_bits(x, y):
            rows = [i for i in range(len(x)) if not same_bits(x[i:i + 1], y[i:i + 1])]
            pytest.fail(f"metrics column {col} differs in {len(rows)} rows, first at step {a.step.iloc[rows[0]]} "
                        f"seed {a.seed.iloc[rows[0]]}: {x[rows[0]]!r} vs {y[rows[0]]!r}")


def assert_same_summary(ref: Path, got: Path) -> None:
    def strip(path):
        s = json.loads((path / "summary.json").read_text())
        for m in s["models"]:
            for k in WALL:
                m.pop(k, None)
        return s
    assert strip(ref) == strip(got)


def assert_same_checkpoint(a: Path, b: Path) -> None:
    ta, ma = load_checkpoint(a)
    tb, mb = load_checkpoint(b)
    assert sorted(ta) == sorted(tb), a.name
    for k in ta:
        if k in {f"metric.{w}" for w in WALL}:
            continue
        assert ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape, (a.name, k)
        assert ta[k].numpy().tobytes() == tb[k].numpy().tobytes(), f"{a.name}: tensor {k} differs"
    for meta in (ma, mb):
        meta.pop("elapsed", None)
        for k in WALL:
            meta.pop(k, None)
    assert ma == mb, a.name


def assert_same_run(ref: Path, got: Path) -> None:
    assert (ref / "config.yaml").read_bytes() == (got / "config.yaml").read_bytes()
    assert_same_metrics(ref, got)
    assert_same_summary(ref, got)
    names = sorted(p.name for p in (ref / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (got / "checkpoints").iterdir())
    for name in names:   # final weights, and every periodic checkpoint's state too
        assert_same_checkpoint(ref / "checkpoints" / name, got / "checkpoints" / name)
    assert (got / "curves.png").exists() == (ref / "curves.png").exists()
    assert not list(got.rglob(".*.tmp-*")), "temporary files left behind"


# -- the uninterrupted reference runs -------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted CLI run per execution mode (built lazily, shared by the tests)."""
    root = tmp_path_factory.mktemp("reference")
    cache: dict[str, Path] = {}

    def get(mode: str) -> Path:
        if mode not in cache:
            out = root / mode
            r = run_cli(*BASE, *EXECUTIONS[mode][0], "--out", str(out))
            assert r.returncode == 0, r.stderr
            cache[mode] = out
        return cache[mode]
    return get


# -- real SIGKILLs -----------------------------------------------------------------------------------------

def kill_plan(units: list[str], n_kills: int, rng: random.Random) -> list[tuple[str, float]]:
    """n_kills (file that triggers the kill, delay after it appears), in run order.

    The first kill follows config.yaml at once (before the first checkpoint), the last one follows
    the last unit's final checkpoint at once (after it, before summary.json), the others follow
    random periodic checkpoints by a random fraction of a checkpoint interval.
    """
    periodic = [f"checkpoints/{u}-step{s:08d}.safetensors" for u in units for s in range(EVERY, STEPS, EVERY)]
    finals = {u: f"checkpoints/{u}-final.safetensors" for u in units}
    timeline = []
    for u in units:
        timeline += [p for p in periodic if p.startswith(f"checkpoints/{u}-")] + [finals[u]]
    middle = sorted(rng.sample(range(len(timeline) - 1), n_kills - 2))
    # at once: the first periodic checkpoint of these tiny runs comes a few milliseconds later
    plan = [("config.yaml", 0.0)]
    plan += [(timeline[i], rng.uniform(0.0, 0.05)) for i in middle]
    plan += [(finals[units[-1]], 0.0)]
    return plan


def phase_of(run_dir: Path, units: list[str]) -> str:
    ckpts = [p.name for p in (run_dir / "checkpoints").glob("*.safetensors")]
    if (run_dir / "summary.json").exists():
        return "after summary.json"
    if all(f"{u}-final.safetensors" in ckpts for u in units):
        return "after the final checkpoint, before summary.json"
    if ckpts:
        return "between checkpoints"
    if (run_dir / "config.yaml").exists():
        return "before the first checkpoint"
    return "before config.yaml"


def run_and_kill(args: list[str], run_dir: Path, trigger: str, delay: float, timeout: float = 300) -> int:
    """Start `li2 ARGS`; SIGKILL it `delay` s after run_dir/trigger appears. Returns the exit status."""
    target = run_dir / trigger
    proc = subprocess.Popen(li2_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env(),
                            start_new_session=True)
    start = time.monotonic()
    try:
        while not target.exists():
            if proc.poll() is not None:
                return proc.returncode
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{trigger} never appeared")
            time.sleep(0.0005)
        if delay:
            time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()


@pytest.mark.parametrize("mode,n_kills,seed", [("sequential", 5, 2024), ("stack", 3, 7)])
def test_sigkill_then_resume_is_bit_exact(tmp_path, reference, mode, n_kills, seed):
    ref = reference(mode)
    flags, units = EXECUTIONS[mode]
    out = tmp_path / "run"
    plan = kill_plan(units, n_kills, random.Random(seed))
    phases = []
    for i, (trigger, delay) in enumerate(plan):
        args = [*BASE, *flags, "--out", str(out)] if i == 0 else ["train", "--resume", str(out), "--quiet"]
        code = run_and_kill(args, out, trigger, delay)
        assert code == -signal.SIGKILL, f"kill {i} ({trigger} + {delay:.3f}s) did not land: exit {code}"
        phases.append(phase_of(out, units))
    print(f"{mode}: kills landed {phases}")
    r = run_cli("train", "--resume", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert_same_run(ref, out)
    assert phases[0] == "before the first checkpoint", phases
    assert "between checkpoints" in phases, phases
    # the window between the last final checkpoint and summary.json is milliseconds long; when a
    # kill misses it, test_resume_from_rebuilt_phases covers that phase deterministically
    assert phases[-1] in ("after the final checkpoint, before summary.json", "after summary.json"), phases


# -- phases rebuilt exactly from a finished run folder (in-process, fast) --------------------------------

def _drop(run_dir: Path, *patterns: str) -> None:
    for pattern in patterns:
        for p in run_dir.glob(pattern):
            p.unlink()


PHASES = {
    # killed after config.yaml, before any checkpoint
    "before-first-checkpoint": ("metrics.parquet", "summary.json", "curves.png", "checkpoints/*"),
    # killed between two periodic checkpoints of the second model
    "between-checkpoints": ("metrics.parquet", "summary.json", "curves.png", "checkpoints/seed1-final.*",
                            "checkpoints/seed1-step000003*", "checkpoints/seed1-step000004*",
                            "checkpoints/seed1-step000005*"),
    # first model finished, second not started
    "between-models": ("metrics.parquet", "summary.json", "curves.png", "checkpoints/seed1-*"),
    # every final checkpoint written, killed before metrics.parquet / summary.json
    "after-final-checkpoint": ("metrics.parquet", "summary.json", "curves.png"),
    # killed after summary.json, before the figure
    "before-figure": ("curves.png",),
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_resume_from_rebuilt_phases(tmp_path, reference, phase):
    ref = reference("sequential")
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    _drop(out, *PHASES[phase])
    code, _, err = cli_inprocess("train", "--resume", str(out), "--quiet")
    assert code == 0, err
    assert_same_run(ref, out)


def test_leftover_temporary_files_are_ignored(tmp_path, reference):
    """A writer killed mid-write leaves `.NAME.tmp-*`: readers never see it, the resume sweeps it away."""
    ref = reference("sequential")
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    _drop(out, "metrics.parquet", "summary.json", "curves.png", "checkpoints/seed1-final.*",
          "checkpoints/seed1-step0000055*")
    ckpts = out / "checkpoints"
    good = (ckpts / "seed1-step00000500.safetensors").read_bytes()
    leftovers = {
        out / ".summary.json.tmp-k1ll3d": b'{"models": [{"seed"',                  # torn JSON
        out / ".metrics.parquet.tmp-abc123": b"PAR1\x00\x01",                       # torn table
        ckpts / ".seed1-step00000550.safetensors.tmp-x9": good[: len(good) // 2],  # torn checkpoint
        ckpts / ".seed1-final.safetensors.tmp-zz": b"\x00" * 64,
    }
    for path, data in leftovers.items():
        path.write_bytes(data)
    code, _, err = cli_inprocess("train", "--resume", str(out), "--quiet")
    assert code == 0, err
    assert_same_run(ref, out)          # also asserts that no .*.tmp-* file is left


def test_finished_run_resumes_to_itself(tmp_path, reference):
    """--resume on a finished run rewrites the same results (it is idempotent)."""
    ref = reference("sequential")
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    code, _, err = cli_inprocess("train", "--resume", str(out), "--quiet")
    assert code == 0, err
    assert_same_run(ref, out)


# -- li2 sweep: the same, with the driver and its workers killed together ------------------------------------------

SWEEP_SPEC = {"base": {"group": "Z5", "width": 8, "steps": 600, "checkpoint_every": 40, "eval_every": 20,
                       "early_stop": False, "diagnostics": "off"},
              "grid": {"seed": [0, 1, 2]}}


def has_sweep() -> bool:
    import typer.main

    from li2 import cli
    return "sweep" in typer.main.get_command(cli.app).commands


def checkpoint_names(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.glob("runs/*/checkpoints/*.safetensors")}


def sweep_and_kill(args: list[str], out: Path, new_checkpoints: int, delay: float, timeout: float = 300) -> int:
    """Start `li2 sweep`; SIGKILL its whole process group (driver and workers, as a crash would) `delay` s
    after `new_checkpoints` checkpoint files it did not start with have appeared."""
    start_with = len(checkpoint_names(out))
    proc = subprocess.Popen(li2_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(),
                            start_new_session=True)
    start = time.monotonic()
    try:
        while len(checkpoint_names(out)) < start_with + new_checkpoints:
            if proc.poll() is not None:
                return proc.returncode
            if time.monotonic() - start > timeout:
                raise AssertionError("the sweep made no progress")
            time.sleep(0.002)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # workers of a driver that exited on its own
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not has_sweep(), reason="li2 sweep does not exist yet")
def test_sweep_sigkill_then_rerun_is_bit_exact(tmp_path):
    import yaml

    from li2.studies import WALL_COLUMNS
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump(SWEEP_SPEC))
    ref, out = tmp_path / "ref", tmp_path / "killed"
    args = lambda folder: ["sweep", str(spec), "--out", str(folder), "--workers", "1", "--quiet"]
    r = run_cli(*args(ref))
    assert r.returncode == 0, r.stderr
    rng = random.Random(66)
    landed = []
    for i in range(5):
        k, delay = rng.randint(2, 8), rng.uniform(0.0, 0.05)
        code = sweep_and_kill(args(out), out, k, delay)
        assert code == -signal.SIGKILL, f"kill {i} (after {k} new checkpoints + {delay:.3f}s) did not land: exit {code}"
        landed.append(len(checkpoint_names(out)))
    print(f"sweep: checkpoint files present after each kill: {landed}")
    r = run_cli(*args(out))
    assert r.returncode == 0, r.stderr
    a, b = pd.read_parquet(ref / "results.parquet"), pd.read_parquet(out / "results.parquet")
    assert len(a) == 3
    pd.testing.assert_frame_equal(a.drop(columns=list(WALL_COLUMNS)), b.drop(columns=list(WALL_COLUMNS)),
                                  check_exact=True)
    runs = sorted(p.name for p in (ref / "runs").iterdir())
    assert runs == sorted(p.name for p in (out / "runs").iterdir())
    for run in runs:
        assert_same_run(ref / "runs" / run, out / "runs" / run)
    assert not list(out.rglob(".*.tmp-*"))
