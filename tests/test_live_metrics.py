"""Live metrics: metrics.jsonl at every evaluation (and after a SIGKILL), TensorBoard and W&B loggers, the
progress line under a non-terminal stderr, the run-folder lock."""
import glob
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import li2
from li2.cli.common import Progress

SRC = Path(__file__).resolve().parents[1] / "src"
KEYS = ["step", "seed", "train_acc", "test_acc", "train_loss", "test_loss"]


def jsonl(path: Path) -> pd.DataFrame:
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines()])


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    a = a[KEYS].sort_values(["seed", "step"]).reset_index(drop=True)
    b = b[KEYS].sort_values(["seed", "step"]).reset_index(drop=True)
    return a.equals(b)


def test_metrics_jsonl_holds_every_evaluation_as_it_happens(tmp_path):
    out = tmp_path / "run"
    seen_on_disk = []

    def on_eval(rows):   # the file already holds this evaluation's rows when the callback runs
        seen_on_disk.append(len((out / "metrics.jsonl").read_text().splitlines()))

    result = li2.train(group="Z7", width=16, steps=30, eval_every=5, seeds=[0, 1], out=out, figures=False,
                       diagnostics="off", on_eval=on_eval)
    assert seen_on_disk == list(range(1, len(result.metrics) + 1))   # one model per unit on a CPU
    assert same_rows(jsonl(out / "metrics.jsonl"), result.metrics)


def test_non_terminal_stderr_gets_one_plain_line_per_evaluation(run_cli, tmp_path):
    code, _, err = run_cli("train", "--group", "Z7", "--width", "16", "--steps", "30", "--eval-every", "5",
                           "--seeds", "0-1", "--diagnostics", "off", "--out", tmp_path / "run")
    assert code == 0 and "\r" not in err
    rows = pd.read_parquet(tmp_path / "run" / "metrics.parquet")
    lines = err.splitlines()
    assert len(lines) == len(rows), err
    assert lines[0].startswith("train: step 0  seed 0  acc train ") and "test " in lines[0]


def test_terminal_progress_shows_the_accuracies_of_the_stack():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    bar = Progress(100, "train", stream=stream)
    assert stream.getvalue() == ""   # nothing before the first step
    bar(10)
    bar.evaluated([{"step": 10, "seed": 0, "train_acc": 0.5, "test_acc": 0.25},
                   {"step": 10, "seed": 1, "train_acc": 0.7, "test_acc": 0.35}])
    bar.close()
    text = stream.getvalue()
    assert "train 0.600 [0.500–0.700]" in text and "test 0.300 [0.250–0.350]" in text


def test_a_sigkilled_run_keeps_every_evaluation_and_resumes_over_its_stale_lock(run_cli, tmp_path):
    out, log = tmp_path / "run", tmp_path / "log.txt"
    args = ["train", "--group", "Z71", "--steps", "400", "--eval-every", "5", "--no-early-stop", "--diagnostics",
            "off", "--checkpoint-every", "50", "--threads", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "li2.cli", *args], stderr=stderr, stdout=subprocess.DEVNULL,
                                env=env)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            path = out / "metrics.jsonl"
            if path.exists() and len(path.read_text().splitlines()) >= 12:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        # a second writer is refused while the first holds the folder
        code, _, err = run_cli("train", "--resume", out)
        assert code == 2 and err.count("\n") == 1
        assert f"being written by another li2 process (pid {proc.pid}" in err
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]          # every line is whole
    steps = [r["step"] for r in rows]
    assert len(rows) >= 12 and steps == list(range(0, 5 * len(rows), 5))
    logged = log.read_text()
    assert "\r" not in logged
    assert len([ln for ln in logged.splitlines() if ln.startswith("train: step")]) in (len(rows) - 1, len(rows))
    assert (out / ".lock").exists()                      # stale: its process is gone
    code, _, err = run_cli("train", "--resume", out, "--quiet")
    assert code == 0, err
    final = pd.read_parquet(out / "metrics.parquet")
    assert same_rows(jsonl(out / "metrics.jsonl"), final) and len(final) == 81
    assert not (out / ".lock").exists()


def test_a_stale_lock_file_is_taken_over_and_a_held_lock_refused(tmp_path):
    from li2.runs.folder import RunError, run_lock
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("999999999 some-host\n")   # left by a process that no longer holds it
    with run_lock(out):
        with pytest.raises(RunError, match=r"being written by another li2 process \(pid \d+ on "):
            with run_lock(out):
                pass
    li2.train(group="Z5", width=4, steps=2, out=out, figures=False, diagnostics="off")


def test_tensorboard_event_files_hold_test_acc_per_seed(run_cli, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--steps", "50", "--seeds", "0-1", "--log", "tensorboard", "--quiet",
                           "--out", out)
    assert code == 0, err
    metrics = pd.read_parquet(out / "metrics.parquet")
    for seed in (0, 1):
        events = EventAccumulator(str(out / "tensorboard" / f"seed{seed}"))
        events.Reload()
        assert {"test_acc", "train_acc", "train_loss"} <= set(events.Tags()["scalars"])
        got = events.Scalars("test_acc")
        want = metrics[metrics.seed == seed]
        assert [e.step for e in got] == want.step.tolist()
        assert [e.value for e in got] == pytest.approx(want.test_acc.tolist(), rel=1e-6)   # stored as float32
    figures = EventAccumulator(str(out / "tensorboard" / "figures"))
    figures.Reload()
    assert "curves" in figures.Tags()["images"]


def wandb_records(run_file: str):
    """The records of a W&B offline run file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = Path(run_file).read_bytes()
    pos, block, chunk, records = 7, 32768, b"", []   # a 7-byte file header, then 32 KiB blocks
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):   # FULL, LAST
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
        elif kind == 0 and n == 0:
            break
    return records


def test_wandb_offline_writes_a_run_with_every_evaluation(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    result = li2.train(group="Z7", width=16, steps=20, eval_every=5, seeds=[0, 1], out=out, diagnostics="off",
                       log=["wandb"])
    runs = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(runs) == 1
    # W&B's service process writes the file; once (1 suite run in 3) its history was not there yet when
    # run.finish() had returned, so read it again for up to 20 s before judging
    deadline, expected = time.monotonic() + 20, len(result.metrics) + 1   # a record per row, one of figures
    while True:
        history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
                   for r in wandb_records(runs[0]) if r.WhichOneof("record_type") == "history"]
        if len(history) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for seed in (0, 1):
        got = [h for h in history if f"seed{seed}/step" in h]
        want = result.metrics[result.metrics.seed == seed]
        assert [h[f"seed{seed}/step"] for h in got] == want.step.tolist()
        assert [h[f"seed{seed}/test_acc"] for h in got] == pytest.approx(want.test_acc.tolist())
    assert any(key.startswith("figures/curves") for h in history for key in h)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("name, says", [("wandb", "pip install 'li2[wandb]'"),
                                        ("tensorboard", "pip install 'li2[tensorboard]'"),
                                        ("mlflow", "unknown --log 'mlflow'")])
def test_a_missing_or_unknown_logger_is_one_error_line_before_training(run_cli, tmp_path, monkeypatch, name, says):
    monkeypatch.setitem(sys.modules, "wandb", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    code, _, err = run_cli("train", "--group", "Z5", "--width", "4", "--steps", "2", "--log", name,
                           "--out", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "run").exists()
