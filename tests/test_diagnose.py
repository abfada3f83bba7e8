"""Outcomes of `li2.diagnose`: small runs built on purpose to end each way, and the CLI.

Every outcome except `ungrokked` comes from a real (tiny) training run. Ungrokking needs thousands of
steps past generalisation (or a switch to less data, see li2.recipe_ungrokking), too slow for a unit
test, so its case uses a synthetic metrics frame whose test accuracy rises above the threshold and falls.
"""
import json

import pandas as pd
import pytest

import li2
from li2.config import TrainConfig
from li2.theory.outcomes import OUTCOMES, annotate_outcomes, classify_model

TINY = dict(group="Z23", width=128, diagnostics="basic", write=False, figures=False, checkpoint_every=0)


def outcome_of(**kw):
    r = li2.train(**{**TINY, **kw})
    m = r.summary["models"][0]
    assert m["outcome"] in OUTCOMES and isinstance(m["hint"], str) and m["hint"]
    return m


def test_grokked():
    m = outcome_of(train_ratio=0.7, steps=1500, early_stop=True, stop_margin=20)
    assert m["outcome"] == "grokked", m


def test_memorized_with_a_tiny_training_ratio():
    m = outcome_of(train_ratio=0.12, steps=400, early_stop=False, eval_every=50)
    assert m["outcome"] == "memorized", m
    assert "below p_c" in m["hint"] and "--train-ratio" in m["hint"]


def test_no_feature_learning_with_a_tiny_learning_rate_and_no_weight_decay():
    m = outcome_of(train_ratio=0.7, steps=60, lr=1e-6, weight_decay=0.0, early_stop=False, eval_every=20)
    assert m["outcome"] == "no_feature_learning", m
    assert "--weight-decay" in m["hint"] and "η = 0" in m["hint"]


def test_diverged_with_a_huge_sgd_learning_rate():
    m = outcome_of(train_ratio=0.7, steps=30, optimizer="sgd", lr=100.0, early_stop=False, eval_every=5)
    assert m["status"].startswith("diverged") and m["outcome"] == "diverged", m
    assert "--lr" in m["hint"]


def test_collapsed_with_a_huge_weight_decay():
    m = outcome_of(train_ratio=0.7, steps=200, weight_decay=0.05, early_stop=False, eval_every=20)
    assert m["outcome"] == "collapsed", m
    assert m["evidence"]["final_w_norm_ratio"] < 0.05 and "--weight-decay" in m["hint"]


def test_unfinished_when_the_budget_is_too_short():
    m = outcome_of(train_ratio=0.7, steps=5, early_stop=False, eval_every=5)
    assert m["outcome"] == "unfinished", m


def synthetic(test_acc, train_acc=None, drift=None):
    steps = list(range(0, 100 * len(test_acc), 100))
    df = pd.DataFrame({"step": steps, "seed": 0, "test_acc": test_acc,
                       "train_acc": train_acc or [1.0] * len(test_acc), "w_norm": 1.0})
    if drift is not None:
        df["w_drift"] = drift
    return df


def test_ungrokked_from_a_synthetic_metrics_frame():
    config = TrainConfig(group="Z23")
    df = synthetic([0.05, 0.6, 0.99, 1.0, 0.97, 0.7, 0.4], drift=[0, 0.5, 1, 1, 1, 1, 1])
    summary = {"models": [{"seed": 0, "status": "completed"}]}
    annotate_outcomes(summary, df, config)
    m = summary["models"][0]
    assert m["outcome"] == "ungrokked" and m["evidence"]["peak_test_acc"] == 1.0 and m["evidence"]["peak_step"] == 300
    assert "early-stop" in m["hint"]
    # a dip that stays above the threshold, or a small wobble right under it, is not ungrokking
    assert classify_model(synthetic([0.1, 1.0, 0.96]), {"status": "completed"}, config, 23)[0] == "grokked"
    assert classify_model(synthetic([0.1, 0.96, 0.94]), {"status": "completed"}, config, 23)[0] != "ungrokked"


