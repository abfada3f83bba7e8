"""Issue 15: deep MLPs and the one-layer transformer behind one interface (engine.networks), each checked
against a slow, obvious reference, trained through the same pipeline (stacked = sequential, exact resume
after SIGKILL), with their own defaults and read-outs."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from reference import one_hot_inputs, transformer_logits
from test_resume import assert_same_run, run_and_kill, run_cli

from li2.algebra.groups import get_group
from li2.algebra.representations import isotypic_components
from li2.config import MODEL_DEFAULTS, TrainConfig
from li2.engine.mlp import DeepMLP
from li2.engine.model import TwoLayerNet, init_params, make_batch
from li2.engine.networks import initial_params
from li2.engine.readouts import centred_labels, gradient_alignment, label_energy_share
from li2.engine.transformer import Transformer, transformer_init
from li2.runs.training import train
from li2.task import make_task, split
from li2.theory.layers import half_step, layer_timing
from li2.theory.spectra import embedding_spectrum

F64 = torch.float64
TINY_TRANSFORMER = dict(model="transformer", d_model=16, heads=2, d_mlp=32)
TINY_MLP = dict(model="mlp", depth=3, width=16)


def stacked(params: list[dict]) -> dict:
    return {k: torch.stack([p[k] for p in params]) for k in params[0]}


def batch_of(order: int, operands: int, ratio: float, seeds: list[int], loss: str):
    task = make_task(get_group(f"Z{order}"), operands)
    idx = torch.stack([split(task.num_samples, ratio, s)[0] for s in seeds])
    return task, make_batch(task.inputs, task.labels, idx, order, loss, F64, torch.device("cpu"))


# -- the networks against their references ------------------------------------------------------------

@pytest.mark.parametrize("operands,loss", [(2, "ce"), (3, "mse")])
def test_transformer_equals_the_plain_all_positions_transformer(operands, loss):
    """Logits and every gradient of the last-position transformer equal a plain one that computes every
    position with a causal mask (float64), model by model on a stack of two."""
    M = 7
    task, batch = batch_of(M, operands, 0.5, [0, 1], loss)
    ps = [transformer_init(M, operands, 16, 4, 24, s, dtype=F64) for s in (0, 1)]
    net = Transformer("relu", loss, M)
    ev, grads, feats = net.loss_and_grads(stacked(ps), batch)
    assert feats is None
    for b, p in enumerate(ps):
        leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
        logits = transformer_logits(leaves, batch.tokens[b], M)
        assert torch.allclose(logits, net.logits(stacked(ps), batch.tokens)[b], atol=1e-12)
        if loss == "ce":
            ref = torch.nn.functional.cross_entropy(logits, batch.labels[b])
        else:
            o = logits - logits.mean(-1, keepdim=True)
            ref = (o - batch.targets[b]).square().sum(-1).mean()
        ref.backward()
        assert math.isclose(float(ev.loss[b]), float(ref.detach()), rel_tol=1e-12)
        for k, leaf in leaves.items():
            assert torch.allclose(grads[k][b], leaf.grad, atol=1e-12), k


def test_deep_mlp_of_depth_one_is_the_two_layer_network():
    """DeepMLP (autograd) with one hidden layer = TwoLayerNet's hand-written step (fused and torch paths)."""
    M = 11
    task, batch = batch_of(M, 2, 0.6, [0, 1], "mse")
    params = stacked([init_params(M, 2, 24, 0, s, 1.0, 1.0, F64) for s in (0, 1)])
    ev, grads, feats = DeepMLP("sqr", "mse", 1).loss_and_grads(params, batch, need_F=True)
    for fused in (False, True):
        ref_ev, ref_grads, ref_feats = TwoLayerNet("sqr", "mse", fused=fused).loss_and_grads(params, batch, need_F=True)
        assert torch.allclose(ev.loss, ref_ev.loss, rtol=1e-12) and torch.equal(ev.acc, ref_ev.acc)
        for k in ("W", "V"):
            assert torch.allclose(grads[k], ref_grads[k], atol=1e-12), (fused, k)
        assert torch.allclose(feats.G, ref_feats.G, atol=1e-10)


