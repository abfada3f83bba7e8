"""`li2 reproduce`: every recipe's findings structure at the tiny "smoke" size, the recipe contract (FINDINGS_KEYS,
plan(size), --dry-run), and the verdict rules of dynamics and energy (the other recipes' rules: test_recipe_verdicts.py).

Smoke sizes run the same code paths as quick/full on tiny groups with a few dozen steps, so the
numbers are meaningless; only the layout of findings.json, figures and tables is checked here.
"""
import json
import types
from pathlib import Path

import pandas as pd
import pytest

from li2 import recipes
from li2.recipes import (
    CONTRACT_PENDING,
    DEVIATION_KEYS,
    FINDINGS_KEYS,
    PLAN_KEYS,
    VERDICTS,
    ContractError,
    combine,
    estimate_seconds,
    make_plan,
    mean_ci,
    registry,
    reproduce,
    spearman,
    welch_diff,
)

KEYS = set(FINDINGS_KEYS) | {"recipe", "size", "wall_seconds"}


def check_findings(folder: Path, f: dict, name: str) -> None:
    if name in CONTRACT_PENDING:   # may still lack the setting keys: they must be listed, not silently absent
        missing = set(f.get("contract_missing", []))
        assert missing == KEYS - set(f), (missing, KEYS - set(f))
    else:
        assert "contract_missing" not in f
    assert KEYS - set(f.get("contract_missing", [])) <= set(f), KEYS - set(f)
    if name not in CONTRACT_PENDING:
        assert isinstance(f["paper_setting"], dict) and f["paper_setting"] and isinstance(f["setting"], dict)
        for d in f["deviations"]:
            assert set(d) == set(DEVIATION_KEYS) and d["why"].strip()
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


# -- the recipe contract: plan(size), FINDINGS_KEYS, --dry-run -----------------------------------------------

@pytest.mark.parametrize("size", ["smoke", "quick", "full"])
def test_every_recipe_plans_its_size(size):
    for name in recipes.RECIPES:
        p = recipes.plan(name, size)
        if p is None:
            assert name in CONTRACT_PENDING and not registry.has_plan(name)
            continue
        assert set(PLAN_KEYS) <= set(p), (name, set(PLAN_KEYS) - set(p))
        assert isinstance(p["runs"], int) and p["runs"] >= 0 and p["core_hours"] > 0, (name, p["runs"], p["core_hours"])
        assert isinstance(p["paper_setting"], dict) and p["paper_setting"] and isinstance(p["setting"], dict)
        for d in p["deviations"]:
            assert set(d) == set(DEVIATION_KEYS) and d["why"].strip(), (name, d)
        if size != "full":   # a reduced size says how it differs from the paper
            assert p["deviations"], name


def test_only_the_pending_recipes_may_lack_a_plan():
    assert CONTRACT_PENDING <= set(recipes.RECIPES)
    for name in set(recipes.RECIPES) - CONTRACT_PENDING:
        assert registry.has_plan(name), name


def test_full_plans_cost_more_than_quick_ones():
    for name in recipes.RECIPES:
        q, f = recipes.plan(name, "quick"), recipes.plan(name, "full")
        if q is not None:
            assert f["core_hours"] > q["core_hours"], name


def test_a_recipe_that_forgets_a_findings_key_fails(tmp_path, monkeypatch):
    def run(ctx):
        return {k: "x" for k in FINDINGS_KEYS if k != "deviations"} | {"verdict": "supports", "verdict_parts": {},
                                                                       "reasons": ["r"]}
    fake = types.SimpleNamespace(CLAIM="c", RULE="r", verdict=lambda m: ("supports", {}, []), run=run,
                                 plan=lambda size: make_plan([], {"a": 1}, {"b": 2}, []))
    monkeypatch.setitem(registry.MODULES, "fake", fake)
    monkeypatch.setattr(registry, "RECIPES", registry.RECIPES + ("fake",))
    with pytest.raises(ContractError, match="deviations"):
        reproduce("fake", tmp_path / "fake", size="smoke")
    assert not (tmp_path / "fake" / "findings.json").exists()
    # the same omission in a recipe still being rewritten is recorded instead
    monkeypatch.setattr(registry, "CONTRACT_PENDING", CONTRACT_PENDING | {"fake"})
    f = reproduce("fake", tmp_path / "fake2", size="smoke")
    assert f["contract_missing"] == ["deviations"]


