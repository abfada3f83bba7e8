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
    _, grads, feats = net.loss_and_grads(params, batch, need_F=True)
    W0, V0 = params["W"] * 0.9, params["V"] * 0.8
    cfg = li2.TrainConfig(group="Z11", width=40)
    wd = torch.tensor([1e-3, 2e-3], dtype=D)
    ctx = EvalContext(0, net, params, W0, batch, feats, wd, task, cfg, grads, V0)
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
    _, grads_b, _ = blocked_net.loss_and_grads(params, batch, on_block=diag.on_block)
    blocked = diag(EvalContext(0, blocked_net, params, W0, batch, None, wd, task, cfg, grads_b, V0))
    assert set(blocked) == set(basic)
    for k in basic:
        torch.testing.assert_close(blocked[k], basic[k], rtol=1e-9, atol=1e-12, equal_nan=True, msg=k)


def _dense_targets(onehot, centring):
    n, M = onehot.shape[-2:]
    if centring == "samples":
        return (torch.eye(n, dtype=D) - torch.ones(n, n, dtype=D) / n) @ onehot
    return onehot @ (torch.eye(M, dtype=D) - torch.ones(M, M, dtype=D) / M)


def test_missing_irrep_share_against_projectors():
    # the W-gradient's share in the components no learned node covers, from the dense projectors
    task, batch, params = _setup(width=24, group="Z7")
    comps = isotypic_components(task.group)
    W = params["W"].clone()
    a = torch.arange(7, dtype=D)
    W[:, :, :12] = 0.01 * W[:, :, :12]
    W[:, :7, :12] += torch.cos(2 * torch.pi * a / 7)[None, :, None]         # 12 large nodes learn k=1
    W[:, 7:, :12] += torch.cos(2 * torch.pi * a / 7 + 0.5)[None, :, None]
    params = {"W": W, "V": params["V"]}
    net = TwoLayerNet("sqr", "mse")
    _, grads, feats = net.loss_and_grads(params, batch, need_F=True)
    cfg = li2.TrainConfig(group="Z7", width=24)
    ctx = EvalContext(0, net, params, W, batch, feats, torch.tensor([1e-3, 1e-3]), task, cfg, grads, None)
    out = Diagnostics("basic", task)(ctx)
    P = torch.tensor(np.array(comps.projectors), dtype=D)                          # (C, M, M)
    k1 = comps.names.index("k=1")
    for b in range(2):
        dW = grads["W"][b].reshape(2, 7, 24)
        e = torch.stack([(P[c] @ dW).square().sum() for c in range(len(comps.names))])[1:]
        missing = torch.ones(len(comps.names) - 1, dtype=torch.bool)
        missing[k1 - 1] = False
        torch.testing.assert_close(out["grad_missing_share"][b], e[missing].sum() / e.sum())
        dims = torch.tensor([float(torch.trace(P[c])) for c in range(len(comps.names))])[1:]
        torch.testing.assert_close(out["missing_share"][b], (dims[missing].sum() / dims.sum()).to(D))
    assert torch.isnan(out["v_drift"]).all()                                  # no V0 given


def _frame(rows):
    return pd.DataFrame(rows, columns=["step", "train_acc", "test_acc", "stage2_cosine", "coverage"])


def test_stage_rules_on_a_synthetic_history():
    rows = [(0, 0.0, 0.0, 0.0, 0), (5, 0.5, 0.0, 0.5, 0), (10, 0.95, 0.0, 0.85, 3), (15, 1.0, 0.1, 0.88, 5),
            (20, 1.0, 0.5, 0.7, 5), (25, 1.0, 0.97, 0.6, 5), (30, 1.0, 0.99, 0.6, 5)]
    assert detect_stages(_frame(rows)) == {"lazy_end": 10, "independent_end": 20, "interactive_end": 25}


def test_stages_are_none_when_conditions_never_hold():
    rows = [(0, 0.0, 0.0, 0.1, 0), (5, 0.2, 0.0, 0.2, 0)]
    assert detect_stages(_frame(rows)) == {"lazy_end": None, "independent_end": None, "interactive_end": None}


def test_run_records_diagnostics_and_stages():
    r = li2.train(group="Z23", width=128, train_ratio=0.6, steps=300, lr=5e-3, weight_decay=1e-3,
                  diagnostics="basic", write=False)
    assert {"grad_norm", "w_drift", "coverage", "stage2_cosine"} <= set(r.metrics.columns)
    st = r.summary["models"][0]["stages"]
    vals = [st["lazy_end"], st["independent_end"], st["interactive_end"]]
    assert None not in vals and vals == sorted(vals)


def test_block_accumulated_basic_equals_whole_tensor_full():
    kw = dict(group="Z11", width=40, train_ratio=0.5, steps=20, eval_every=5, dtype="float64", write=False,
              early_stop=False)
    basic = li2.train(diagnostics="basic", **kw).metrics
    full = li2.train(diagnostics="full", **kw).metrics
    cols = ["grad_norm", "w_drift", "energy_mean", "energy_max", "stage2_cosine", "offdiag_ratio", "coverage",
            "v_drift", "ridge_distance", "ridge_output_distance", "grad_missing_share", "missing_share"]
    pd.testing.assert_frame_equal(basic[cols], full[cols], rtol=1e-9, atol=1e-12)
