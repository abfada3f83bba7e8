"""Safe loading (issue 6): damaged, foreign or hostile checkpoints are refused with one clear line,
nothing is unpickled, and a refused resume leaves the run folder byte for byte as it was.
Also: a NaN/inf loss stops only that model and keeps its last good weights.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from li2.store import StoreError, load_checkpoint, save_checkpoint

TINY = ["train", "--group", "Z5", "--width", "8", "--steps", "40", "--checkpoint-every", "10", "--eval-every", "5",
        "--seeds", "0,1", "--threads", "1", "--diagnostics", "off", "--device", "cpu", "--quiet"]


from li2_cli import cli_in_process as cli  # noqa: E402


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder (hidden ones too) → its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


class Boom:
    """Unpickling this would create a marker file: proof that nothing is unpickled."""

    marker: str = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


# -- run folders ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished tiny runs: the good one, one with another width, one with another lr."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, extra in {"good": [], "wide": ["--width", "12"], "other_lr": ["--lr", "0.003"],
                        "sgd": ["--optimizer", "sgd", "--lr", "0.05"]}.items():
        code, _, err = cli(*TINY, *extra, "--out", str(root / name))
        assert code == 0, err
        made[name] = root / name
    return made


@pytest.fixture
def interrupted(tmp_path, runs):
    """The good run as a kill would leave it: seed 0 finished, seed 1 at its step-20 checkpoint."""
    out = tmp_path / "run"
    shutil.copytree(runs["good"], out)
    for name in ("metrics.parquet", "summary.json", "curves.png", "checkpoints/seed1-final.safetensors",
                 "checkpoints/seed1-step00000030.safetensors"):
        (out / name).unlink()
    return out


def header_length(data: bytes) -> int:
    return int.from_bytes(data[:8], "little")


# -- load_checkpoint -----------------------------------------------------------------------------------------

def test_roundtrip_and_metadata(tmp_path):
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    save_checkpoint(tmp_path / "c.safetensors", tensors, {"step": 3, "seeds": [0]})
    got, meta = load_checkpoint(tmp_path / "c.safetensors", {"a": (2, 3)})
    assert meta == {"step": 3, "seeds": [0]}
    assert all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert not list(tmp_path.glob(".*"))   # no temporary file left


@pytest.mark.parametrize("cut", ["empty", "4 bytes", "8 bytes", "mid header", "header only", "mid data", "minus 1"])
def test_truncated_is_refused(tmp_path, runs, cut):
    data = (runs["good"] / "checkpoints" / "seed0-final.safetensors").read_bytes()
    n = header_length(data)
    size = {"empty": 0, "4 bytes": 4, "8 bytes": 8, "mid header": 8 + n // 2, "header only": 8 + n,
            "mid data": 8 + n + (len(data) - 8 - n) // 2, "minus 1": len(data) - 1}[cut]
    path = tmp_path / "seed0-final.safetensors"
    path.write_bytes(data[:size])
    with pytest.raises(StoreError, match=r"damaged|corrupted"):
        load_checkpoint(path)


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def test_every_sampled_bit_flip_is_caught(tmp_path, runs):
    """Flip single bits in the length prefix, the JSON header (tensor table and metadata: step, seeds,
    checksum …) and the tensor data: each is refused, or — never seen, but harmless — loads unchanged."""
    src = runs["good"] / "checkpoints" / "seed1-step00000020.safetensors"
    data = src.read_bytes()
    ref_tensors, ref_meta = load_checkpoint(src)
    n = header_length(data)
    rng = random.Random(6)
    bits = list(range(64))                                          # the 8-byte header length
    bits += rng.sample(range(64, 8 * (8 + n)), 400)                 # the JSON header
    bits += rng.sample(range(8 * (8 + n), 8 * len(data)), 150)      # the tensors
    # the metadata's numbers: one bit turns "step": 20 into 21 or 30 — still valid JSON
    meta_at = data.index(b'\\"step\\": ') + len(b'\\"step\\": ')
    bits += [8 * meta_at + k for k in range(8)]
    path = tmp_path / "flipped.safetensors"
    refused = 0
    for bit in bits:
        path.write_bytes(_flip(data, bit))
        try:
            tensors, meta = load_checkpoint(path)
        except StoreError as e:
            refused += 1
            assert str(e).startswith(f"checkpoint {path}") and "\n" not in str(e)
            continue
        assert meta == ref_meta and all(torch.equal(tensors[k], ref_tensors[k]) for k in ref_tensors), \
            f"bit {bit} (byte {bit // 8}) changed the checkpoint and was not caught"
    assert refused >= len(bits) - 5


@pytest.mark.parametrize("kind", ["pickle", "torch.save", "json", "random bytes"])
def test_foreign_file_is_refused_and_never_unpickled(tmp_path, kind):
    marker = tmp_path / "PWNED"
    Boom.marker = str(marker)
    path = tmp_path / "seed0-final.safetensors"
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"param.W": Boom()}))
    elif kind == "torch.save":
        buf = io.BytesIO()
        torch.save({"param.W": torch.ones(2), "x": Boom()}, buf)
        path.write_bytes(buf.getvalue())
    elif kind == "json":
        path.write_bytes(b'{"format": "li2-checkpoint-1", "meta": "{}"}')
    else:
        path.write_bytes(random.Random(1).randbytes(3000))
    with pytest.raises(StoreError, match="damaged or not a safetensors file|not written by li2"):
        load_checkpoint(path)
    assert not marker.exists()


def test_plain_safetensors_without_li2_metadata_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    path.write_bytes(st_save({"param.W": torch.ones(2, 2)}))
    with pytest.raises(StoreError, match="not written by li2"):
        load_checkpoint(path)
    path.write_bytes(st_save({"param.W": torch.ones(2, 2)}, metadata={"format": "li2-checkpoint-1", "meta": "{}",
                                                                       "sha256": "0" * 64}))
    with pytest.raises(StoreError, match="checksum mismatch"):
        load_checkpoint(path)


def test_wrong_shape_is_refused(runs):
    path = runs["wide"] / "checkpoints" / "seed0-final.safetensors"
    with pytest.raises(StoreError, match=r"'param.W' has shape .*this run needs"):
        load_checkpoint(path, {"param.W": (1, 10, 8)})
    with pytest.raises(StoreError, match="lacks tensor 'param.U'"):
        load_checkpoint(path, {"param.U": (1, 8, 8)})


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(StoreError, match="cannot be read"):
        load_checkpoint(tmp_path / "dir.safetensors")


# -- li2 train --resume DIR refuses, in one line, and touches nothing ------------------------------------------

def _damage(kind: str, target: Path, runs: dict, tmp_path: Path) -> None:
    data = target.read_bytes()
    n = header_length(data)
    rng = random.Random(kind)
    if kind == "truncated":
        target.write_bytes(data[: len(data) * 2 // 3])
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind == "bitflip-data":
        target.write_bytes(_flip(data, rng.randrange(8 * (8 + n), 8 * len(data))))
    elif kind == "bitflip-header":
        at = data.index(b'\\"step\\": ') + len(b'\\"step\\": ')   # 20 → 21: valid JSON, wrong step
        target.write_bytes(_flip(data, 8 * at))
    elif kind == "bitflip-checksum":
        at = data.index(b'"sha256":"') + len(b'"sha256":"') + 5
        target.write_bytes(_flip(data, 8 * at))
    elif kind == "wrong-shape":       # the same checkpoint of a run with --width 12, copied in
        shutil.copyfile(runs["wide"] / "checkpoints" / target.name, target)
    elif kind == "another-config":    # same shapes, another --lr
        shutil.copyfile(runs["other_lr"] / "checkpoints" / target.name, target)
    elif kind == "another-optimizer":  # other optimiser state tensors
        shutil.copyfile(runs["sgd"] / "checkpoints" / target.name, target)
    elif kind == "other-seed":        # seed 0's checkpoint renamed as seed 1's
        shutil.copyfile(target.parent / target.name.replace("seed1", "seed0"), target)
    elif kind == "pickle":
        Boom.marker = str(tmp_path / "PWNED")
        target.write_bytes(pickle.dumps({"param.W": Boom()}))
    else:
        raise AssertionError(kind)


DAMAGE = {  # kind → what the message must say
    "truncated": "damaged or not a safetensors file", "empty": "damaged or not a safetensors file",
    "bitflip-data": "corrupted: checksum mismatch", "bitflip-header": "corrupted: checksum mismatch",
    "bitflip-checksum": "corrupted: checksum mismatch",
    "wrong-shape": "another configuration \\(differs in width\\)",
    "another-config": "another configuration \\(differs in lr\\)",
    "another-optimizer": "another configuration \\(differs in optimizer, lr\\)",
    "other-seed": "holds seeds \\[0\\], this run has \\[1\\]",
    "pickle": "damaged or not a safetensors file",
}


@pytest.mark.parametrize("which", ["latest periodic", "final"])
@pytest.mark.parametrize("kind", list(DAMAGE))
def test_resume_refuses_bad_checkpoint_and_touches_nothing(tmp_path, runs, interrupted, kind, which):
    """The bad file belongs to the *second* model, so refusing late would already have rewritten
    files of the first: checkpoints are all checked before anything is written."""
    if which == "final":
        shutil.copyfile(runs["good"] / "checkpoints" / "seed1-final.safetensors",
                        interrupted / "checkpoints" / "seed1-final.safetensors")
        target = interrupted / "checkpoints" / "seed1-final.safetensors"
    else:
        target = interrupted / "checkpoints" / "seed1-step00000020.safetensors"
    _damage(kind, target, runs, tmp_path)
    before = snapshot(interrupted)
    code, out, err = cli("train", "--resume", str(interrupted), "--quiet")
    assert code == 2, (out, err)
    line = one_error_line(err)
    assert re.search(DAMAGE[kind], line), line
    assert target.name in line
    assert snapshot(interrupted) == before
    assert not (tmp_path / "PWNED").exists()


def test_wrong_shape_checkpoint_with_matching_metadata_is_refused(tmp_path, runs, interrupted):
    """Even a checkpoint whose metadata claims this very run is checked tensor by tensor."""
    wide, meta = load_checkpoint(runs["wide"] / "checkpoints" / "seed1-step00000020.safetensors")
    _, ours = load_checkpoint(interrupted / "checkpoints" / "seed1-step00000020.safetensors")
    meta["run"] = ours["run"]
    target = interrupted / "checkpoints" / "seed1-step00000020.safetensors"
    save_checkpoint(target, wide, meta)
    before = snapshot(interrupted)
    code, _, err = cli("train", "--resume", str(interrupted), "--quiet")
    assert code == 2
    line = one_error_line(err)
    assert re.search(r"'[\w.]+' has shape \(1, \d+, \d+\), this run needs \(1, \d+, \d+\)", line), line
    # seed 0 is finished, so nothing was written before seed 1's checkpoint was refused
    assert snapshot(interrupted) == before


def test_resume_refusal_in_a_real_process(tmp_path, runs, interrupted):
    """The same through the console entry point in its own process: exit 2, one line, no traceback."""
    _damage("bitflip-data", interrupted / "checkpoints" / "seed1-step00000020.safetensors", runs, tmp_path)
    before = snapshot(interrupted)
    r = subprocess.run([sys.executable, "-m", "li2.cli", "train", "--resume", str(interrupted), "--quiet"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2, r.stderr
    assert "checksum mismatch" in one_error_line(r.stderr)
    assert r.stdout == ""
    assert snapshot(interrupted) == before


def test_undamaged_interrupted_run_resumes(runs, interrupted):
    """Control for the refusal tests: the same folder, undamaged, resumes to the good run's results."""
    code, _, err = cli("train", "--resume", str(interrupted), "--quiet")
    assert code == 0, err
    for name in ("seed0-final.safetensors", "seed1-final.safetensors"):
        a, _ = load_checkpoint(runs["good"] / "checkpoints" / name)
        b, _ = load_checkpoint(interrupted / "checkpoints" / name)
        assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("param."))