def test_a_plan_without_its_keys_fails(monkeypatch):
    fake = types.SimpleNamespace(plan=lambda size, in_all=False: {"runs": 1})
    monkeypatch.setitem(registry.MODULES, "fake", fake)
    monkeypatch.setattr(registry, "RECIPES", registry.RECIPES + ("fake",))
    with pytest.raises(ContractError, match="core_hours"):
        recipes.plan("fake", "quick")
    with pytest.raises(ValueError, match="reason"):
        make_plan([], {}, {}, [{"what": "w", "paper": 1, "here": 2, "why": " "}])


def test_estimate_seconds_grows_with_the_work():
    base = dict(group="Z41", train_ratio=0.5, width=256, steps=1000)
    t = estimate_seconds(base)
    assert 0 < t < estimate_seconds({**base, "steps": 2000}) and t < estimate_seconds({**base, "width": 1024})
    assert t < estimate_seconds({**base, "top_layer": "ridge"}) and t < estimate_seconds({**base, "layers": 1})
    assert t < estimate_seconds({**base, "optimizer": "muon"}) and t < estimate_seconds({**base, "group": "Z71"})


def test_cli_dry_run_prints_the_plan_and_trains_nothing(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = run_cli("reproduce", "all", "--full", "--dry-run")
    assert code == 0, stderr
    assert "total:" in stdout and "core-hours" in stdout
    for name in recipes.RECIPES:
        assert f"\n{name}: " in stdout, name
    for name in CONTRACT_PENDING:
        if not registry.has_plan(name):
            assert f"{name}: plan not available" in stdout
    assert "deviation — " in stdout and list(tmp_path.iterdir()) == []
    code, stdout, stderr = run_cli("reproduce", "muon", "--quick", "--dry-run", "--json")
    assert code == 0, stderr
    out = json.loads(stdout)
    assert out["size"] == "quick" and set(PLAN_KEYS) <= set(out["plans"]["muon"])
    total = sum(p["core_hours"] for p in recipes.plans("all", "full").values() if p)
    first = run_cli("reproduce", "all", "--full", "--dry-run")[1]
    assert f"≈ {total:.3g} core-hours" in first.splitlines()[-1]
    code, _, stderr = run_cli("reproduce", "muon", "--quick", "--full", "--dry-run")
    assert code == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1
    code, _, stderr = run_cli("reproduce", "muon", "--quick")
    assert code == 2 and "--out" in stderr and stderr.count("\n") == 1


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


def test_worker_pool_trains_like_this_process(tmp_path):
    """Runs trained by the shared pool's spawned workers equal the same configs trained in this process (one
    torch thread each), and a config listed twice is trained once."""
    from li2.recipes.common import RecipeContext, train_runs
    cfgs = [dict(group="Z7", train_ratio=0.6, width=8, steps=30, seed=s, diagnostics="off", checkpoint_every=0)
            for s in (0, 1)]
    pooled = RecipeContext(tmp_path / "a", "quick", lambda m: None, workers=2)
    try:
        a = train_runs(pooled, tmp_path / "a", cfgs + cfgs[:1])
    finally:
        pooled.runner().close()
    b = train_runs(RecipeContext(tmp_path / "b", "smoke", lambda m: None, workers=1), tmp_path / "b", cfgs)
    assert len(a) == 3 and a.run_id.iloc[0] == a.run_id.iloc[2] and len(list((tmp_path / "a" / "runs").iterdir())) == 2
    cols = ["run_id", "final_train_acc", "final_test_acc", "final_test_loss", "steps_trained"]
    assert a[cols].iloc[:2].reset_index(drop=True).equals(b[cols])
