"""`--top-layer ridge`: V is the ridge solution of the current features at every step (SPEC §2)."""
import torch

import li2
from li2.theory import ridge_top_layer


def test_v_equals_ridge_solution_at_every_step():
    checked = []

    def hook(ctx):
        F = ctx.model.features(ctx.params, ctx.train.rows)
        lam = ctx.weight_decay * ctx.train.size / 2.0
        expected = ridge_top_layer(F, ctx.train.targets, lam, centring="classes")   # the run's own loss
        torch.testing.assert_close(ctx.params["V"], expected, rtol=1e-6, atol=1e-8)
        checked.append(ctx.step)
        return {}

    r = li2.train(group="Z7", width=12, train_ratio=0.6, steps=15, eval_every=1, top_layer="ridge",
                  weight_decay=1e-2, lr=1e-2, dtype="float64", write=False, hooks=(hook,), early_stop=False)
    assert checked == list(range(16))
    assert r.summary["models"][0]["status"] == "completed"


def test_ridge_mode_needs_mse(run_cli, tmp_path):
    code, _, err = run_cli("train", "--top-layer", "ridge", "--loss", "ce", "--quiet", "--out", tmp_path / "x")
    assert code == 2 and "mse" in err