# -- divergence ------------------------------------------------------------------------------------------------

DIVERGE = ["train", "--group", "Z5", "--width", "8", "--steps", "40", "--optimizer", "sgd", "--lr", "0.8",
           "--eval-every", "2", "--checkpoint-every", "5", "--seeds", "2,3", "--threads", "1",
           "--diagnostics", "off", "--device", "cpu", "--quiet", "--json"]


@pytest.mark.parametrize("execution", ["sequential", "stack"])
def test_divergence_stops_only_that_model(tmp_path, execution):
    out = tmp_path / "run"
    code, stdout, err = cli(*DIVERGE, "--execution", execution, "--out", str(out))
    assert code == 0, err
    models = {m["seed"]: m for m in json.loads(stdout)["models"]}
    assert models[2]["status"] == "completed" and models[2]["steps_trained"] == 40
    m = re.fullmatch(r"diverged at step (\d+)", models[3]["status"])
    assert m, models[3]["status"]
    n = int(m.group(1))
    assert 0 < n < 40 and models[3]["steps_trained"] == n
    assert json.loads((out / "summary.json").read_text())["models"] == list(models.values())

    unit = {"sequential": ("seed3", 0), "stack": ("seeds2-3x2", 1)}[execution]
    final, meta = load_checkpoint(out / "checkpoints" / f"{unit[0]}-final.safetensors")
    assert meta["status"][unit[1]] == f"diverged at step {n}"
    for key, value in final.items():
        if key.startswith("param."):
            w = value[unit[1]]
            assert torch.isfinite(w).all(), f"{key} of the diverged model is not finite"
            assert torch.equal(w, final[key.replace("param.", "last_good.")][unit[1]])   # the last good weights
            if execution == "stack":
                assert torch.isfinite(value[0]).all()
    # its periodic checkpoints are kept, all finite; alone it stops there, in a stack it stays frozen
    kept = sorted((out / "checkpoints").glob(f"{unit[0]}-step*.safetensors"))
    steps = [int(p.name[-20:-12]) for p in kept]
    assert steps and steps[0] <= n
    if execution == "sequential":
        assert steps[-1] <= n
    for step, path in zip(steps, kept):
        tensors, _ = load_checkpoint(path)
        for key, value in tensors.items():
            if key.startswith("param."):
                assert torch.isfinite(value).all(), (path.name, key)
                if step > n:
                    assert torch.equal(value[unit[1]], final[key][unit[1]]), (path.name, key)

    # resuming the finished run gives the same summary (diverged status included)
    code, stdout2, err = cli("train", "--resume", str(out), "--quiet", "--json")
    assert code == 0, err
    strip = lambda ms: [{k: v for k, v in x.items() if k != "wall_seconds"} for x in ms]
    assert strip(json.loads(stdout2)["models"]) == strip(list(models.values()))


def test_model_that_diverges_at_step_zero(tmp_path):
    """Loss already infinite at initialisation: the run still finishes (exit 0), figures included."""
    out = tmp_path / "run"
    code, _, err = cli("train", "--group", "Z5", "--width", "8", "--steps", "3", "--init-scale", "1e30",
                       "--diagnostics", "off", "--quiet", "--out", str(out))
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"][0]["status"] == "diverged at step 0"
    assert (out / "curves.png").exists()
