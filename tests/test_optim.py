"""Stacked optimisers with per-model hyperparameters against torch.optim, step for step."""
import pytest
import torch

from li2.engine.optim import Optimizer


def _grads(params, step):
    gen = torch.Generator().manual_seed(100 + step)
    return {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()}


@pytest.mark.parametrize("name,torch_cls,kwargs", [
    ("adam", torch.optim.Adam, {}),
    ("adamw", torch.optim.AdamW, {}),
    ("sgd", torch.optim.SGD, {"momentum": 0.9}),
])
def test_matches_torch_optim_per_model(name, torch_cls, kwargs):
    gen = torch.Generator().manual_seed(0)
    params = {"W": torch.randn(3, 6, 4, generator=gen, dtype=torch.float64),
              "V": torch.randn(3, 4, 5, generator=gen, dtype=torch.float64)}
    lrs, wds = [1e-2, 3e-3, 1e-1], [0.0, 1e-2, 5e-1]
    ours = {k: v.clone() for k, v in params.items()}
    opt = Optimizer(name, ours, torch.tensor(lrs, dtype=torch.float64), torch.tensor(wds, dtype=torch.float64))
    refs = []
    for b in range(3):
        leaves = [params[k][b].clone().requires_grad_(True) for k in ("W", "V")]
        refs.append((leaves, torch_cls(leaves, lr=lrs[b], weight_decay=wds[b], **kwargs)))
    for step in range(25):
        g = _grads(params, step)
        opt.step(ours, g)
        for b, (leaves, ref) in enumerate(refs):
            for leaf, k in zip(leaves, ("W", "V")):
                leaf.grad = g[k][b].clone()
            ref.step()
            for leaf, k in zip(leaves, ("W", "V")):
                torch.testing.assert_close(ours[k][b], leaf.detach(), rtol=1e-12, atol=1e-13)


def test_frozen_models_do_not_move():
    params = {"W": torch.ones(2, 3, 3), "V": torch.ones(2, 3, 2)}
    opt = Optimizer("adam", params, torch.tensor([0.1, 0.1]), torch.tensor([0.0, 0.0]))
    opt.step(params, {k: torch.ones_like(v) for k, v in params.items()}, active=torch.tensor([True, False]))
    assert not torch.equal(params["W"][0], torch.ones(3, 3))
    assert torch.equal(params["W"][1], torch.ones(3, 3))
