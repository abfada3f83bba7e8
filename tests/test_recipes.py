"""`li2 reproduce`: every recipe's findings structure at the tiny "smoke" size, and the verdict rules.

Smoke sizes run the same code paths as quick/full on tiny groups with a few dozen steps, so the
numbers are meaningless; only the layout of findings.json, figures and tables is checked here.
"""
import json
from pathlib import Path

import pandas as pd
import pytest

from li2 import recipes
from li2.recipes import VERDICTS, combine, mean_ci, registry, reproduce, spearman, welch_diff
from li2.recipes.hyperparams import verdict as verdict_hyperparams
from li2.recipes.multilayer import verdict as verdict_multilayer
from li2.recipes.muon import verdict as verdict_muon
from li2.recipes.nonabelian import verdict as verdict_nonabelian
from li2.recipes.ungrokking import verdict as verdict_ungrokking

KEYS = {"recipe", "claim", "expected", "measured", "headline", "verdict", "verdict_parts", "reasons", "rule",
        "setup", "size", "wall_seconds"}


def check_findings(folder: Path, f: dict, name: str) -> None:
    assert KEYS <= set(f), KEYS - set(f)
    assert f["recipe"] == name and f["size"] == "smoke" and f["verdict"] in VERDICTS
    assert isinstance(f["rule"], str) and len(f["rule"]) > 40 and isinstance(f["headline"], str) and f["headline"]
    assert isinstance(f["reasons"], list) and f["reasons"]
    assert all(v in VERDICTS for v in f["verdict_parts"].values())
    assert json.loads((folder / "findings.json").read_text()) == json.loads(json.dumps(f))
    pngs = sorted(folder.glob("*.png"))
    assert pngs, "no figure"
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.with_suffix(".svg").exists(), p
    tables = sorted(folder.glob("*.parquet"))
    assert tables, "no table"
    for t in tables:
        assert isinstance(pd.read_parquet(t), pd.DataFrame)
    for name_ in f.get("figures", []) + f.get("tables", []):
        assert (folder / name_).exists(), name_


@pytest.mark.parametrize("name", [n for n in recipes.RECIPES])
def test_recipe_smoke_writes_findings_figures_and_tables(tmp_path, name):
    out = tmp_path / name
    f = reproduce(name, out, size="smoke")
    check_findings(out, f, name)


def test_all_writes_one_subfolder_per_recipe_and_a_summary(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "RECIPES", ("energy", "multilayer"))
    lines = []
    f = reproduce("all", tmp_path / "all", size="smoke", progress=lines.append)
    assert set(f["recipes"]) == {"energy", "multilayer"} and sum(f["verdict_counts"].values()) == 2
    for n in ("energy", "multilayer"):
        assert (tmp_path / "all" / n / "findings.json").exists()
    assert pd.read_parquet(tmp_path / "all" / "verdicts.parquet").recipe.tolist() == ["energy", "multilayer"]
    assert any("energy: starting" in line for line in lines)


