"""End-to-end runs of the engine: determinism, stacking, run folder, CLI errors."""
import json

import pandas as pd
import pytest
import torch

import li2
from li2.theory.outcomes import grok_step

TINY = dict(group="Z7", width=24, steps=40, train_ratio=0.6, diagnostics="off", lr=1e-2, eval_every=5)
COLUMNS = ["step", "seed", "train_loss", "train_acc", "test_loss", "test_acc", "w_norm", "v_norm"]


def test_stacked_equals_sequential_equals_single():
    stacked = li2.train(seeds=[0, 1, 2], execution="stack", write=False, early_stop=False, **TINY)
    seq = li2.train(seeds=[0, 1, 2], execution="sequential", write=False, early_stop=False, **TINY)
    for s in (0, 1, 2):
        single = li2.train(seeds=[s], write=False, early_stop=False, **TINY)
        a = stacked.metrics[stacked.metrics.seed == s][COLUMNS].reset_index(drop=True)
        b = single.metrics[COLUMNS].reset_index(drop=True)
        c = seq.metrics[seq.metrics.seed == s][COLUMNS].reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, rtol=1e-5, atol=1e-5)
        pd.testing.assert_frame_equal(c, b, check_exact=True)
        torch.testing.assert_close(stacked.params[s]["W"], single.params[s]["W"], rtol=1e-4, atol=1e-5)


def test_same_run_twice_is_identical(tmp_path):
    a = li2.train(out=tmp_path / "a", seeds=[0, 1], **TINY)
    li2.train(out=tmp_path / "b", seeds=[0, 1], **TINY)
    ma = pd.read_parquet(tmp_path / "a" / "metrics.parquet")
    mb = pd.read_parquet(tmp_path / "b" / "metrics.parquet")
    pd.testing.assert_frame_equal(ma[COLUMNS], mb[COLUMNS], check_exact=True)
    assert a.summary["models"][0].keys() >= {"seed", "final_train_acc", "final_test_acc", "grok_step",
                                             "memorize_step", "wall_seconds", "status"}


def test_run_folder_contents(tmp_path, run_cli):
    out = tmp_path / "run"
    code, stdout, err = run_cli("train", "--group", "Z7", "--width", "16", "--steps", "30", "--seeds", "0-1",
                                "--diagnostics", "off", "--checkpoint-every", "10", "--out", out, "--json", "--quiet")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert [m["seed"] for m in summary["models"]] == [0, 1]
    for name in ("config.yaml", "metrics.parquet", "summary.json", "curves.png"):
        assert (out / name).stat().st_size > 0
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "seed0-final.safetensors" in ckpts and "seed0-step00000010.safetensors" in ckpts
    m = pd.read_parquet(out / "metrics.parquet")
    assert set(COLUMNS) <= set(m.columns) and set(m.seed) == {0, 1}
    cfg = (out / "config.yaml").read_text()
    assert "li2:" in cfg and "seeds:" in cfg and "train_size:" in cfg


def test_cli_seeds_equal_single_seed_runs(tmp_path, run_cli):
    args = ["train", "--group", "Z11", "--width", "32", "--steps", "60", "--diagnostics", "off", "--quiet",
            "--json", "--train-ratio", "0.5"]
    code, out, _ = run_cli(*args, "--seeds", "0-2", "--out", tmp_path / "all")
    assert code == 0
    both = pd.read_parquet(tmp_path / "all" / "metrics.parquet")
    for s in range(3):
        code, _, _ = run_cli(*args, "--seed", s, "--out", tmp_path / f"s{s}")
        one = pd.read_parquet(tmp_path / f"s{s}" / "metrics.parquet")
        mine = both[both.seed == s].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine[COLUMNS], one[COLUMNS], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("args,needle", [
    (["--group", "Z1"], "group"),
    (["--group", "banana"], "unknown group"),
    (["--train-ratio", "0"], "train ratio"),
    (["--train-ratio", "1.01"], "train ratio"),
    (["--train-ratio", "critical:x"], "train-ratio"),
    (["--width", "0"], "--width"),
    (["--steps", "0"], "--steps"),
    (["--activation", "tanh"], "--activation"),
    (["--loss", "hinge"], "--loss"),
    (["--optimizer", "lbfgs"], "--optimizer"),
    (["--device", "tpu"], "--device"),
    (["--width", "many"], "width"),
    (["--no-such-option"], "no-such-option"),
])
def test_bad_input_exits_2_with_one_line(args, needle, run_cli, tmp_path):
    code, out, err = run_cli("train", "--quiet", "--steps", "2", *args, "--out", tmp_path / "x")
    assert code == 2
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert "Traceback" not in err


def test_out_dir_holding_another_run_is_untouched(tmp_path, run_cli):
    out = tmp_path / "r"
    assert run_cli("train", "--group", "Z5", "--width", "8", "--steps", "5", "--quiet", "--diagnostics", "off",
                   "--out", out)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = run_cli("train", "--group", "Z5", "--width", "9", "--steps", "5", "--quiet", "--out", out)
    assert code == 2 and "different run" in err
    code, _, err = run_cli("train", "--group", "Z5", "--width", "8", "--steps", "5", "--quiet", "--diagnostics",
                           "off", "--out", out)
    assert code == 2 and "--resume" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, _, err = run_cli("train", "--quiet", "--out", tmp_path / "other")
    assert code == 2 and "not empty" in err
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_grok_step_rule():
    assert grok_step([0, 5, 10, 15], [0.1, 0.96, 0.5, 0.97]) == 15
    assert grok_step([0, 5, 10], [0.1, 0.96, 0.99]) == 5
    assert grok_step([0, 5], [0.1, 0.2]) is None


def test_small_group_groks():
    r = li2.train(group="Z23", width=256, train_ratio=0.6, steps=1500, lr=5e-3, weight_decay=1e-3,
                  diagnostics="off", write=False)
    m = r.summary["models"][0]
    assert m["final_test_acc"] >= 0.95 and m["grok_step"] is not None
