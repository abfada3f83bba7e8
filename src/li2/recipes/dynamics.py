"""The dynamics recipe (SPEC §7.1): the three stages of one Z71 run with every diagnostic.

See li2.recipes.common for the recipe interface and li2.recipes.registry for findings.json and the sizes."""
from __future__ import annotations

import pandas as pd

from ..algebra.groups import get_group
from ..algebra.representations import isotypic_components
from ..runs.training import train
from ..store import write_parquet
from ..theory.spectra import spectrum_summary
from ..views.figures import curves_figure, dynamics_figure, pyplot, save_both, spectra_figure
from .common import Findings, RecipeContext, announce_estimate, combine, final_row

CLAIM = (
    'Training goes through three stages — lazy learning (Stage I), independent feature learning (Stage '
    'II), interactive feature learning (Stage III) — and ends with nodes that each hold one irrep, '
    'covering all irreps (paper Fig 3; docs/theory.md#stage-i--lazy-learning and the two stages after it).')
RULE = (
    "stages: supports if the model generalises (test acc >= 0.95) and all three stage boundaries are found in "
    "order lazy_end < independent_end <= interactive_end; contradicts if it generalises but a boundary is missing "
    "or out of order; inconclusive if it does not generalise within the budget. coverage: supports if the final "
    "coverage is >= 90% of the non-trivial irreps, contradicts if < 50% while generalised, else inconclusive. "
    "overall: contradicts if a part contradicts, supports if both support, else inconclusive. The share of "
    "active nodes with dominant fraction >= 0.9 is reported, not judged (it keeps rising under weight decay "
    "long after generalisation, so it depends on the step budget).")


def verdict(m: dict) -> tuple[str, dict, list[str]]:
    reasons = []
    st = m.get("stages") or {}
    lazy, ind, inter = st.get("lazy_end"), st.get("independent_end"), st.get("interactive_end")
    grokked = m.get("final_test_acc") is not None and m["final_test_acc"] >= 0.95
    if not grokked:
        stages = "inconclusive"
        reasons.append(f"did not generalise (final test acc {m.get('final_test_acc')}) → stages inconclusive")
    elif None not in (lazy, ind, inter) and lazy < ind <= inter:
        stages = "supports"
        reasons.append(f"stages found in order: lazy ends {lazy}, independent ends {ind}, interactive ends {inter}")
    else:
        stages = "contradicts"
        reasons.append(f"generalised but stages not found in order: {lazy}, {ind}, {inter}")
    cov, n_irreps = m.get("final_coverage"), m.get("n_irreps")
    if cov is None or not n_irreps:
        coverage = "inconclusive"
        reasons.append("no coverage measured")
    else:
        share = cov / n_irreps
        coverage = "supports" if share >= 0.9 else ("contradicts" if share < 0.5 and grokked else "inconclusive")
        reasons.append(f"coverage {cov:.0f} of {n_irreps} irreps ({share:.0%}) → {coverage}")
    parts = {"stages": stages, "coverage": coverage}
    return combine(parts), parts, reasons


