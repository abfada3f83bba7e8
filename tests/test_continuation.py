"""Continuing a finished run with a larger step budget (li2.runs.continuation) and the budget-aware outcomes
(li2.theory.outcomes.budget_outcome) that decide which runs to continue."""
import numpy as np
import pandas as pd
import pytest
import torch

import li2
import li2.runs.continuation as continuation
from li2.runs.continuation import budgets, extend_run
from li2.runs.folder import RunError
from li2.store import read_yaml, write_yaml
from li2.theory.outcomes import budget_outcome

BASE = dict(group="Z23", width=64, diagnostics="off", checkpoint_every=100, threads=1, figures=False)


def same_run(a, b) -> None:
    pd.testing.assert_frame_equal(a.metrics.drop(columns="wall_seconds"), b.metrics.drop(columns="wall_seconds"))
    for seed in b.params:
        for k in b.params[seed]:
            assert torch.equal(a.params[seed][k], b.params[seed][k]), (seed, k)
    strip = lambda s: [{k: v for k, v in m.items() if k != "wall_seconds"} for m in s["models"]]  # noqa: E731
    assert strip(a.summary) == strip(b.summary)


@pytest.mark.parametrize("seeds,execution,ratio", [([0], "auto", 0.3), ([0, 1, 2], "stack", 0.5)])
def test_extended_run_equals_a_run_given_the_larger_budget_from_the_start(tmp_path, seeds, execution, ratio):
    opts = dict(BASE, seeds=seeds, execution=execution, train_ratio=ratio)
    li2.train(**opts, steps=250, out=tmp_path / "a")
    extended = extend_run(tmp_path / "a", 600)
    fresh = li2.train(**opts, steps=600, out=tmp_path / "b")
    same_run(extended, fresh)
    assert budgets(tmp_path / "a") == [250]
    assert read_yaml(tmp_path / "a" / "config.yaml")["config"]["steps"] == 600
    assert (tmp_path / "a" / "checkpoints" / "budget-250").is_dir()
    if len(seeds) > 1:   # a model that early-stopped before 250 stays stopped; the others went on
        assert {m["status"] for m in fresh.summary["models"]} >= {"early_stop"}
    again = extend_run(tmp_path / "a", 600)      # nothing left to do: the same run
    same_run(again, fresh)
    twice = extend_run(tmp_path / "a", 1200)     # and on again, from the 600-step run
    same_run(twice, li2.train(**opts, steps=1200, out=tmp_path / "c"))
    assert budgets(tmp_path / "a") == [250, 600]


def test_extension_interrupted_between_config_and_archive_is_completed(tmp_path, monkeypatch):
    opts = dict(BASE, seeds=[0], train_ratio=0.3)
    li2.train(**opts, steps=200, out=tmp_path / "a")
    real = continuation._archive

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(continuation, "_archive", crash)
    with pytest.raises(KeyboardInterrupt):
        extend_run(tmp_path / "a", 500)
    monkeypatch.setattr(continuation, "_archive", real)
    same_run(extend_run(tmp_path / "a", 500), li2.train(**opts, steps=500, out=tmp_path / "b"))


def test_extension_is_verified_like_any_resume(tmp_path):
    li2.train(**BASE, seeds=[0], train_ratio=0.3, steps=200, out=tmp_path / "a")
    with pytest.raises(RunError, match="cannot shorten"):
        extend_run(tmp_path / "a", 100)
    saved = read_yaml(tmp_path / "a" / "config.yaml")
    saved["config"]["lr"] = 0.01            # the folder now claims a config its checkpoints were not written by
    write_yaml(tmp_path / "a" / "config.yaml", saved)
    with pytest.raises(RunError, match="another configuration"):
        extend_run(tmp_path / "a", 400)
    with pytest.raises(RunError):
        extend_run(tmp_path / "nothing", 400)


# -- budget-aware outcomes ---------------------------------------------------------------------------------

def curve(test_acc, test_loss, w_norm, train_acc=1.0, steps=None) -> pd.DataFrame:
    n = len(test_acc)
    steps = steps or list(np.linspace(0, 2000, n).astype(int))
    return pd.DataFrame({"step": steps, "train_acc": [train_acc] * n, "test_acc": test_acc, "test_loss": test_loss,
                         "w_norm": w_norm})


def test_budget_outcomes():
    flat = np.linspace(1.0, 0.99, 9)
    # memorised: train fit, test acc flat at 0, test loss rising, ‖W‖ settled
    out, ev = budget_outcome(curve([0.0] * 9, np.linspace(1.40, 1.60, 9), 15 * flat))
    assert out == "memorized" and ev["test_loss_change"] > 0
    # the plateau before a late grok: test loss falling (Z41 at 0.95·p_ref, step 2000)
    assert budget_outcome(curve(np.linspace(0.0, 0.06, 9), np.linspace(1.40, 1.26, 9), 15 * flat))[0] == "undecided"
    # test acc rising, loss flat: still changing
    assert budget_outcome(curve(np.linspace(0.0, 0.3, 9), [1.4] * 9, 15 * flat))[0] == "undecided"
    # weights still shrinking fast: not settled
    assert budget_outcome(curve([0.0] * 9, [1.5] * 9, np.linspace(20, 12, 9)))[0] == "undecided"
    # grokked, diverged, stalled
    assert budget_outcome(curve(list(np.linspace(0, 0.97, 9)), [0.1] * 9, 15 * flat))[0] == "grokked"
    assert budget_outcome(curve([0.0] * 9, [1.5] * 9, 15 * flat), status="diverged at step 40")[0] == "diverged"
    assert budget_outcome(curve([0.0] * 9, [1.5] * 9, 15 * flat, train_acc=0.3))[0] == "stalled"
    # the rule looks at the last quarter of the steps only: an early rise does not keep a run undecided
    acc = [0.0, 0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]
    assert budget_outcome(curve(acc, [1.5] * 9, 15 * flat))[0] == "memorized"


def test_collapsed_weights_are_a_decided_failure():
    w = [18.0, 2.3, 0.05, 0.02, 0.03, 0.01, 0.02, 0.015, 0.03]     # relative changes of a near-zero norm are noise
    out, ev = budget_outcome(curve([0.01] * 9, [0.99] * 9, w, train_acc=0.03))
    assert out == "stalled" and ev["final_w_norm_ratio"] < 0.05