def test_hidden_gradients_are_the_backpropagated_gradients():
    """G_L = (Ỹ − P⊥O)Vᵀ on top (mse), and G_{l−1} = (G_l ⊙ σ'(F_{l−1}U))Uᵀ below (plain ReLU MLP)."""
    M = 7
    task, batch = batch_of(M, 2, 0.7, [3], "mse")
    params = stacked([init_params(M, 2, 12, 2, 3, 1.0, 1.0, F64)])
    net = DeepMLP("relu", "mse", 3)
    _, _, feats = net.loss_and_grads(params, batch, need_F=True)
    (F1, G1), (F2, G2), (F3, G3) = feats.hidden
    X = one_hot_inputs(task.inputs[split(task.num_samples, 0.7, 3)[0]], M, F64)
    assert torch.allclose(F1[0], torch.relu(X @ params["W"][0]), atol=1e-12)
    O = F3 @ params["V"]
    assert torch.allclose(G3, (batch.targets - (O - O.mean(-1, keepdim=True))) @ params["V"].transpose(1, 2))
    for G_up, F_below, U in ((G3, F2, params["U"][:, 1]), (G2, F1, params["U"][:, 0])):
        H = F_below @ U
        expected = (G_up * (H > 0)) @ U.transpose(1, 2)
        assert torch.allclose(expected, G2 if G_up is G3 else G1, atol=1e-10)


def test_residual_mlp_trains_like_mlp2_with_extra_layers():
    """--model mlp --residual --depth L is --model mlp2 --layers L−1: the same init bit for bit, the same
    training up to the summation order of W's gradient (engine.mlp.gathered_preactivation)."""
    common = dict(group="Z7", train_ratio=0.6, steps=40, activation="relu", lr=5e-3, weight_decay=1e-4, width=16,
                  diagnostics="off", write=False, figures=False, threads=1)
    deep = train(model="mlp", depth=3, residual=True, **common)
    ref = train(model="mlp2", layers=2, **common)
    cols = [c for c in ref.metrics.columns if c != "wall_seconds"]
    assert list(deep.metrics.columns) == list(ref.metrics.columns)
    pd.testing.assert_frame_equal(deep.metrics[cols], ref.metrics[cols], rtol=1e-6, atol=1e-7)
    for k in ("W", "U", "V"):
        assert torch.allclose(deep.params[0][k], ref.params[0][k], atol=1e-6)
    for s in (0, 5):
        assert all(torch.equal(a, b) for a, b in zip(init_params(7, 2, 16, 2, s, 1.0, 1.0).values(),
                                                      initial_params(TrainConfig(model="mlp", depth=3, width=16),
                                                                     make_task(get_group("Z7")), s,
                                                                     torch.float32).values()))


@pytest.mark.parametrize("arch", [TINY_TRANSFORMER, TINY_MLP])
def test_stacked_and_sequential_runs_agree(arch):
    common = dict(group="Z11", train_ratio=0.5, steps=60, seeds=[0, 1], write=False, figures=False, threads=1, **arch)
    seq = train(execution="sequential", **common)
    stack = train(execution="stack", **common)
    cols = [c for c in seq.metrics.columns if c != "wall_seconds"]
    a, b = seq.metrics[cols].to_numpy(float), stack.metrics[cols].to_numpy(float)
    assert np.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert list(seq.metrics.columns) == list(stack.metrics.columns)
    for seed in (0, 1):
        for k, v in seq.params[seed].items():
            assert torch.allclose(v, stack.params[seed][k], atol=1e-5), (seed, k)


def test_transformer_repeats_bit_for_bit_on_two_threads():
    # large enough (n·d_model ≥ 32768) that a gather's backward by index_put_ would add in parallel with
    # atomics and differ between repeats
    common = dict(group="Z53", train_ratio=0.5, steps=20, eval_every=10, seeds=[0], write=False, figures=False,
                  threads=2, diagnostics="off", model="transformer", d_model=64, heads=4, d_mlp=128)
    first, second = train(**common), train(**common)
    for k, v in first.params[0].items():
        assert torch.equal(v, second.params[0][k]), k


# -- the same pipeline -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,arch,flags", [
    ("transformer", TINY_TRANSFORMER, ["--execution", "stack", "--seeds", "0,1"]),
    ("mlp", TINY_MLP, ["--seed", "0"])])