def test_cli_reproduce_json_and_unknown_name(tmp_path, run_cli):
    code, stdout, stderr = run_cli("reproduce", "energy", "--size", "smoke", "--out", tmp_path / "e", "--json", "--quiet")
    assert code == 0, stderr
    f = json.loads(stdout)
    assert f["recipe"] == "energy" and f["verdict"] in VERDICTS
    code, stdout, stderr = run_cli("reproduce", "bogus", "--out", tmp_path / "b")
    assert code == 2 and stdout == "" and stderr.startswith("error: unknown recipe 'bogus'") and stderr.count("\n") == 1
    code, _, stderr = run_cli("reproduce", "energy", "--size", "huge", "--out", tmp_path / "c")
    assert code == 2 and stderr.startswith("error: unknown size") and stderr.count("\n") == 1
    # a rerun into the same folder is fine (resumes); another recipe, size or a foreign folder is refused
    code, _, stderr = run_cli("reproduce", "energy", "--size", "smoke", "--out", tmp_path / "e", "--quiet")
    assert code == 0, stderr
    for args in (("multilayer", "--size", "smoke"), ("energy", "--quick")):
        code, _, stderr = run_cli("reproduce", *args, "--out", tmp_path / "e", "--quiet")
        assert code == 2 and "holds no" in stderr and stderr.count("\n") == 1, stderr
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    code, _, stderr = run_cli("reproduce", "phase", "--size", "smoke", "--out", tmp_path / "foreign")
    assert code == 2 and stderr.startswith("error: ") and (tmp_path / "foreign" / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    code, _, stderr = run_cli("reproduce", "energy", "--quick", "--out", tmp_path / "file")
    assert code == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1


# -- statistics ---------------------------------------------------------------------------------------------

def test_statistics_helpers():
    s = mean_ci([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["ci"][0] < 2.0 < s["ci"][1]
    assert mean_ci([5.0])["ci"] is None and mean_ci([])["mean"] is None
    d = welch_diff([3, 4, 5], [0, 1, 2])
    assert d["diff"] == 3.0 and d["ci"][0] > 0
    assert welch_diff([1, 1], [1, 1])["ci"] == [0.0, 0.0]
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0) and spearman([1, 2], [1, 2]) is None
    assert combine({"a": "supports", "b": "supports"}) == "supports"
    assert combine({"a": "supports", "b": "inconclusive"}) == "inconclusive"
    assert combine({"a": "supports", "b": "contradicts"}) == "contradicts"


# -- verdict rules ------------------------------------------------------------------------------------------

# the dynamics and energy rules (rewritten in issue 11): tests/test_theory_recipes.py


def _muon(diffs, more=None):
    per = lambda d: {"per_width": {str(k): {"coverage_diff": {"diff": c, "ci": ci},
                                            "test_acc_diff": {"diff": t, "ci": None}}
                                   for k, (c, ci, t) in zip((60, 90, 120), d)}}
    return {"per_ratio": {"0.3": per(diffs), **({"0.2": per(more)} if more else {})}}


def test_verdict_muon():
    assert verdict_muon(_muon([(3, [1, 5], 0.01)] * 3))[0] == "supports"
    assert verdict_muon(_muon([(-3, [-5, -1], 0.0)] * 2 + [(0, [-1, 1], 0.0)]))[0] == "contradicts"
    assert verdict_muon(_muon([(-1, [-3, 1], -0.02)] * 3))[0] == "contradicts"
    assert verdict_muon(_muon([(0.5, [-1, 2], 0.0)] * 3))[0] == "inconclusive"
    assert verdict_muon({})[0] == "inconclusive"
    # one ratio supports, another contradicts → contradicts overall
    v, parts, _ = verdict_muon(_muon([(3, [1, 5], 0.01)] * 3, more=[(-3, [-5, -1], -0.5)] * 3))
    assert v == "contradicts" and parts == {"p=0.3": "supports", "p=0.2": "contradicts"}


def test_verdict_multilayer():
    pairs = [{"grok_default": 1000, "grok_zero": 100}, {"grok_default": 800, "grok_zero": 100}]
    assert verdict_multilayer({"pairs": pairs, "ratio_geomean": 9.0, "censored": 0})[0] == "supports"
    assert verdict_multilayer({"pairs": pairs, "ratio_geomean": 1.3, "censored": 0})[0] == "contradicts"
    assert verdict_multilayer({"pairs": pairs, "ratio_geomean": 1.3, "censored": 1})[0] == "inconclusive"
    assert verdict_multilayer({"pairs": pairs, "ratio_geomean": 3.0, "censored": 0})[0] == "inconclusive"
    never = [{"grok_default": 500, "grok_zero": None}] * 2
    assert verdict_multilayer({"pairs": never, "ratio_geomean": None})[0] == "contradicts"


def _knob(values, groks, tests=None):
    tests = tests or [1.0] * len(values)
    return [{"value": v, "all_grokked": g is not None, "grok_step_mean": g, "test_acc_mean": t}
            for v, g, t in zip(values, groks, tests)]


def test_verdict_hyperparams():
    m = {"weight_decay": _knob([1e-4, 1e-3, 1e-2], [900, 300, 100]), "width": _knob([128, 512, 2048], [100, 200, 400]),
         "learning_rate": _knob([5e-4, 2e-3, 8e-3], [1, 1, 1], [1.0, 0.7, 0.2])}
    v, parts, _ = verdict_hyperparams(m)
    assert v == "supports" and set(parts) == {"weight_decay", "width", "learning_rate"}
    v, parts, _ = verdict_hyperparams({**m, "width": _knob([128, 512, 2048], [400, 200, 100])})
    assert v == "contradicts" and parts["width"] == "contradicts"
    v, parts, _ = verdict_hyperparams({**m, "learning_rate": _knob([5e-4, 2e-3, 8e-3], [1, 1, 1], [1.0, 1.0, 1.0])})
    assert v == "inconclusive" and parts["learning_rate"] == "inconclusive"
    # ρ = −1 on differences of noise size is not a trend: below the effect floors → inconclusive
    v, parts, _ = verdict_hyperparams({**m, "learning_rate": _knob([5e-4, 2e-3, 8e-3], [1, 1, 1], [1.0, 0.99, 0.98]),
                                       "width": _knob([128, 512, 2048], [100, 105, 110])})
    assert parts["learning_rate"] == "inconclusive" and parts["width"] == "inconclusive"


def test_verdict_ungrokking():
    long_ok = [{"outcome": "grokked", "grok_step": 300, "steps_trained": 6000}]
    long_ung = [{"outcome": "ungrokked", "grok_step": None, "steps_trained": 6000}]
    low = {"p2_over_pc": 0.4, "grokked_before": True, "ungrokked": True}
    high = {"p2_over_pc": 1.33, "grokked_before": True, "ungrokked": False}
    assert verdict_ungrokking({"long_training": long_ok, "less_data": [low, high]})[0] == "supports"
    assert verdict_ungrokking({"long_training": long_ung, "less_data": []})[0] == "supports"
    nolow = {**low, "ungrokked": False}
    assert verdict_ungrokking({"long_training": long_ok, "less_data": [nolow, high]})[0] == "contradicts"
    assert verdict_ungrokking({"long_training": [], "less_data": [nolow]})[0] == "inconclusive"


def test_verdict_nonabelian():
    g = {"pc_linear": 0.5, "test_acc_below": [0.2, 0.3], "test_acc_above": [1.0, 0.99],
         "energy_irrep_fraction_full_data": 1.0, "dominant_fraction_above": [0.8, 0.9]}
    assert verdict_nonabelian({"groups": {"S4": g}})[0] == "supports"
    assert verdict_nonabelian({"groups": {"S4": {**g, "dominant_fraction_above": [0.2, 0.3]}}})[0] == "contradicts"
    assert verdict_nonabelian({"groups": {"S4": {**g, "test_acc_above": [0.5, 1.0]}}})[0] == "inconclusive"
    assert verdict_nonabelian({"groups": {"S4": {**g, "test_acc_above": [0.5, 0.4]}}})[0] == "contradicts"
    assert verdict_nonabelian({"groups": {"S4": {**g, "test_acc_below": [1.0, 1.0]}}})[0] == "contradicts"
    assert verdict_nonabelian({"groups": {"S4": {**g, "energy_irrep_fraction_full_data": 0.3}}})[0] == "contradicts"