def test_rule_order_and_estimated_drift_without_diagnostics():
    config = TrainConfig(group="Z23")
    # diverged wins over everything
    assert classify_model(synthetic([0.1, 1.0]), {"status": "diverged at step 3"}, config, 23)[0] == "diverged"
    # no w_drift column: |‖W‖ − ‖W₀‖|/‖W₀‖ from w_norm stands in (and says so)
    df = synthetic([0.04, 0.05, 0.04], train_acc=[0.1, 0.5, 1.0])
    out, ev = classify_model(df, {"status": "completed"}, config, 23)
    assert out == "no_feature_learning" and ev["drift_estimated"] is True
    # fit, test low but still rising, nodes irrep-like → still on its way (unfinished), not memorised
    df = synthetic([0.05, 0.3, 0.5], drift=[0, 1, 1])
    df["mean_dominant_fraction"] = [0.1, 0.5, 0.8]
    assert classify_model(df, {"status": "completed"}, config, 23)[0] == "unfinished"
    df["mean_dominant_fraction"] = [0.1, 0.2, 0.3]
    assert classify_model(df, {"status": "completed"}, config, 23)[0] == "memorized"
    # irrep-like nodes but a test-accuracy plateau (small groups): memorised
    df = synthetic([0.05, 0.2, 0.2, 0.2, 0.21], drift=[0, 1, 1, 1, 1])
    df["mean_dominant_fraction"] = 0.9
    out, ev = classify_model(df, {"status": "completed"}, config, 23)
    assert out == "memorized" and ev["test_gain_last_quarter"] < 0.02


def test_memorized_hint_above_p_c_points_at_lr_and_weight_decay():
    config = TrainConfig(group="Z23", train_ratio=0.9)
    df = synthetic([0.05, 0.1, 0.2], drift=[0, 1, 1])
    summary = {"models": [{"seed": 0, "status": "completed"}]}
    annotate_outcomes(summary, df, config, order=23)
    assert summary["models"][0]["outcome"] == "memorized" and "--lr" in summary["models"][0]["hint"]


def test_hints_name_only_knobs_the_model_has():
    df = synthetic([0.05, 0.1, 0.2], drift=[0, 1, 1])
    hints = {}
    for model in ("mlp2", "transformer"):
        summary = {"models": [{"seed": 0, "status": "completed"}]}
        annotate_outcomes(summary, df, TrainConfig(group="Z23", train_ratio=0.1, model=model), order=23)
        hints[model] = summary["models"][0]["hint"]
    assert "p_c" in hints["mlp2"]                 # Thm 4's threshold is the two-layer network's
    assert "p_c ≈ 2.7482" not in hints["transformer"] and "hidden nodes" not in hints["transformer"]


def test_cli_diagnose_a_run_folder(tmp_path, run_cli):
    out = tmp_path / "run"
    li2.train(group="Z7", train_ratio=0.6, width=16, steps=20, seeds=[0, 1], out=out, figures=False)
    written = json.loads((out / "summary.json").read_text())
    assert all(m["outcome"] in OUTCOMES and m["hint"] for m in written["models"])
    code, stdout, stderr = run_cli("diagnose", out, "--json")
    assert code == 0, stderr
    got = json.loads(stdout)
    assert [m["seed"] for m in got["models"]] == [0, 1]
    assert [m["outcome"] for m in got["models"]] == [m["outcome"] for m in written["models"]]
    code, stdout, _ = run_cli("diagnose", out)
    assert code == 0 and "seed 0:" in stdout and "hint:" in stdout


@pytest.mark.parametrize("damage", ["missing", "empty", "corrupt_summary", "corrupt_metrics"])
def test_cli_diagnose_refuses_a_missing_or_damaged_folder_in_one_line(tmp_path, run_cli, damage):
    out = tmp_path / "run"
    if damage != "missing":
        out.mkdir()
    if damage.startswith("corrupt"):
        li2.train(group="Z7", train_ratio=0.6, width=8, steps=5, out=out, figures=False)
        name = "summary.json" if damage == "corrupt_summary" else "metrics.parquet"
        (out / name).write_text("{not json" if name.endswith("json") else "garbage")
    code, stdout, stderr = run_cli("diagnose", out)
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