def test_sigkill_then_resume_is_bit_exact(tmp_path, name, arch, flags):
    """Killed (SIGKILL) after its second periodic checkpoint and resumed with --resume, a run ends exactly
    like one that was never interrupted: metrics, summary, every checkpoint (test_resume's comparison)."""
    opts = [f"--{k.replace('_', '-')}={v}" for k, v in arch.items()]
    args = ["train", "--group", "Z7", "--train-ratio", "0.6", "--steps", "240", "--checkpoint-every", "60",
            "--eval-every", "20", "--threads", "1", "--device", "cpu", "--quiet", *opts, *flags]
    ref = tmp_path / "ref"
    assert run_cli(*args, "--out", str(ref)).returncode == 0
    out = tmp_path / "run"
    unit = "seeds0-1x2" if "--seeds" in flags else "seed0"
    status = run_and_kill([*args, "--out", str(out)], out, f"checkpoints/{unit}-step00000120.safetensors", 0.0)
    assert status != 0 and not (out / "summary.json").exists()
    resumed = run_cli("train", "--resume", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(ref, out)


def test_each_model_records_its_defaults_and_refuses_options_of_another(tmp_path, run_cli):
    assert TrainConfig().model_dump() == TrainConfig(model="mlp2").model_dump()
    for model, defaults in MODEL_DEFAULTS.items():
        config = TrainConfig(model=model)
        assert {k: getattr(config, k) for k in defaults} == defaults
    assert TrainConfig(model="transformer", lr=3e-4).lr == 3e-4           # a given option wins
    code, _, err = run_cli("train", "--model", "transformer", "--group", "Z5", "--steps", "2", "--d-model", "8",
                           "--heads", "2", "--d-mlp", "8", "--out", tmp_path / "t", "--quiet")
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "t" / "config.yaml").read_text())
    assert saved["config"]["optimizer"] == "adamw" and saved["config"]["lr"] == 1e-3
    assert saved["config"]["weight_decay"] == 1.0 and saved["config"]["loss"] == "ce"
    assert saved["resolved"]["model_defaults"] == MODEL_DEFAULTS["transformer"]
    for args, word in ((["--model", "transformer", "--width", "64"], "--width"), (["--depth", "3"], "--depth"),
                       (["--model", "mlp", "--d-mlp", "8"], "--d-mlp"), (["--model", "mlp", "--layers", "1"], "--layers"),
                       (["--model", "transformer", "--optimizer", "muon"], "muon"),
                       (["--model", "transformer", "--heads", "3"], "--heads")):
        code, out, err = run_cli("train", *args, "--out", tmp_path / "x")
        assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err
        assert word in err


def test_diagnostics_that_do_not_apply_are_absent(tmp_path):
    """The transformer's metrics hold no two-layer theory columns (not NaN: absent) but the layer-wise read-outs;
    the deep MLP has both; mlp2's columns are what they always were."""
    run = train(group="Z7", train_ratio=0.6, steps=20, write=False, figures=False, threads=1, **TINY_TRANSFORMER)
    cols = set(run.metrics.columns)
    assert not cols & {"grad_norm", "stage2_cosine", "energy_mean", "ridge_distance", "w_drift", "coverage"}
    assert {"drift_embed", "drift_W_in", "grad_unembed", "key_count", "key_share"} <= cols
    assert not any(c.startswith(("drift_b_", "energy_share")) for c in cols)     # zero-init biases: no drift
    assert run.metrics.drop(columns=["test_loss", "test_acc"]).notna().all().all()
    deep = train(group="Z7", train_ratio=0.6, steps=20, write=False, figures=False, threads=1, **TINY_MLP)
    assert {"grad_norm", "w_drift", "drift_U2", "energy_share_h3", "grad_align_h1", "grad_norm_h2"} <= set(deep.metrics)
    base = train(group="Z7", train_ratio=0.6, steps=20, width=16, write=False, figures=False, threads=1)
    assert not any(c.startswith(("drift_", "key_", "energy_share")) for c in base.metrics.columns)
    layers = deep.summary["models"][0]["layers"]
    assert set(layers["drift_half_step"]) == {"W", "U1", "U2", "V"} and layers["first_moved"] in layers["drift_half_step"]
    assert set(run.summary["models"][0]["embedding"]) >= {"key", "count", "held"}


# -- the read-outs against their definitions -------------------------------------------------------------

def test_label_energy_share_and_gradient_alignment_follow_their_definitions():
    gen = torch.Generator().manual_seed(0)
    B, n, K, M = 2, 40, 6, 5
    F, G = torch.randn(B, n, K, generator=gen, dtype=F64), torch.randn(B, n, K, generator=gen, dtype=F64)
    labels = torch.randint(0, M, (B, n), generator=gen)
    for b in range(B):
        Y = torch.nn.functional.one_hot(labels[b], M).to(F64)
        Fc = F[b] - F[b].mean(0)
        P = Y @ torch.linalg.pinv(Y)                                   # projection on the label directions
        assert math.isclose(float(label_energy_share(F, labels, M)[b]), float((P @ Fc).square().sum() / Fc.square().sum()),
                            rel_tol=1e-10)
        Yt = Y - Y.mean(0)
        T = Yt @ Yt.T @ F[b]
        cos = float((G[b] * T).sum() / (G[b].norm() * T.norm()))
        assert math.isclose(float(gradient_alignment(G, F, centred_labels(labels, M, "samples", F64))[b]), cos,
                            rel_tol=1e-10)


