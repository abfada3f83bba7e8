"""Sweeps: spec validation, expansion, skip/resume after SIGKILL, failures, the Ray executor, `li2 phase`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from li2.store import read_parquet
from li2.studies import WALL_COLUMNS, SweepError, SweepSpec, expand, run_sweep
from li2.task import critical_ratio

LI2 = str(Path(sys.executable).parent / "li2")

# Six runs of ~1-2 s each: long enough to kill a sweep halfway, with checkpoints every 100 steps
# so a killed run has something to resume from.
SLOW = {"base": {"width": 32, "steps": 1500, "early_stop": False, "checkpoint_every": 100, "diagnostics": "off"},
        "grid": {"group": ["Z11", "Z13"], "seed": {"range": [0, 3]}}}


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()   # a zombie has exited
    except OSError:
        return False


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.drop(columns=list(WALL_COLUMNS)), b.drop(columns=list(WALL_COLUMNS)))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """SLOW swept once, uninterrupted, with the local executor."""
    out = tmp_path_factory.mktemp("ref")
    table = run_sweep(SLOW, out, workers=2)
    return out, table


# -- spec and expansion (no training) -------------------------------------------------------------------

def test_expand_grid_order_generators_and_critical_multiples():
    spec = SweepSpec.from_yaml("""
base: {width: 16, steps: 30}
grid:
  group: [Z5, Z23]
  train_ratio: {critical_multiple: [0.5, 1.0, 2.0]}
  seed: {range: [0, 2]}
