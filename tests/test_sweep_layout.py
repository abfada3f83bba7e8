"""A sweep's results do not depend on its worker layout: one 2-thread worker or two 1-thread workers
(the fused step's lanes are a fixed partition of the rows, whatever thread runs them)."""
import pandas as pd

from li2.engine.fused import LANES
from li2.studies import WALL_COLUMNS, run_sweep
from li2.studies.sweep import worker_threads

SPEC = {"base": {"width": 48, "steps": 150, "early_stop": False, "checkpoint_every": 0},
        "grid": {"group": ["Z11", "Z13"], "seed": {"range": [0, 2]}}}


def test_worker_threads_share_the_cores_up_to_the_lanes(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert (worker_threads(1), worker_threads(2), worker_threads(4)) == (2, 1, 1)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert worker_threads(1) == LANES and worker_threads(16) == 1


def test_one_worker_with_two_threads_equals_two_workers_with_one(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)    # so that the layouts are 1×2 and 2×1 threads
    one = run_sweep(SPEC, tmp_path / "one", workers=1)
    two = run_sweep(SPEC, tmp_path / "two", workers=2)
    assert len(one) == 4 and (one.status != "failed").all()
    pd.testing.assert_frame_equal(one.drop(columns=list(WALL_COLUMNS)), two.drop(columns=list(WALL_COLUMNS)))
    a = pd.read_parquet(tmp_path / "one" / "runs" / one.run_id[0] / "metrics.parquet")
    b = pd.read_parquet(tmp_path / "two" / "runs" / two.run_id[0] / "metrics.parquet")
    pd.testing.assert_frame_equal(a.drop(columns=["wall_seconds"]), b.drop(columns=["wall_seconds"]))
