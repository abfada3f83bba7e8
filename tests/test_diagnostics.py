"""Training diagnostics against direct formulas from the theory module, and stage detection rules."""
import numpy as np
import pandas as pd
import pytest
import torch

import li2
from li2.algebra.groups import get_group
from li2.algebra.representations import isotypic_components
from li2.engine.diagnostics import Diagnostics
from li2.engine.model import TwoLayerNet, init_params, make_batch
from li2.engine.trainer import EvalContext
from li2.task import make_task, split
from li2.theory import backprop_gradient, cosine, gram_statistics, stage2_gradient
from li2.theory.stages import detect_stages

D = torch.float64


def _setup(activation="sqr", loss="mse", width=32, group="Z11"):
    task = make_task(get_group(group), 2)
    idx = torch.stack([split(task.num_samples, 0.5, s)[0] for s in (0, 1)])
    batch = make_batch(task.inputs, task.labels, idx, task.order, loss, torch.float64, torch.device("cpu"))
    inits = [init_params(task.order, 2, width, 0, s, 1.0, 1.0, torch.float64) for s in (0, 1)]
    params = {k: torch.stack([p[k] for p in inits]) for k in inits[0]}
    return task, batch, params


@pytest.mark.parametrize("activation", ["sqr", "relu", "gelu"])
def test_training_step_backprop_gradient_equals_formula(activation):
    task, batch, params = _setup(activation)
    net = TwoLayerNet(activation, "mse", block=7)     # several blocks, uneven last one
    _, _, feats = net.loss_and_grads(params, batch, need_F=True)
    F = net.features(params, batch.rows)
    torch.testing.assert_close(feats.F, F)
    # the training step's G_F is the gradient of the loss it trains (class-centred)
    torch.testing.assert_close(feats.G, backprop_gradient(F, params["V"], batch.targets, centring="classes"),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("centring", ["samples", "classes"])
def test_diagnostics_columns_match_direct_computation(centring):
    task, batch, params = _setup(width=40)
    net = TwoLayerNet("sqr", "mse")
    _, _, feats = net.loss_and_grads(params, batch, need_F=True)
    W0, V0 = params["W"] * 0.9, params["V"] * 0.8
    cfg = li2.TrainConfig(group="Z11", width=40)
    wd = torch.tensor([1e-3, 2e-3], dtype=D)
    ctx = EvalContext(0, net, params, W0, batch, feats, wd, task, cfg, V0)
    basic = Diagnostics("basic", task, centring=centring)(ctx)
    full = Diagnostics("full", task, centring=centring)(ctx)
    F, V = feats.F, params["V"]
    onehot = torch.nn.functional.one_hot(batch.labels, task.order).to(D)
    G = backprop_gradient(F, V, onehot, centring=centring)        # paper's P⊥₁(Y − FV)Vᵀ or the training G_F
    Yt = _dense_targets(onehot, centring)
    torch.testing.assert_close(basic["grad_norm"], G.norm(dim=(1, 2)))
    torch.testing.assert_close(basic["w_drift"], torch.full((2,), 0.1 / 0.9, dtype=D))
    torch.testing.assert_close(basic["v_drift"], torch.full((2,), 0.2 / 0.8, dtype=D))
    torch.testing.assert_close(basic["stage2_cosine"], cosine(G, stage2_gradient(F, onehot, 1e-3, centring=centring)))
    torch.testing.assert_close(basic["stage2_cosine"], cosine(G, Yt @ Yt.mT @ F))
    E = 0.5 * (Yt.transpose(1, 2) @ F).square().sum(1)
    torch.testing.assert_close(basic["energy_max"], E.max(-1).values)
    torch.testing.assert_close(basic["energy_mean"], E.mean(-1))
    stats = gram_statistics(F)
    # K = 40: the basic Gram is exact
    torch.testing.assert_close(basic["offdiag_ratio"], stats["offdiag"] / stats["diag"])
    torch.testing.assert_close(full["offdiag_ratio"], basic["offdiag_ratio"])
    # the run's own Stage-I limit: class-centred ridge with λ = nη/2, whatever the centring
    n = batch.size
    for b in range(2):
        Yc = onehot[b] - 1.0 / task.order
        A = F[b].T @ F[b] + float(wd[b]) * n / 2 * torch.eye(40, dtype=D)
        Vr = torch.linalg.solve(A, F[b].T @ Yc)
        torch.testing.assert_close(basic["ridge_distance"][b], (V[b] - Vr).norm() / Vr.norm())
        Vc = V[b] - V[b].mean(-1, keepdim=True)
        torch.testing.assert_close(basic["ridge_output_distance"][b], (F[b] @ (Vc - Vr)).norm() / (F[b] @ Vr).norm())
    assert set(basic) >= {"coverage", "mean_dominant_fraction", "n_active", "grad_missing_share", "missing_share"}
    assert "ntk_distance" in full and "ntk_distance" not in basic
    # accumulated block by block over uneven blocks of 7 rows during the step's own pass: the same numbers
    blocked_net = TwoLayerNet("sqr", "mse", block=7)
    diag = Diagnostics("basic", task, centring=centring)
    diag.reset(params)
    blocked_net.loss_and_grads(params, batch, on_block=diag.on_block)
    blocked = diag(EvalContext(0, blocked_net, params, W0, batch, None, wd, task, cfg, V0))
    assert set(blocked) == set(basic)
    for k in basic:
        torch.testing.assert_close(blocked[k], basic[k], rtol=1e-9, atol=1e-12, equal_nan=True, msg=k)


def _dense_targets(onehot, centring):
    n, M = onehot.shape[-2:]
    if centring == "samples":
        return (torch.eye(n, dtype=D) - torch.ones(n, n, dtype=D) / n) @ onehot
    return onehot @ (torch.eye(M, dtype=D) - torch.ones(M, M, dtype=D) / M)


@pytest.mark.parametrize("centring", ["samples", "classes"])
def test_missing_irrep_share_against_projectors(centring):
    # G_F = R Vᵀ split by the output space's isotypic projectors, G_k = R P_k Vᵀ, with dense matrices
    task, batch, params = _setup(width=24, group="Z7")
    comps = isotypic_components(task.group)
    W = params["W"].clone()
    a = torch.arange(7, dtype=D)
    W[:, :, :12] = 0.01 * W[:, :, :12]
    W[:, :7, :12] += torch.cos(2 * torch.pi * a / 7)[None, :, None]         # 12 large nodes learn k=1
    W[:, 7:, :12] += torch.cos(2 * torch.pi * a / 7 + 0.5)[None, :, None]
    params = {"W": W, "V": params["V"]}
    net = TwoLayerNet("sqr", "mse")
    _, _, feats = net.loss_and_grads(params, batch, need_F=True)
    cfg = li2.TrainConfig(group="Z7", width=24)
    ctx = EvalContext(0, net, params, W, batch, feats, torch.tensor([1e-3, 1e-3]), task, cfg, None)
    out = Diagnostics("basic", task, centring=centring)(ctx)
    P = torch.tensor(np.array(comps.projectors), dtype=D)                    # (C, M, M)
    k1 = comps.names.index("k=1")
    onehot = torch.nn.functional.one_hot(batch.labels, 7).to(D)
    F, V = feats.F, params["V"]
    R = _dense_targets(onehot - F @ V, "samples") if centring == "samples" else \
        (onehot - 1 / 7) - (F @ V) @ (torch.eye(7, dtype=D) - torch.ones(7, 7, dtype=D) / 7)
    for b in range(2):
        e = torch.stack([(R[b] @ P[c] @ V[b].T).square().sum() for c in range(len(comps.names))])[1:]
        missing = torch.ones(len(comps.names) - 1, dtype=torch.bool)
        missing[k1 - 1] = False
        torch.testing.assert_close(out["grad_missing_share"][b], e[missing].sum() / e.sum())
        dims = torch.tensor([float(torch.trace(P[c])) for c in range(len(comps.names))])[1:]
        torch.testing.assert_close(out["missing_share"][b], (dims[missing].sum() / dims.sum()).to(D))
    assert torch.isnan(out["v_drift"]).all()                                  # no V0 given


COLS = ["step", "ridge_distance", "w_drift", "stage2_cosine", "offdiag_ratio", "coverage", "test_acc"]


def _frame(rows):
    return pd.DataFrame(rows, columns=COLS)


def test_stage_rules_on_a_synthetic_history():
    # step, ridge_distance, w_drift, stage2_cosine, offdiag_ratio, coverage, test_acc
    rows = [(0, 1.0, 0.0, 0.0, 0.04, 0, 0.0), (5, 0.6, 0.02, 0.3, 0.04, 0, 0.0),
            (10, 0.25, 0.05, 0.4, 0.04, 0, 0.0),      # V close to V_ridge, W barely moved → Stage I ends
            (15, 0.2, 0.1, 0.7, 0.04, 2, 0.0),        # cosine ≥ 0.5: Stage II in effect
            (20, 0.2, 0.3, 0.9, 0.045, 5, 0.1),       # peak 0.9
            (25, 0.1, 0.5, 0.7, 0.045, 8, 0.5),       # 0.7 < 0.8 × 0.9: Stage III begins
            (30, 0.1, 0.6, 0.6, 0.04, 9, 0.97), (35, 0.1, 0.6, 0.6, 0.04, 10, 0.99), (40, 0.1, 0.6, 0.6, 0.04, 10, 1.0)]
    st = detect_stages(_frame(rows))
    assert {k: st[k] for k in ("lazy_end", "independent_end", "interactive_end")} == \
        {"lazy_end": 10, "independent_end": 25, "interactive_end": 35}
    assert st["independent_start"] == 15 and st["stage3_signal"] == "cosine_drop"
    assert st["lazy_w_drift"] == 0.05 and st["lazy_clean"] is True
    rows[2] = (10, 0.25, 0.4, 0.4, 0.04, 0, 0.0)           # W had moved 40% when V fitted: reported
    st = detect_stages(_frame(rows))
    assert st["lazy_end"] == 10 and st["lazy_clean"] is False


def test_each_interaction_signal_can_start_stage_three():
    base = [(0, 1.0, 0.0, 0.0, 0.04, 0, 0.0), (5, 0.2, 0.05, 0.8, 0.04, 0, 0.0), (10, 0.2, 0.1, 0.8, 0.04, 1, 0.0)]
    repulsion = _frame(base + [(15, 0.2, 0.2, 0.8, 0.051, 3, 0.0), (20, 0.2, 0.2, 0.8, 0.05, 3, 0.0)])
    st = detect_stages(repulsion)
    assert st["independent_end"] == 15 and st["stage3_signal"] == "repulsion" and st["interactive_end"] == 15
    m = _frame(base + [(15, 0.2, 0.2, 0.8, 0.04, 3, 0.0), (20, 0.2, 0.2, 0.8, 0.04, 4, 0.0)])
    m["grad_missing_share"] = [1.0, 1.0, 0.9, 0.5, 0.2]
    m["missing_share"] = [1.0, 1.0, 0.9, 0.4, 0.1]        # 0.2 ≥ 1.5 × 0.1 at step 20
    st = detect_stages(m)
    assert st["independent_end"] == 20 and st["stage3_signal"] == "modulation"


def test_stages_are_none_when_conditions_never_hold():
    rows = [(0, 1.0, 0.0, 0.1, 0.04, 0, 0.0), (5, 0.9, 0.2, 0.2, 0.04, 0, 0.0)]
    st = detect_stages(_frame(rows))
    assert {k: st[k] for k in ("lazy_end", "independent_end", "interactive_end")} == \
        {"lazy_end": None, "independent_end": None, "interactive_end": None}
    rows = [(0, 1.0, 0.0, 0.1, 0.04, 0, 0.0), (5, 0.2, 0.2, 0.3, 0.04, 0, 0.0), (10, 0.2, 0.2, 0.4, 0.04, 0, 0.0)]
    st = detect_stages(_frame(rows))                      # V fitted, but the cosine never reaches 0.5
    assert st["lazy_end"] == 5 and st["independent_start"] is None and st["independent_end"] is None


def test_stage_boundaries_ignore_test_accuracy():
    r = li2.train(group="Z23", width=128, train_ratio=0.6, steps=400, lr=5e-3, weight_decay=1e-3,
                  diagnostics="basic", write=False, early_stop=False)
    m = r.metrics.sort_values("step")
    noisy = m.assign(test_acc=np.random.default_rng(0).random(len(m)), test_loss=np.random.default_rng(1).random(len(m)))
    assert detect_stages(m) == detect_stages(noisy)
    assert detect_stages(m.drop(columns=["test_acc", "test_loss"])) == detect_stages(m)
    assert detect_stages(m)["lazy_end"] is not None     # the run does fit: the comparison is not vacuous


def test_run_records_diagnostics_and_stages():
    # Since issue 11 the stages come from V's distance to V_ridge and the Stage-II cosine, not from
    # train/test accuracy. This learned-V Adam run (lr 5e-3) learns its features long before V fits
    # (coverage complete at step 30, ridge distance ≤ 0.3 only at step 50, when the cosine has already
    # fallen): there is no separate Stage II after Stage I, and the detector says so (None).
    r = li2.train(group="Z23", width=128, train_ratio=0.6, steps=300, lr=5e-3, weight_decay=1e-3,
                  diagnostics="basic", write=False)
    assert {"grad_norm", "w_drift", "coverage", "stage2_cosine", "ridge_distance"} <= set(r.metrics.columns)
    st = r.summary["models"][0]["stages"]
    assert st["lazy_end"] is not None and st["lazy_clean"] is False
    found = [v for v in (st["lazy_end"], st["independent_end"], st["interactive_end"]) if v is not None]
    assert found == sorted(found)
    # The exact Stage-I limit (V = V_ridge at every step) shows all three stages, in order.
    r = li2.train(group="Z23", width=128, train_ratio=0.6, steps=300, lr=5e-3, weight_decay=1e-3,
                  diagnostics="basic", write=False, top_layer="ridge")
    st = r.summary["models"][0]["stages"]
    vals = [st["lazy_end"], st["independent_end"], st["interactive_end"]]
    assert None not in vals and vals == sorted(vals) and st["lazy_clean"] is True


def test_block_accumulated_basic_equals_whole_tensor_full():
    kw = dict(group="Z11", width=40, train_ratio=0.5, steps=20, eval_every=5, dtype="float64", write=False,
              early_stop=False)
    basic = li2.train(diagnostics="basic", **kw).metrics
    full = li2.train(diagnostics="full", **kw).metrics
    cols = ["grad_norm", "w_drift", "energy_mean", "energy_max", "stage2_cosine", "offdiag_ratio", "coverage",
            "v_drift", "ridge_distance", "ridge_output_distance", "grad_missing_share", "missing_share"]
    pd.testing.assert_frame_equal(basic[cols], full[cols], rtol=1e-9, atol=1e-12)


def test_diagnostics_on_the_lanes_equal_the_inline_run():
    # Two threads: the blocks' statistics and the columns' tasks run side by side on the fused step's
    # lanes; one thread: the same pieces one after another. Every metric must be bit-identical.
    from li2.config import TrainConfig, build_task
    from li2.engine.diagnostics import hooks_for
    from li2.engine.trainer import Trainer, inline, on_lanes

    cfg = TrainConfig(group="Z23", width=96, train_ratio=0.5, steps=40, eval_every=5, early_stop=False)
    task, ratio = build_task(cfg)
    threads = torch.get_num_threads()
    runs = {}
    try:
        for n in (2, 1):
            torch.set_num_threads(n)
            trainer = Trainer(cfg, task, [0, 1], ratio, torch.device("cpu"), hooks=hooks_for(cfg, task))
            rows = trainer.run().rows
            runs[n] = (trainer.run_tasks, rows)
    finally:
        torch.set_num_threads(threads)
    assert runs[2][0] is on_lanes and runs[1][0] is inline
    two, one = (pd.DataFrame(r).drop(columns="wall_seconds") for _, r in (runs[2], runs[1]))
    assert {"ridge_distance", "grad_missing_share", "offdiag_ratio", "coverage"} <= set(two.columns)
    assert two["ridge_distance"].notna().all()
    pd.testing.assert_frame_equal(two, one, check_exact=True)


def test_accumulated_columns_equal_the_stateful_hook():
    # begin / block_part / add / columns (what the trainer drives) against reset / on_block / __call__
    task, batch, params = _setup(width=40)
    cfg = li2.TrainConfig(group="Z11", width=40)
    net = TwoLayerNet("sqr", "mse", block=9)
    wd = torch.tensor([1e-3, 2e-3], dtype=D)
    ctx = EvalContext(0, net, params, params["W"] * 0.9, batch, None, wd, task, cfg, params["V"] * 1.1)
    stateful = Diagnostics("basic", task)
    stateful.reset(params)
    net.loss_and_grads(params, batch, on_block=stateful.on_block)
    expected = stateful(ctx)
    hook = Diagnostics("basic", task)
    acc = hook.begin(params)
    parts = []
    net.loss_and_grads(params, batch, on_block=lambda *blk: parts.append(hook.block_part(acc, *blk)))
    assert len(parts) > 1
    for part in parts:
        hook.add(acc, part)
    got = hook.columns(ctx, acc, run=lambda tasks: [t() for t in reversed(tasks)][::-1])   # tasks in any order
    assert list(got) == list(expected)   # the metrics' column order
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0, equal_nan=True, msg=k)