""")
    runs = expand(spec)
    # Z5: 2·p_ref = 1.77 is capped at 1, so 6 distinct points there; Z23: 6
    assert len(runs) == 12
    assert [r.index for r in runs] == list(range(12))
    assert [r.config.group for r in runs] == ["Z5"] * 6 + ["Z23"] * 6           # first key slowest
    assert [r.config.seeds for r in runs[:2]] == [[0], [1]]
    z23 = [r for r in runs if r.order == 23]
    assert z23[2].ratio == pytest.approx(critical_ratio(23), rel=1e-10)
    assert z23[4].ratio == pytest.approx(2 * critical_ratio(23), rel=1e-10)
    assert max(r.ratio for r in runs) == 1.0
    assert all(r.config.threads == 1 for r in runs)
    assert len({r.run_id for r in runs}) == 12
    assert [r.run_id for r in expand(spec)] == [r.run_id for r in runs]          # ids are stable

    values = lambda g: [getattr(r.config, "lr") for r in expand(SweepSpec.parse({"grid": {"lr": g}}))]  # noqa: E731
    assert values({"linspace": [0.001, 0.003, 3]}) == [0.001, 0.002, 0.003]
    assert values({"geomspace": [0.001, 0.1, 3]}) == [0.001, 0.01, 0.1]
    assert values({"logspace": [-3, -1, 3]}) == [0.001, 0.01, 0.1]


@pytest.mark.parametrize("text, message", [
    ("grid: {widht: [16, 32]}", "grid.widht: unknown option 'widht'"),
    ("base: {lr: fast}\ngrid: {seed: [0, 1]}", "base.lr:"),
    ("grid: {width: [16, big]}", "grid.width: value 'big'"),
    ("grid: {}", "grid: empty"),
    ("base: {width: 16}", "grid: empty"),
    ("grid: {width: []}", "grid.width: empty list"),
    ("grid: {width: 16}", "grid.width: give a list"),
    ("grid: {seed: {range: [3, 1]}}", "grid.seed.range: range [3, 1] is empty"),
    ("grid: {seed: {range: [0, 1.5]}}", "grid.seed.range: give [start, stop]"),
    ("grid: {lr: {linspace: [0.1, 0.2]}}", "grid.lr.linspace: give [a, b, n]"),
    ("grid: {lr: {geomspace: [0, 1, 3]}}", "grid.lr.geomspace: a and b must be positive"),
    ("grid: {lr: {spread: [1, 2]}}", "grid.lr: unknown generator 'spread'"),
    ("grid: {width: {critical_multiple: [1]}}", "only train_ratio"),
    ("grid: {train_ratio: [0.5, 1.5]}", "grid.train_ratio: value 1.5"),
    ("grid: {seed: [0, 0]}", "grid.seed: value 0 appears twice"),
    ("grid: {seed: [-1]}", "grid.seed: must be an integer >= 0"),
    ("base: {seeds: [0, 1]}\ngrid: {width: [16]}", "base.seeds:"),
    ("base: {width: 16}\ngrid: {width: [16, 32]}", "grid.width: also set in base"),
    ("grid: {group: [Z5, Q9]}", "grid.group:"),
    ("grid: {seed: [0]}\nworkers: 3", "workers: unknown key"),
    ("grid: [width, 16]", "grid:"),
    ("grid: {seed: [0]\n", "not valid YAML"),
])
def test_spec_errors_name_the_field(text, message):
    with pytest.raises(SweepError) as e:
        SweepSpec.from_yaml(text)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_bad_spec_exits_2_with_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("base: {width: 16}\ngrid: {widht: [16, 32]}\n")
    p = subprocess.run([LI2, "sweep", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip() == "error: grid.widht: unknown option 'widht' (did you mean 'width'?)"
    assert not (tmp_path / "out").exists()


# -- running -------------------------------------------------------------------------------------------

def test_rerun_trains_nothing_and_gives_the_same_table(reference):
    out, table = reference
    assert len(table) == 6 and (table.status == "completed").all()
    assert table.error.isna().all() and (table.steps_trained == 1500).all()
    assert set(table.columns) >= {"run_id", "seed", "group", "order", "train_ratio", "width", "final_test_acc",
                                  "grok_step", "status", "error", "wall_seconds", "steps_budget"}
    _same(read_parquet(out / "results.parquet"), table)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/summary.json")}
    calls = []
    again = run_sweep(SLOW, out, workers=2, progress=calls.append)
    assert calls == []                                                          # nothing trained
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    _same(again, table)
    assert again.wall_seconds.equals(table.wall_seconds)                        # the very same rows


def test_out_dir_with_another_sweep_is_refused(reference):
    out, _ = reference
    other = {**SLOW, "grid": {**SLOW["grid"], "seed": [7]}}
    with pytest.raises(SweepError, match="holds a different sweep"):
        run_sweep(other, out)


def test_sigkill_halfway_then_rerun_completes_only_the_missing_runs(reference, tmp_path):
    _, ref_table = reference
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump(SLOW))
    out = tmp_path / "killed"
    proc = subprocess.Popen([LI2, "sweep", str(spec), "--out", str(out), "--workers", "2", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def partial() -> bool:  # a started, unfinished run with a periodic checkpoint to resume from
        return any(not (d / "summary.json").exists() and any(d.glob("checkpoints/*-step*.safetensors"))
                   for d in out.glob("runs/*"))

    done = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (done >= 2 and partial()):
        time.sleep(0.1)
        try:
            done = len(pd.read_parquet(out / "results.parquet"))
        except Exception:  # not written yet
            pass
    workers = [int(p) for t in Path(f"/proc/{proc.pid}/task").iterdir() for p in (t / "children").read_text().split()]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert 2 <= done < 6, "the sweep should have been killed halfway"
    # orphaned workers notice their parent is gone and exit instead of writing on
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)

    finished = len(list(out.glob("runs/*/summary.json")))
    calls = []
    table = run_sweep(SLOW, out, workers=2, progress=calls.append)
    assert sum(calls) == 6 - finished                                             # only the missing runs
    _same(table, ref_table)
    _same(read_parquet(out / "results.parquet"), ref_table)


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    # the ridge top layer is the MSE optimum; with cross-entropy the run raises when it starts
    spec = {"base": {"group": "Z5", "width": 16, "steps": 30, "top_layer": "ridge", "diagnostics": "off"},
            "grid": {"loss": ["ce", "mse"]}}
    table = run_sweep(spec, tmp_path, workers=1)
    assert table.status.tolist() == ["failed", "completed"]
    assert "ridge" in table.error[0] and pd.isna(table.error[1])
    assert pd.isna(table.final_test_acc[0]) and not pd.isna(table.final_test_acc[1])
    assert "ridge" in json.loads((tmp_path / "runs" / table.run_id[0] / "error.json").read_text())["error"]


def test_ray_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(SweepError, match=r"install li2\[ray\]"):
        run_sweep(SLOW, tmp_path / "out", executor="ray")
    assert not (tmp_path / "out").exists()


def test_ray_executor_gives_the_local_table(reference, tmp_path):
    pytest.importorskip("ray")
    _, ref_table = reference
    table = run_sweep(SLOW, tmp_path, executor="ray", workers=2)
    _same(table, ref_table)
    _same(read_parquet(tmp_path / "results.parquet"), ref_table)


def test_phase_command_writes_analysis_and_figures(reference):
    from typer.testing import CliRunner

    from li2.cli import app
    out, _ = reference
    result = CliRunner().invoke(app, ["phase", str(out), "--json"])
    assert result.exit_code == 0, result.output
    analysis = json.loads(result.stdout)
    assert analysis["n_runs_total"] == 6 and not analysis["bracketed"]          # one ratio: nothing to bracket
    assert json.loads((out / "phase.json").read_text()) == analysis
    assert (out / "phase.png").stat().st_size > 0 and (out / "phase.svg").stat().st_size > 0
