"""The adaptive p_c search (li2.studies.design / search) on synthetic outcomes with a known p_c(M) and law, its
driver (chains, continuation up to the cap, resume, executors) with fake runs, and a real smoke search."""
import json
import math

import numpy as np
import pandas as pd
import pytest

import li2.studies.search as search
from li2.studies.design import TEMPER, Design, propose, status
from li2.studies.search import SearchSpec, run_search
from li2.studies.search_analysis import analyse_search, budget_check
from li2.studies.spec import SweepError

TRUE_C = 2.4


def oracle(slope: float, rng: np.random.Generator, c: float = TRUE_C):
    """success of a run at ratio p for group order M: P = σ(slope·ln(p/p_c(M))), p_c = c·ln M/M."""
    def outcome(m: int, p: float) -> float:
        pc = c * math.log(m) / m
        return float(rng.random() < 1.0 / (1.0 + math.exp(-slope * math.log(p / pc))))
    return outcome


def simulate(m: int, outcome, design: Design) -> tuple[list[float], list[float]]:
    ratios, wins = [], []
    p_ref = 2.7482 * math.log(m) / m
    while True:
        nxt = propose(ratios, wins, p_ref, design)
        if not nxt:
            return ratios, wins
        for p in nxt:
            ratios.append(p)
            wins.append(outcome(m, p))


def test_search_recovers_a_known_pc_and_its_tempered_interval_covers_it():
    """Coverage of the search's 95% interval over transitions from smooth (slope 15 per unit ln p) to sharp."""
    design = Design(max_runs=16)
    hits, runs, widths = {}, [], []
    for slope in (15, 30, 80, 400):
        rng = np.random.default_rng(slope)
        ok = []
        for i in range(25):
            m = (23, 41, 71, 127)[i % 4]
            ratios, wins = simulate(m, oracle(slope, rng), design)
            st = status(ratios, wins, design)
            truth = TRUE_C * math.log(m) / m
            assert st["state"] in ("converged", "exhausted") and st["ci"] is not None
            ok.append(st["ci"][0] <= truth <= st["ci"][1])
            runs.append(len(ratios))
            widths.append(st["width"])
            assert abs(math.log(st["estimate"] / truth)) < 0.25
        hits[slope] = np.mean(ok)
    print(f"\ncoverage of the tempered (×{TEMPER:.2f}) interval by slope: {hits}; mean runs {np.mean(runs):.1f}, "
          f"median relative width {np.median(widths):.3f}")
    assert min(hits.values()) >= 0.8 and np.mean(list(hits.values())) >= 0.88
    assert max(runs) <= 16


def test_untempered_interval_of_the_adaptive_design_is_too_narrow():
    """Why the design tempers: the plain χ²₁(0.95) profile interval undercovers smooth transitions."""
    plain, tempered = Design(max_runs=16, temper=1.0), Design(max_runs=16)
    cover = {}
    for name, d in (("plain", plain), ("tempered", tempered)):
        rng = np.random.default_rng(7)
        ok = []
        for _ in range(30):
            ratios, wins = simulate(41, oracle(30, rng), d)
            st = status(ratios, wins, tempered)     # both judged by the tempered interval …
            st_own = status(ratios, wins, d)        # … and by their own
            truth = TRUE_C * math.log(41) / 41
            ok.append((st["ci"][0] <= truth <= st["ci"][1], st_own["ci"][0] <= truth <= st_own["ci"][1]))
        cover[name] = np.mean([o[1] for o in ok])
    print(f"\ncoverage at slope 30: plain {cover['plain']:.2f}, tempered {cover['tempered']:.2f}")
    assert cover["plain"] < cover["tempered"]


def test_unbracketed_searches_step_outwards_and_stop_out_of_reach():
    d = Design()
    assert propose([], [], 0.2, d) == [0.15, 0.2, 0.266]
    up = propose([0.15, 0.2, 0.266], [0, 0, 0], 0.2, d)
    assert min(up) > 0.266 and len(up) == d.batch
    down = propose([0.15, 0.2, 0.266], [1, 1, 1], 0.2, d)
    assert max(down) < 0.15
    assert status([0.9, 0.8], [0, 0], d)["state"] == "out_of_reach"
    assert propose([0.9, 0.8], [0, 0], 0.5, d) == []
    assert status([0.1] * 16 + [0.2], [0] * 16 + [1], d)["state"] in ("exhausted", "converged")


# -- the driver, with fake runs: chains, continuation, resume -----------------------------------------------