def test_embedding_spectrum_finds_the_key_frequencies():
    M = 13
    comps = isotypic_components(get_group(f"Z{M}"))
    a = torch.arange(M, dtype=F64)
    gen = torch.Generator().manual_seed(1)
    pure = torch.stack([torch.cos(2 * math.pi * 3 * a / M + ph) for ph in torch.rand(8, generator=gen)], 1)
    spec = embedding_spectrum(pure + 0.5, comps)                    # + a constant: the trivial component
    assert spec.records()[0]["key"] == ["k=3"] and int(spec.count[0]) == 1
    assert spec.trivial_share[0] > 0.1 and math.isclose(float(spec.shares[0].sum()), 1.0)
    two = torch.cat([pure, 2 * torch.stack([torch.sin(2 * math.pi * 5 * a / M)] * 8, 1)], 1)
    assert embedding_spectrum(two, comps).records()[0]["key"] == ["k=5", "k=3"]
    noise = torch.randn(2 * M, 256, generator=gen, dtype=F64)       # two operand blocks of random rows
    assert int(embedding_spectrum(noise, comps, blocks=2).count[0]) >= 4


def test_layer_timing_reads_which_layer_moved_first():
    assert half_step([0, 10, 20, 30], [0.0, 0.2, 0.6, 1.0]) == 20 and half_step([0, 5], [1.0, 1.0]) is None
    m = pd.DataFrame({"step": [0, 10, 20, 30], "drift_W": [0, 0.1, 0.5, 1.0], "drift_V": [0, 0.9, 1.0, 1.0],
                      "energy_share_h1": [0.1, 0.1, 0.9, 0.9], "energy_share_h2": [0.1, 0.2, 0.3, 0.9]})
    out = layer_timing(m)
    assert out["drift_half_step"] == {"W": 20, "V": 10} and out["first_moved"] == "V"
    assert out["energy_half_step"] == {"h1": 20, "h2": 30} and out["first_learned"] == "h1"
    assert layer_timing(m[["step"]]) is None
    json.dumps(out)



# -- the architectures recipe's rule on hand-made numbers ------------------------------------------------

def _synthetic_phase(law, orders=(23, 31, 41, 53, 71), seeds=3):
    """Runs whose success switches exactly at p_c = law(M), on a dense grid: analyse_phase's input."""
    rows = []
    for m in orders:
        for p in np.geomspace(0.05, 0.9, 40):
            for s in range(seeds):
                rows.append({"order": m, "train_ratio": float(p), "seed": s,
                             "final_test_acc": 1.0 if p >= law(m) else 0.0})
    return pd.DataFrame(rows)


def test_architectures_rule_supports_ln_m_over_m_and_rejects_a_flat_threshold():
    from li2.recipes.architectures import judge_form, judge_peer, verdict
    from li2.studies.phase import analyse_phase
    lnm = analyse_phase(_synthetic_phase(lambda m: 3.0 * math.log(m) / m))
    flat = analyse_phase(_synthetic_phase(lambda m: 0.3 + 0.0005 * m))       # rises with M: not ln M/M at all
    assert judge_form(lnm)[0] == "supports" and abs(lnm["c"] - 3.0) < 0.2
    assert judge_form(flat)[0] == "contradicts"
    few = analyse_phase(_synthetic_phase(lambda m: 3.0 * math.log(m) / m, orders=(23, 71)))
    assert judge_form(few)[0] == "inconclusive"
    both = {"architectures": {"a": {"analysis": lnm}, "b": {"analysis": flat}}, "peer": None}
    assert verdict(both)[0] == "contradicts"
    assert verdict({"architectures": {"a": {"analysis": lnm}}, "peer": None})[0] == "supports"
    assert judge_peer({"grokked": True, "finished": True, "key_count": 5}) == "supports"
    assert judge_peer({"grokked": True, "finished": True, "key_count": 20}) == "contradicts"
    assert judge_peer({"grokked": False, "finished": True, "key_count": 5}) == "contradicts"
    assert judge_peer(None) is None
