"""Training diagnostics against direct formulas from the theory module, and stage detection rules."""
import pandas as pd
import pytest
import torch

import li2
from li2.engine.diagnostics import Diagnostics
from li2.algebra.groups import get_group
from li2.engine.model import TwoLayerNet, init_params, make_batch
from li2.theory.stages import detect_stages
from li2.task import make_task, split
from li2.theory import backprop_gradient, cosine, gram_statistics, stage2_gradient
from li2.engine.trainer import EvalContext


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
    torch.testing.assert_close(feats.G, backprop_gradient(F, params["V"], batch.targets), rtol=1e-10, atol=1e-12)


def test_diagnostics_columns_match_direct_computation():
    task, batch, params = _setup(width=40)
    net = TwoLayerNet("sqr", "mse")
    _, _, feats = net.loss_and_grads(params, batch, need_F=True)
    W0 = params["W"] * 0.9
    cfg = li2.TrainConfig(group="Z11", width=40)
    ctx = EvalContext(0, net, params, W0, batch, feats, torch.tensor([1e-3, 1e-3]), task, cfg)
    basic = Diagnostics("basic", task)(ctx)
    full = Diagnostics("full", task)(ctx)
    G, F, Y = feats.G, feats.F, batch.targets
    torch.testing.assert_close(basic["grad_norm"], G.norm(dim=(1, 2)))
    torch.testing.assert_close(basic["w_drift"], torch.full((2,), 0.1 / 0.9, dtype=torch.float64))
    torch.testing.assert_close(basic["stage2_cosine"], cosine(G, stage2_gradient(F, Y, 1e-3)))
    E = 0.5 * (Y.transpose(1, 2) @ F).square().sum(1)
    torch.testing.assert_close(basic["energy_max"], E.max(-1).values)
    stats = gram_statistics(F)
    # K = 40 ≤ 256 sampled nodes: the basic estimate is exact
    torch.testing.assert_close(basic["offdiag_ratio"], stats["offdiag"] / stats["diag"])
    torch.testing.assert_close(full["offdiag_ratio"], basic["offdiag_ratio"])
    assert set(basic) >= {"coverage", "mean_dominant_fraction", "n_active"}
    assert "ntk_distance" in full and "ntk_distance" not in basic


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
    cols = ["grad_norm", "w_drift", "energy_mean", "energy_max", "stage2_cosine", "offdiag_ratio", "coverage"]
    pd.testing.assert_frame_equal(basic[cols], full[cols], rtol=1e-9, atol=1e-12)
