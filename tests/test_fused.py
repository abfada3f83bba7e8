"""The fused CPU step (numba kernels between BLAS GEMMs, in lanes) against the slow references:
one-hot inputs + autograd for the gradients, torch ops for the optimiser, and itself across thread
counts, stacks and repeated runs (bit for bit)."""
import pytest
import torch
from test_model import reference_loss, stacked_setup

from li2.config import TrainConfig, build_task
from li2.engine import kernels, optim
from li2.engine.model import TwoLayerNet
from li2.engine.optim import Optimizer
from li2.engine.trainer import Trainer, evaluation_subset

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")
ACTIVATIONS = ["sqr", "relu", "silu", "relusqr", "gelu"]


@pytest.mark.parametrize("blas", ["numpy", "torch"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_fused_float32_step_equals_autograd_on_one_hot(blas, activation, loss):
    """float32 kernels against the float64 one-hot reference: within 1e-5."""
    task, idx, batch, params = stacked_setup(group="Z11", width=48, loss=loss, dtype=torch.float32)
    net = TwoLayerNet(activation, loss, blas=blas)
    ev, grads, _ = net.loss_and_grads(params, batch)
    assert net.fused.blas == blas
    leaves = {k: v.double().requires_grad_(True) for k, v in params.items()}
    ref = reference_loss(leaves, task, idx, activation, loss)
    ref_grads = torch.autograd.grad(ref.sum(), [leaves["W"], leaves["V"]])
    torch.testing.assert_close(ev.loss.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads["W"].double(), ref_grads[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads["V"].double(), ref_grads[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("blas", ["numpy", "torch"])
def test_fused_matches_torch_ops_path_and_hooks_see_every_row_once(blas):
    task, idx, batch, params = stacked_setup(group="Z13", width=40, seeds=(0, 1, 2))
    fast, ops = TwoLayerNet("sqr", "mse", blas=blas), TwoLayerNet("sqr", "mse", fused=False)
    seen = []
    ev, grads, feats = fast.loss_and_grads(params, batch, need_F=True,
                                           on_block=lambda chunk, F, D, s: seen.append((chunk.labels, F, D * s)))
    ev2, grads2, feats2 = ops.loss_and_grads(params, batch, need_F=True)
    torch.testing.assert_close(ev.loss, ev2.loss, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(ev.acc, ev2.acc)
    for k in grads:
        torch.testing.assert_close(grads[k], grads2[k], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(feats.F, feats2.F, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(feats.G, feats2.G, rtol=1e-10, atol=1e-12)
    # the blocks handed to the hook cover the rows in order, with G_F = scale·D
    assert torch.equal(torch.cat([s[0] for s in seen], 1), batch.labels)
    torch.testing.assert_close(torch.cat([s[1] for s in seen], 1), feats2.F)
    torch.testing.assert_close(torch.cat([s[2] for s in seen], 1), feats2.G, rtol=1e-10, atol=1e-12)
    ev3 = fast.evaluate(params, batch)
    torch.testing.assert_close(ev3.loss, ev.loss)
    assert torch.equal(ev3.acc, ev.acc)


@pytest.mark.parametrize("blas", ["numpy", "torch"])
def test_lanes_make_results_independent_of_thread_count(blas):
    task, idx, batch, params = stacked_setup(group="Z23", width=64, seeds=(0,), ratio=0.6, dtype=torch.float32)
    one = TwoLayerNet("sqr", "mse", blas=blas, threads=1).loss_and_grads(params, batch)
    two = TwoLayerNet("sqr", "mse", blas=blas, threads=2).loss_and_grads(params, batch)
    assert torch.equal(one[0].loss, two[0].loss)
    for k in one[1]:
        assert torch.equal(one[1][k], two[1][k])


@pytest.mark.parametrize("name", ["adam", "adamw"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_adam_equals_torch_ops(name, dtype, monkeypatch):
    gen = torch.Generator().manual_seed(0)
    params = {"W": torch.randn(2, 6, 4, generator=gen).to(dtype), "V": torch.randn(2, 4, 5, generator=gen).to(dtype)}
    copies = {k: v.clone() for k, v in params.items()}
    lr, wd = torch.tensor([1e-2, 3e-3], dtype=torch.float64), torch.tensor([1e-2, 0.5], dtype=torch.float64)
    fused, plain = Optimizer(name, params, lr, wd), Optimizer(name, copies, lr, wd)
    for step in range(30):
        g = {k: torch.randn(v.shape, generator=gen).to(dtype) for k, v in params.items()}
        fused.step(params, g)
        monkeypatch.setattr(optim, "FUSED_ADAM", False)
        plain.step(copies, g)
        monkeypatch.setattr(optim, "FUSED_ADAM", True)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    for k in params:
        torch.testing.assert_close(params[k], copies[k], **tol)
        torch.testing.assert_close(fused.state[f"{k}.exp_avg_sq"], plain.state[f"{k}.exp_avg_sq"], **tol)


def _train(seeds, **kw):
    cfg = TrainConfig(group="Z23", width=64, steps=120, eval_every=20, seeds=seeds, early_stop=False,
                      checkpoint_every=0, **kw)
    task, ratio = build_task(cfg)
    return Trainer(cfg, task, cfg.seeds, ratio, torch.device("cpu")).run()


def test_same_seed_twice_is_bit_identical_and_stack_equals_one_model_at_a_time():
    a, b = _train([0, 1]), _train([0, 1])
    assert a.rows == [{**r, "wall_seconds": s["wall_seconds"]} for r, s in zip(b.rows, a.rows)]
    single = _train([1])
    stacked_rows = [r for r in a.rows if r["seed"] == 1]
    for r, s in zip(stacked_rows, single.rows):
        assert {k: v for k, v in r.items() if k != "wall_seconds"} == {k: v for k, v in s.items() if k != "wall_seconds"}
    assert torch.equal(a.params["W"][1], single.params["W"][0])


def test_test_subset_is_fixed_by_seed_and_the_final_evaluation_uses_the_whole_test_set():
    idx = torch.arange(1000).view(2, 500) * 3
    sub = evaluation_subset(idx, [4, 5], 100)
    assert sub.shape == (2, 100) and torch.equal(sub, evaluation_subset(idx, [4, 5], 100))
    assert all(set(sub[i].tolist()) <= set(idx[i].tolist()) for i in range(2))
    assert torch.equal(sub[0], sub[0].sort().values) and not torch.equal(sub[0] // 3, sub[1] // 3 - 500)
    assert evaluation_subset(idx, [4, 5], 0) is idx and evaluation_subset(idx, [4, 5], 500) is idx
    cfg = TrainConfig(group="Z23", width=64, steps=40, eval_every=10, early_stop=False, checkpoint_every=0,
                      test_subset=50)
    task, ratio = build_task(cfg)
    trainer = Trainer(cfg, task, [0], ratio, torch.device("cpu"))
    assert trainer.test_during.size == 50 and trainer.test.size > 50
    rows = trainer.run().rows
    whole = trainer.model.evaluate(trainer.params, trainer.test)
    assert rows[-1]["test_acc"] == float(whole.acc[0])
    assert all(abs(r["test_acc"] * 50 - round(r["test_acc"] * 50)) < 1e-9 for r in rows[:-1])


def test_torch_ops_path_trains_the_same_model():
    """The path CUDA (or a machine without numba) takes, run on the CPU: same metrics in float64."""
    cfg = TrainConfig(group="Z23", width=64, steps=120, eval_every=20, early_stop=False, checkpoint_every=0,
                      dtype="float64", test_subset=100)
    task, ratio = build_task(cfg)
    fused = Trainer(cfg, task, [0], ratio, torch.device("cpu"))
    ops = Trainer(cfg, task, [0], ratio, torch.device("cpu"))
    ops.model.fused = None
    assert fused.model.uses_fused(torch.device("cpu")) and not ops.model.uses_fused(torch.device("cpu"))
    a, b = fused.run(), ops.run()
    for r, s in zip(a.rows, b.rows):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "w_norm", "v_norm"):
            assert abs(r[key] - s[key]) <= 1e-8 * max(1.0, abs(s[key])), (key, r, s)
    torch.testing.assert_close(a.params["W"], b.params["W"], rtol=1e-8, atol=1e-10)


def test_an_early_stopped_model_ends_with_the_whole_test_set():
    cfg = TrainConfig(group="Z23", width=64, train_ratio=0.6, lr=5e-3, weight_decay=1e-3, steps=1500,
                      eval_every=10, stop_margin=20, checkpoint_every=0, test_subset=60, diagnostics="off")
    task, ratio = build_task(cfg)
    trainer = Trainer(cfg, task, [0], ratio, torch.device("cpu"))
    result = trainer.run()
    assert result.status == ["early_stop"] and result.stopped_step[0] < cfg.steps
    whole = trainer.model.evaluate(trainer.params, trainer.test)
    subset = trainer.model.evaluate(trainer.params, trainer.test_during)
    assert result.rows[-1]["test_loss"] == float(whole.loss[0]) != float(subset.loss[0])
    assert result.rows[-1]["test_acc"] == float(whole.acc[0])
    assert all(abs(r["test_acc"] * 60 - round(r["test_acc"] * 60)) < 1e-9 for r in result.rows[:-1])
