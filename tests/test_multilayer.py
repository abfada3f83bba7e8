"""Extra residual hidden layers (x ← σ(x + x U_l)) and the zero-initialised top layer (SPEC §1, §6).

The model's layers > 0 path (autograd over gathered rows) is checked against an independent slow
implementation on dense one-hot inputs, written from the formula, one model at a time.
"""
import pytest
import torch
from reference import one_hot_inputs

import li2
from li2.algebra.groups import get_group
from li2.engine.model import TwoLayerNet, init_params, make_batch
from li2.task import make_task, split

SIGMA = {"sqr": lambda h: h * h, "relu": torch.relu, "silu": torch.nn.functional.silu}


def setup(layers, seeds=(0, 1), group="Z5", width=8, loss="mse", top_init_scale=1.0):
    task = make_task(get_group(group), 2)
    idx = torch.stack([split(task.num_samples, 0.6, s)[0] for s in seeds])
    batch = make_batch(task.inputs, task.labels, idx, task.order, loss, torch.float64, torch.device("cpu"))
    inits = [init_params(task.order, 2, width, layers, s, 1.0, top_init_scale, torch.float64) for s in seeds]
    params = {k: torch.stack([p[k] for p in inits]) for k in inits[0]}
    return task, idx, batch, params


def slow_loss(W, Us, V, X, y, order, activation, loss):
    """One model: X (n, 2M) one-hot, W (2M, K), Us list of (K, K), V (K, M)."""
    sigma = SIGMA[activation]
    h = sigma(X @ W)
    for U in Us:
        h = sigma(h + h @ U)
    O = h @ V
    if loss == "ce":
        return torch.nn.functional.cross_entropy(O, y)
    Y = torch.nn.functional.one_hot(y, order).double() - 1.0 / order
    Oc = O - O.mean(1, keepdim=True)
    return ((Oc - Y) ** 2).sum(1).mean()


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("activation", ["sqr", "relu", "silu"])
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_layer_gradients_equal_slow_one_hot_autograd(layers, activation, loss):
    task, idx, batch, params = setup(layers, loss=loss)
    net = TwoLayerNet(activation, loss, layers=layers)
    ev, grads, feats = net.loss_and_grads(params, batch, need_F=True)
    assert set(grads) == {"W", "V", "U"} and grads["U"].shape == params["U"].shape
    for b in range(idx.shape[0]):
        X = one_hot_inputs(task.inputs[idx[b]], task.order, torch.float64)
        y = task.labels[idx[b]]
        W = params["W"][b].clone().requires_grad_(True)
        V = params["V"][b].clone().requires_grad_(True)
        Us = [params["U"][b, l].clone().requires_grad_(True) for l in range(layers)]
        ref = slow_loss(W, Us, V, X, y, task.order, activation, loss)
        gW, gV, *gU = torch.autograd.grad(ref, [W, V, *Us])
        torch.testing.assert_close(ev.loss[b], ref.detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grads["W"][b], gW, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(grads["V"][b], gV, rtol=1e-8, atol=1e-10)
        for l in range(layers):
            torch.testing.assert_close(grads["U"][b, l], gU[l], rtol=1e-8, atol=1e-10)
        # the features handed to diagnostics are the top hidden layer's
        sigma = SIGMA[activation]
        h = sigma(X @ W)
        for U in Us:
            h = sigma(h + h @ U)
        torch.testing.assert_close(feats.F[b], h.detach(), rtol=1e-10, atol=1e-12)


def test_zero_top_init_gives_zero_V_and_no_hidden_gradient_at_init():
    task, idx, batch, params = setup(1, top_init_scale=0.0)
    assert torch.count_nonzero(params["V"]) == 0
    assert torch.count_nonzero(params["W"]) > 0 and torch.count_nonzero(params["U"]) > 0
    _, grads, _ = TwoLayerNet("sqr", "mse", layers=1).loss_and_grads(params, batch)
    # with V = 0 nothing flows below the top layer: only V learns in the first step
    assert torch.count_nonzero(grads["W"]) == 0 and torch.count_nonzero(grads["U"]) == 0
    assert torch.count_nonzero(grads["V"]) > 0


def test_zero_top_init_run_starts_with_v_norm_zero_and_learns():
    r = li2.train(group="Z7", train_ratio=0.7, width=16, layers=1, top_init_scale=0.0, steps=40, eval_every=10,
                  early_stop=False, diagnostics="off", write=False, figures=False)
    m = r.metrics.sort_values("step")
    assert m.v_norm.iloc[0] == 0.0
    assert m.v_norm.iloc[-1] > 0 and m.train_loss.iloc[-1] < m.train_loss.iloc[0]
    assert r.params[0]["U"].shape == (1, 16, 16)
