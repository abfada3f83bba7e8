"""Sweep run ids that survive new TrainConfig fields, and the SLURM executor (through submitit's local executor)."""
import shutil

import pandas as pd
import pytest
from pydantic import Field, create_model

import li2.studies.spec as spec_module
import li2.studies.sweep as sweep_module
from li2.config import TrainConfig
from li2.studies import run_sweep
from li2.studies.spec import SweepError, SweepSpec, expand, run_id

TINY = {"base": {"group": "Z5", "width": 8, "steps": 20, "diagnostics": "off", "checkpoint_every": 0},
        "grid": {"seed": [0, 1], "lr": [0.002, 0.004]}}

# TrainConfig's defaults when RUN_ID_SCHEMA became 2. A run id hashes only the fields that differ from the
# defaults, so changing a default changes what an old id means: bump RUN_ID_SCHEMA and extend this table.
DEFAULTS_AT_SCHEMA = {2: {
    "group": "Z71", "group_table": None, "expression": None, "modulus": None, "operands": 2, "train_ratio": 0.4,
    "seeds": [0], "width": 1024, "activation": "sqr", "loss": "mse", "init_scale": 1.0, "top_init_scale": 1.0,
    "layers": 0, "top_layer": "learned", "optimizer": "adam", "lr": 0.002, "weight_decay": 0.0005, "momentum": 0.9,
    "beta1": 0.9, "beta2": 0.999, "eps": 1e-08, "muon_lr": None, "steps": 3000, "eval_every": None,
    "early_stop": True, "stop_margin": 100, "grok_threshold": 0.95, "checkpoint_every": 500, "diagnostics": "basic",
    "device": "auto", "execution": "auto", "threads": None, "dtype": "float32", "deterministic": False}}


def test_no_default_changed_without_a_new_run_id_schema():
    from li2.studies.spec import RUN_ID_SCHEMA
    defaults = TrainConfig().model_dump(mode="json")
    pinned = DEFAULTS_AT_SCHEMA[RUN_ID_SCHEMA]
    changed = {k: (v, defaults.get(k)) for k, v in pinned.items() if defaults.get(k, "absent") != v}
    assert not changed, f"defaults changed {changed}: bump RUN_ID_SCHEMA in li2.studies.spec"


def test_run_ids_hash_only_what_differs_from_the_defaults():
    a = TrainConfig(group="Z23", seeds=[3], threads=1)
    assert run_id(a) == run_id(TrainConfig(group="Z23", seeds=[3], threads=1, lr=0.002))   # lr is the default
    assert run_id(a) != run_id(TrainConfig(group="Z23", seeds=[4], threads=1))
    assert run_id(a) == "7cc3fb1f05c4"   # frozen: ids name run folders on disk


def extended_config():
    """TrainConfig as it will be once someone adds a field with a default."""
    return create_model("TrainConfig", __base__=TrainConfig,
                        new_knob=(int, Field(7, description="a field added after the sweep was run")))


def test_a_sweep_written_before_a_new_field_is_reused_not_retrained(tmp_path, monkeypatch):
    out = tmp_path / "study"
    first = run_sweep(TINY, out, workers=1)
    assert (first.status != "failed").all() and len(first) == 4
    ids = sorted(p.name for p in (out / "runs").iterdir())
    monkeypatch.setattr(spec_module, "TrainConfig", extended_config())
    monkeypatch.setattr(sweep_module, "TrainConfig", extended_config())
    assert "new_knob" in expand(SweepSpec.parse(TINY))[0].config.model_dump()
    trained = []
    again = run_sweep(TINY, out, workers=1, progress=trained.append)
    assert sum(trained) == 0                                     # nothing retrained
    assert sorted(p.name for p in (out / "runs").iterdir()) == ids
    cols = ["run_id", "final_test_acc", "grok_step", "steps_trained"]
    pd.testing.assert_frame_equal(first[cols], again[cols])


def test_slurm_executor_runs_a_sweep_with_submitits_local_executor(tmp_path):
    out = tmp_path / "study"
    local = run_sweep(TINY, tmp_path / "local", workers=2)
    done = []
    table = run_sweep(TINY, out, executor="slurm", progress=done.append, slurm={"cluster": "local", "timeout_min": 10})
    assert sum(done) == 4 and (table.status != "failed").all()
    cols = ["run_id", "final_train_acc", "final_test_acc", "grok_step", "steps_trained"]
    pd.testing.assert_frame_equal(table[cols], local[cols])       # the same runs, the same numbers
    assert any((out / "submitit").iterdir())
    shutil.rmtree(out / "runs" / table.run_id[0])                 # a lost run is trained again on a rerun
    done.clear()
    again = run_sweep(TINY, out, executor="slurm", progress=done.append, slurm={"cluster": "local"})
    assert sum(done) == 1 and again[cols].equals(table[cols])


def test_slurm_executor_needs_sbatch_or_submitit(run_cli, tmp_path, monkeypatch):
    (tmp_path / "s.yaml").write_text("base: {group: Z5, width: 4, steps: 2}\ngrid: {seed: [0, 1]}\n")
    monkeypatch.setenv("PATH", str(tmp_path))                    # no sbatch here
    code, _, err = run_cli("sweep", tmp_path / "s.yaml", "--out", tmp_path / "a", "--executor", "slurm")
    assert code == 2 and err.count("\n") == 1 and "sbatch" in err, err
    monkeypatch.setitem(__import__("sys").modules, "submitit", None)
    with pytest.raises(SweepError, match=r"li2\[slurm\]"):
        run_sweep(TINY, tmp_path / "b", executor="slurm")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