def run(ctx: RecipeContext) -> Findings:
    """Three-stage dynamics: M = 71, K = 1024, p = 0.4, η = 2e-4, σ = x², MSE, Adam lr 2e-3, diagnostics full.

    quick: early stop 200 steps after generalising (≈ 320 steps; ≈ 40 s on 2 cores, 2–4 min when they
    are busy);
    full: 3000 steps, no early stop (≈ 8 min); smoke: Z11, K = 32, 60 steps.
    """

    cfg = dict(group="Z71", train_ratio=0.4, width=1024, weight_decay=2e-4, activation="sqr", loss="mse",
               optimizer="adam", lr=2e-3, diagnostics="full", seeds=[0], checkpoint_every=0, threads=1)
    cfg.update(ctx.pick(dict(group="Z11", width=32, train_ratio=0.6, steps=60, early_stop=True, stop_margin=10),
                        dict(steps=3000, early_stop=True, stop_margin=200),
                        dict(steps=3000, early_stop=False)))
    announce_estimate(ctx, "dynamics (Z71, K=1024, 3000 steps, full diagnostics)", 8 * 60)
    run_dir = ctx.out / "run"
    ctx.log(f"dynamics: training {cfg['group']} K={cfg['width']} p={cfg['train_ratio']} into {run_dir}")
    # the run folder keeps its own figures (curves, dynamics, spectra) except at smoke size (seconds count there)
    res = train(cfg, run_dir, resume=(run_dir / "config.yaml").exists(), figures=ctx.size != "smoke")
    model = res.summary["models"][0]
    seed = model["seed"]
    group = get_group(cfg["group"])
    comps = isotypic_components(group)
    n_irreps = len(comps.names) - 1
    W = res.params[seed]["W"]
    s = spectrum_summary(W, comps, 2)
    active = s.active[0]
    frac = s.dominant_fraction[0][active]
    share09 = float((frac >= 0.9).float().mean()) if active.any() else None
    last = final_row(res.metrics)
    metrics = res.metrics.sort_values("step")

    # one row per stage: where it starts/ends and what the diagnostics did inside it
    st = model.get("stages") or {}
    edges = [("lazy", 0, st.get("lazy_end")), ("independent", st.get("lazy_end"), st.get("independent_end")),
             ("interactive", st.get("independent_end"), st.get("interactive_end"))]
    rows = []
    for name, lo, hi in edges:
        row = {"stage": name, "start": lo, "end": hi}
        if lo is not None and hi is not None:
            seg = metrics[(metrics.step >= lo) & (metrics.step <= hi)]
            for col in ("train_acc", "test_acc", "grad_norm", "w_drift", "stage2_cosine", "coverage",
                        "mean_dominant_fraction", "offdiag_ratio", "ntk_distance"):
                if col in seg and len(seg):
                    row[f"{col}_at_end"] = float(seg[col].iloc[-1])
        rows.append(row)
    write_parquet(ctx.out / "stages.parquet", pd.DataFrame(rows))
    write_parquet(ctx.out / "metrics.parquet", metrics)

    # the run folder's figures again, as PNG and SVG in the recipe folder, plus the feature read-out
    title = f"{cfg['group']}  p={cfg['train_ratio']}  K={cfg['width']}  σ=x²  η={cfg['weight_decay']:g}"
    figs = save_both(curves_figure(metrics, res.summary, title), ctx.out, "curves")
    fig = dynamics_figure(metrics, res.summary, title)
    if fig is not None:
        figs += save_both(fig, ctx.out, "dynamics")
    if res.snapshots.get(seed):
        figs += save_both(spectra_figure(res.snapshots[seed], comps, 2, f"node spectra, seed {seed}"), ctx.out, "spectra")
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.hist(frac.numpy(), bins=20, range=(0, 1), color="C0")
    a.axvline(0.9, color="C3", ls="--", label="0.9")
    a.set(xlabel="dominant-component share of ‖w‖²", ylabel="active nodes", title="node purity at the end")
    a.legend()
    hist = s.histogram[0].numpy()
    b.bar(range(len(hist)), hist, color="C2")
    b.set(xlabel="isotypic component (0 = trivial, k = frequency)", ylabel="active nodes", title="nodes per component")
    fig.tight_layout()
    figs += save_both(fig, ctx.out, "features")

    measured = {
        "stages": st, "grok_step": model.get("grok_step"), "memorize_step": model.get("memorize_step"),
        "final_train_acc": model.get("final_train_acc"), "final_test_acc": model.get("final_test_acc"),
        "steps_trained": model.get("steps_trained"), "status": model.get("status"), "outcome": model.get("outcome"),
        "final_coverage": float(s.coverage[0]), "n_irreps": n_irreps, "n_active": int(s.n_active[0]),
        "share_active_dominant_ge_0_9": share09, "mean_dominant_fraction": float(s.mean_dominant_fraction[0]),
        "peak_grad_norm_step": int(metrics.loc[metrics.grad_norm.idxmax(), "step"]) if "grad_norm" in metrics else None,
        "max_stage2_cosine": float(metrics.stage2_cosine.max()) if "stage2_cosine" in metrics else None,
        "final_ntk_distance": last.get("ntk_distance"), "final_offdiag_ratio": last.get("offdiag_ratio"),
        "run_wall_seconds": model.get("wall_seconds"),
    }
    verdict_, parts, reasons = verdict(measured)
    headline = (f"stages end at {st.get('lazy_end')} / {st.get('independent_end')} / {st.get('interactive_end')}, "
                f"grok step {model.get('grok_step')}, coverage {measured['final_coverage']:.0f}/{n_irreps}, "
                f"{(share09 or 0):.0%} of {measured['n_active']} active nodes ≥ 0.9 one component")
    return {"claim": CLAIM,
            "expected": {"stage_order": "lazy < independent < interactive", "coverage": f"all {n_irreps} irreps",
                         "nodes": "single-irrep (dominant fraction → 1)", "ntk": "FFᵀ → a·I + b·11ᵀ"},
            "measured": measured, "headline": headline, "verdict": verdict_, "verdict_parts": parts,
            "reasons": reasons, "rule": RULE, "setup": {"training": cfg, "run_folder": "run"},
            "figures": figs, "tables": ["stages.parquet", "metrics.parquet"]}


