"""The hand-written two-layer network against slow, obvious one-hot + autograd versions."""
import pytest
import torch
from reference import one_hot_inputs

from li2.algebra.groups import get_group
from li2.engine.model import TwoLayerNet, hidden_preactivation, init_params, make_batch
from li2.task import make_task, split


def stacked_setup(group="Z7", operands=2, width=16, seeds=(0, 1), ratio=0.5, loss="mse", dtype=torch.float64):
    task = make_task(get_group(group), operands)
    idx = torch.stack([split(task.num_samples, ratio, s)[0] for s in seeds])
    batch = make_batch(task.inputs, task.labels, idx, task.order, loss, dtype, torch.device("cpu"))
    inits = [init_params(task.order, operands, width, 0, s, 1.0, 1.0, dtype) for s in seeds]
    params = {k: torch.stack([p[k] for p in inits]) for k in inits[0]}
    return task, idx, batch, params


def reference_loss(params, task, idx, activation, loss):
    """Per-model loss from one-hot inputs, nn.functional activations and autograd-able ops."""
    sigma = {"sqr": lambda h: h**2, "relu": torch.relu, "silu": torch.nn.functional.silu,
             "relusqr": lambda h: torch.relu(h) ** 2, "gelu": torch.nn.functional.gelu}[activation]
    out = []
    for b in range(idx.shape[0]):
        X = one_hot_inputs(task.inputs[idx[b]], task.order, torch.float64)
        O = sigma(X @ params["W"][b]) @ params["V"][b]
        y = task.labels[idx[b]]
        if loss == "mse":
            Y = torch.nn.functional.one_hot(y, task.order).double() - 1.0 / task.order
            P = torch.eye(task.order, dtype=torch.float64) - 1.0 / task.order
            out.append(((O @ P - Y) ** 2).sum(1).mean())
        else:
            out.append(torch.nn.functional.cross_entropy(O, y))
    return torch.stack(out)


@pytest.mark.parametrize("operands", [2, 3])
def test_gather_forward_equals_one_hot_product(operands):
    task, idx, batch, params = stacked_setup(group="Z5", operands=operands)
    H = hidden_preactivation(params["W"], batch.rows)
    for b in range(idx.shape[0]):
        X = one_hot_inputs(task.inputs[idx[b]], task.order, torch.float64)
        torch.testing.assert_close(H[b], X @ params["W"][b], rtol=1e-12, atol=1e-12)


PATHS = {"numpy": dict(blas="numpy"), "torch": dict(blas="torch"), "ops": dict(fused=False)}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("activation", ["sqr", "relu", "silu", "relusqr", "gelu"])
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_hand_gradients_equal_autograd_on_one_hot(activation, loss, path):
    """Every path: fused CPU kernels with either BLAS, and the torch-ops path (CUDA, no numba)."""
    task, idx, batch, params = stacked_setup(loss=loss)
    net = TwoLayerNet(activation, loss, **PATHS[path])
    ev, grads, _ = net.loss_and_grads(params, batch)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    ref = reference_loss(leaves, task, idx, activation, loss)
    ref_grads = torch.autograd.grad(ref.sum(), [leaves["W"], leaves["V"]])
    torch.testing.assert_close(ev.loss, ref.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads["W"], ref_grads[0], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(grads["V"], ref_grads[1], rtol=1e-8, atol=1e-10)


def test_models_in_a_stack_are_independent():
    task, idx, batch, params = stacked_setup(seeds=(0, 1, 2))
    net = TwoLayerNet("sqr", "mse")
    _, grads, _ = net.loss_and_grads(params, batch)
    for b in range(3):
        single = make_batch(task.inputs, task.labels, idx[b:b + 1], task.order, "mse", torch.float64,
                            torch.device("cpu"))
        _, g1, _ = net.loss_and_grads({k: v[b:b + 1] for k, v in params.items()}, single)
        torch.testing.assert_close(grads["W"][b], g1["W"][0], rtol=1e-12, atol=1e-13)


def test_accuracy_and_eval_match_training_forward():
    task, idx, batch, params = stacked_setup()
    net = TwoLayerNet("sqr", "mse")
    ev, _, _ = net.loss_and_grads(params, batch)
    ev2 = net.evaluate(params, batch)
    torch.testing.assert_close(ev.loss, ev2.loss)
    torch.testing.assert_close(ev.acc, ev2.acc)


def test_init_depends_only_on_seed_and_scales():
    a = init_params(11, 2, 8, 0, seed=3, init_scale=1.0, top_init_scale=1.0)
    b = init_params(11, 2, 8, 0, seed=3, init_scale=1.0, top_init_scale=0.0)
    assert torch.equal(a["W"], b["W"]) and not b["V"].any()
    assert a["W"].abs().max() <= 1 / (22 ** 0.5)
    assert a["V"].abs().max() <= 1 / (8 ** 0.5)