class FakeRuns:
    """Stands in for training: a run at (M, p, seed) groks iff p ≥ p_c(M)·e^(jitter); runs within 8% above
    their own step are 'slow': undecided until 4× the base budget. Records every task it is given."""

    def __init__(self, base: int, c: float = TRUE_C):
        self.base, self.c, self.tasks, self.folders = base, c, [], {}

    def task(self, config_json, run_dir, steps):
        self.tasks.append((run_dir, steps))
        self.folders[run_dir] = (config_json, steps)
        return {"ok": True}

    def state(self, folder, threshold):
        if str(folder) not in self.folders:
            return None
        cfg, steps = self.folders[str(folder)]
        m, p, seed = int(cfg["group"][1:]), cfg["train_ratio"], cfg["seeds"][0]
        step = self.c * math.log(m) / m * math.exp(0.02 * math.sin(seed))
        slow = step <= p < 1.08 * step
        grok = p >= step and (not slow or steps >= 4 * self.base)
        outcome = "grokked" if grok else ("undecided" if slow else "memorized")
        return {"budget": steps, "budgets": json.dumps([steps]), "outcome": outcome, "success": grok,
                "grok_step": (3 * self.base if slow else self.base // 2) if grok else None,
                "final_test_acc": 1.0 if grok else 0.1, "final_train_acc": 1.0, "steps_trained": steps,
                "wall_seconds": 1.0, "status": "completed"}


@pytest.fixture
def fake(monkeypatch):
    runs = FakeRuns(base=100)
    monkeypatch.setattr(search, "bring_to_budget", runs.task)
    monkeypatch.setattr(search, "run_state", runs.state)
    return runs


SPEC = {"base": {"steps": 100, "diagnostics": "off"}, "orders": [23, 41, 71, 127], "kappa": 1,
        "budget_cap": 800, "max_runs": 12}


def test_driver_recovers_known_pc_law_and_continues_undecided_runs(tmp_path, fake):
    spec = SearchSpec.parse(SPEC)
    table = run_search(spec, tmp_path / "s", workers=1)
    assert set(table.order) == {23, 41, 71, 127} and table.groupby("order").size().max() <= 12
    budgets = [s for _, s in fake.tasks]
    assert set(budgets) <= {100, 200, 400, 800} and 400 in budgets     # slow runs doubled up to the cap
    assert (table.budget <= 800).all() and (table.seed == table.probe).all()
    res = analyse_search(table, spec, n_boot=20)
    for m in (23, 41, 71, 127):
        r = res["phase"]["pc"][str(m)]
        truth = TRUE_C * math.log(m) / m
        assert r["bracketed"] and r["ci"][0] <= truth * 1.03 and truth * 0.97 <= r["ci"][1], (m, r["ci"], truth)
    lo, hi = res["phase"]["c_ci"]
    assert lo <= TRUE_C <= hi * 1.03
    law = res["phase"]["law"]
    assert law["forms"]["c*ln(M)/M"]["status"] != "excluded"
    b_lo, b_hi = law["exponent"]["a*M^-b*ln(M)"]["ci"]
    assert b_lo <= 1.0 <= b_hi
    assert law["forms"]["c/sqrt(M)"]["status"] in ("excluded", "disfavoured")
    assert json.loads(json.dumps(search.results_table([]).to_dict()))   # an empty table is valid too


def test_driver_resumes_where_it_stopped_with_the_same_result(tmp_path, fake, monkeypatch):
    spec = SearchSpec.parse(SPEC)
    whole = run_search(spec, tmp_path / "a", workers=1)
    calls = []

    class Stop(Exception):
        pass

    def stop_after_15(line):
        calls.append(line)
        if len(calls) == 15:
            raise Stop

    with pytest.raises(Stop):
        run_search(spec, tmp_path / "b", workers=1, progress=stop_after_15)
    before = len(fake.tasks)
    again = run_search(spec, tmp_path / "b", workers=1)
    cols = [c for c in again.columns if c != "run_id"]
    pd.testing.assert_frame_equal(again[cols], whole[cols])
    assert len(fake.tasks) - before < len(whole) + 10        # resumed, not redone
    n = len(fake.tasks)
    run_search(spec, tmp_path / "b", workers=1)               # finished: nothing to train
    assert len(fake.tasks) == n


def test_spec_errors_are_one_line(tmp_path):
    for bad, word in (({**SPEC, "orders": []}, "orders"), ({**SPEC, "base": {"group": "Z5"}}, "base.group"),
                      ({**SPEC, "kappa": 2, "base": {"width": 64}}, "kappa"), ({**SPEC, "nope": 1}, "nope"),
                      ({**SPEC, "budget_cap": 10}, "budget_cap"), ({**SPEC, "start": [0.0]}, "start")):
        with pytest.raises(SweepError) as e:
            SearchSpec.parse(bad)
        assert word in str(e.value) and "\n" not in str(e.value)
    spec = SearchSpec.parse(SPEC)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("keep")
    with pytest.raises(SweepError):
        run_search(spec, tmp_path / "x", workers=1)
    assert (tmp_path / "x" / "mine.txt").read_text() == "keep"


def test_budget_check_flags_a_pc_that_moves_with_the_budget():
    full = {"pc": {"41": {"bracketed": True, "estimate": 0.2, "ci": [0.19, 0.21]},
                   "71": {"bracketed": True, "estimate": 0.15, "ci": [0.14, 0.16]}}}
    half = {"pc": {"41": {"bracketed": True, "estimate": 0.205}, "71": {"bracketed": True, "estimate": 0.17}}}
    res = budget_check(full, half, 4000)
    assert res["per_order"]["41"]["within_ci"] and not res["per_order"]["71"]["within_ci"]
    assert res["stable"] is False and res["budgets"] == [2000, 4000]


# -- real runs ------------------------------------------------------------------------------------------

REAL = {"base": {"steps": 150, "diagnostics": "off", "checkpoint_every": 0, "stop_margin": 20, "lr": 0.02,
                 "weight_decay": 1e-3}, "orders": [17, 23], "kappa": 8, "budget_cap": 300, "max_runs": 4}


def test_real_smoke_search_is_ordinary_run_folders_and_resumes_exactly(tmp_path):
    spec = SearchSpec.parse(REAL)
    table = run_search(spec, tmp_path / "s", workers=1)
    assert len(table) == 8 and set(table.outcome) <= {"grokked", "memorized", "stalled", "undecided", "diverged"}
    for r in table.itertuples():
        folder = tmp_path / "s" / "runs" / r.run_id
        assert (folder / "summary.json").exists() and (folder / "config.yaml").exists()
    continued = table[table.budget > 150]
    assert len(continued) and (continued.budget == 300).all()
    again = run_search(spec, tmp_path / "s", workers=1)
    pd.testing.assert_frame_equal(again.drop(columns="wall_seconds"), table.drop(columns="wall_seconds"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_search_on_local_ray_equals_the_local_search(tmp_path):
    pytest.importorskip("ray")
    spec = SearchSpec.parse({**REAL, "orders": [23], "max_runs": 4})
    local = run_search(spec, tmp_path / "local", workers=1)
    ray_ = run_search(spec, tmp_path / "ray", executor="ray", workers=2)
    cols = [c for c in local.columns if c not in ("wall_seconds",)]
    pd.testing.assert_frame_equal(ray_[cols], local[cols])


def test_cli_phase_search_dry_run_and_bad_specs(tmp_path, run_cli):
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps(REAL))             # JSON is YAML
    code, stdout, stderr = run_cli("phase-search", spec, "--out", tmp_path / "out", "--dry-run")
    assert code == 0 and "core-hours" in stderr and not (tmp_path / "out").exists()
    (tmp_path / "bad.yaml").write_text("orders: [23]\nbase: {group: Z5}\n")
    code, _, stderr = run_cli("phase-search", tmp_path / "bad.yaml", "--out", tmp_path / "o2")
    assert code == 2 and stderr.startswith("error: ") and "base.group" in stderr and len(stderr.splitlines()) == 1
    code, _, stderr = run_cli("phase-search", spec, "--out", tmp_path / "o3", "--executor", "dask")
    assert code == 2 and "executor" in stderr


def test_cli_phase_search_runs_and_writes_the_analysis(tmp_path, run_cli):
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({**REAL, "orders": [17, 19, 23], "max_runs": 5}))
    code, stdout, stderr = run_cli("phase-search", spec, "--out", tmp_path / "out", "--workers", "1", "--json",
                                   "--quiet")
    assert code == 0, stderr
    res = json.loads(stdout)
    assert set(res) >= {"phase", "budget", "budget_check", "grok_time", "runs"}
    assert res["budget"] == 300 and (tmp_path / "out" / "phase.png").exists()
    assert json.loads((tmp_path / "out" / "analysis.json").read_text()) == res


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_full_phase_recipe_runs_on_local_ray_with_its_width_check(tmp_path, monkeypatch):
    """The full size's code path (Ray, the M = 71 width check), at a tiny stand-in for its settings."""
    pytest.importorskip("ray")
    from li2.recipes import phase, reproduce
    tiny = {"orders": (17, 19, 23), "kappa": 8, "steps": 150, "cap": 300, "max_runs": 4,
            "base": {"lr": 0.02, "weight_decay": 1e-3, "stop_margin": 20, "checkpoint_every": 0}}
    monkeypatch.setitem(phase.SIZES, "full", tiny)
    monkeypatch.setattr(phase, "WIDTH_CHECK", {"order": 19, "kappas": (12,)})
    lines = []
    f = reproduce("phase", tmp_path / "full", size="full", workers=2, progress=lines.append)
    assert any("core-hours" in line and "ray" in line for line in lines)
    check = f["measured"]["width_check"]
    assert check["order"] == 19 and set(check["others"]) == {"12"}
    assert (tmp_path / "full" / "width-kappa12" / "results.parquet").exists()
    assert f["verdict"] in ("supports", "contradicts", "inconclusive")


def test_phase_verdict_rule():
    """The phase recipe's rule (li2.recipes.phase.RULE) on hand-made analyses; replaces the R²-based rule's test."""
    from li2.recipes.phase import verdict as verdict_rule

    def analysis(c_ci, mine="not excluded", rival="excluded", p=0.5, bracketed=(23, 31, 41, 53, 71), all_in=True,
                 stable=True, star=None):
        forms = {"c*ln(M)/M": {"status": mine, "delta": 0.0 if mine == "not excluded" else 12.0},
                 "c/sqrt(M)": {"status": rival, "delta": 8.0 if rival != "not excluded" else 0.5}}
        law = {"forms": forms, "lr_tests": {"c*ln(M)/M": {"p_value": p, "rejected": p < 0.05}},
               "criterion": "aicc", "preferred": "c*ln(M)/M"}
        return {"phase": {"bracketed_orders": list(bracketed), "bracketed": all_in, "c_ci": c_ci, "law": law,
                          "c": sum(c_ci) / 2 if c_ci else None, "unbracketed_orders": []},
                "budget_check": {"stable": stable, "budgets": [2000, 4000],
                                 "per_order": {"23": {"within_ci": stable}}},
                "grok_time": {"pc_star_law": star}}

    assert verdict_rule(analysis([2.6, 2.8]))[:2] == ("supports", {"form": "supports", "constant": "supports",
                                                                   "budget": "supports"})
    assert verdict_rule(analysis([2.6, 2.8], all_in=False))[0] == "inconclusive"
    assert verdict_rule(analysis([4.0, 4.5]))[:2] == ("contradicts", {"form": "supports", "constant": "contradicts",
                                                                      "budget": "supports"})
    assert verdict_rule(analysis([2.6, 2.8], mine="excluded", p=0.001))[1]["form"] == "contradicts"
    assert verdict_rule(analysis([2.6, 2.8], mine="disfavoured"))[1]["form"] == "inconclusive"
    assert verdict_rule(analysis([2.6, 2.8], rival="not excluded"))[1]["form"] == "inconclusive"   # cannot decide
    assert verdict_rule(analysis([2.6, 2.8], bracketed=(23, 71)))[0] == "inconclusive"
    assert verdict_rule(analysis(None))[0] == "inconclusive"
    # budget-bound p_c: the form must also hold for the budget-free p_c* of the grokking-time law
    agree = {"b": 0.65, "b_ci": [0.55, 0.7], "b_log": 0.88, "b_log_ci": [0.8, 0.94]}
    unsure = {"b": 0.75, "b_ci": [0.4, 1.1], "b_log": 1.0, "b_log_ci": [0.7, 1.3]}
    bound = analysis([2.6, 2.8], mine="excluded", p=0.001, stable=False, star=agree)
    assert verdict_rule(bound)[:2] == ("contradicts", {"form": "contradicts", "constant": "supports",
                                                       "budget": "inconclusive"})
    assert verdict_rule(analysis([2.6, 2.8], mine="excluded", p=0.001, stable=False, star=unsure))[1]["form"] \
        == "inconclusive"
    assert verdict_rule(analysis([2.6, 2.8], stable=False))[1]["form"] == "inconclusive"     # no p_c* at all
