"""The rough edges a new user met (issue "Around the core"), one test each.

Each test failed on the main branch the issue was filed against: `li2 --version` missing; the CLI's parsing
loading torch; a one-sample training set trained without a word; no "did you mean" or line number for a
--config file; a progress bar before an argument error; diagnose calling a short run "memorized" without
saying it stopped early; an empty findings.json reported; a model that diverged at step 0 breaking the run;
missing-glyph warnings for odd group names; no deterministic option for GPU runs.
"""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

import li2
from li2.config import TrainConfig
from li2.theory.outcomes import annotate_outcomes, classify_model

SRC = Path(__file__).resolve().parents[1] / "src"


def python(code: str, *args: str) -> subprocess.CompletedProcess:
    """A fresh interpreter running `code` with this checkout's li2 first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# -- version, completion, a light start ------------------------------------------------------------------

def test_version(run_cli):
    code, out, err = run_cli("--version")
    assert code == 0 and err == ""
    assert out.strip() == f"li2 {li2.__version__}"


def test_shell_completion_is_offered(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0 and "--install-completion" in out and "--show-completion" in out


PARSE_ONLY = """
import sys
from li2.cli import main
sys.argv = ["li2", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "pandas", "matplotlib", "scipy") if m in sys.modules)
print("HEAVY", ",".join(heavy) or "-", "CODE", code, file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [["--version"], ["train", "--help"], ["train", "--width", "0"],
                                  ["train", "--widht", "3"], ["sweep", "--help"]])
def test_parsing_loads_no_torch(argv):
    """`li2 --version`, `--help` and argument errors answer without importing torch (or pandas)."""
    done = python(PARSE_ONLY, *argv)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("HEAVY - CODE"), done.stderr


def test_import_li2_is_light():
    done = python("import sys, li2, li2.config; print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))")
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


# -- warnings for settings the theory says cannot generalise --------------------------------------------

def test_a_one_sample_training_set_is_warned_about(run_cli, tmp_path):
    code, _, err = run_cli("train", "--group", "Z23", "--train-ratio", "critical:0.01", "--steps", "3", "--width",
                           "64", "--quiet", "--out", tmp_path / "run")
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: the training set has 1 sample"), err
    assert "M = 23" in lines[0] and "--train-ratio" in lines[0]


def test_too_few_hidden_nodes_are_warned_about_from_python():
    from li2.config import Li2Warning
    with pytest.warns(Li2Warning, match=r"--width 4 is below \(M−1\)/2 = 11"):
        li2.train(group="Z23", width=4, steps=2, write=False, diagnostics="off")


def test_a_refused_run_prints_its_error_and_no_warning(run_cli, tmp_path):
    (tmp_path / "taken").write_text("a file")
    code, _, err = run_cli("train", "--group", "Z23", "--train-ratio", "critical:0.01", "--width", "4",
                           "--out", tmp_path / "taken")
    assert code == 2
    assert "is a file" in one_error_line(err)


# -- --config files: did you mean, line numbers, the file's name ---------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("group: Z23\nwidht: 64\n", r"--config \S+cfg.yaml line 2: unknown option 'widht' \(did you mean 'width'\?\)"),
    ("group: Z23\n\nwidth: -4\n", r"--config \S+cfg.yaml line 3: invalid --width"),
    ("group: Z23\nwidth: [64\n", r"--config \S+cfg.yaml line \d+, column \d+ is not valid YAML"),
    ("config:\n  group: Z23\n  stesp: 10\n", r"line 3: unknown option 'stesp' \(did you mean 'steps'\?\)"),
])
def test_config_file_errors_name_the_file_the_line_and_the_closest_option(run_cli, tmp_path, text, expected):
    (tmp_path / "cfg.yaml").write_text(text)
    code, out, err = run_cli("train", "--config", tmp_path / "cfg.yaml", "--out", tmp_path / "run")
    assert code == 2 and out == ""
    import re
    assert re.search(expected, one_error_line(err)), err
    assert not (tmp_path / "run").exists()


def test_sweep_spec_and_config_file_share_the_did_you_mean(tmp_path):
    from li2.studies.spec import SweepError, SweepSpec
    (tmp_path / "s.yaml").write_text("base: {widht: 16}\ngrid: {seed: [0, 1]}\n")
    with pytest.raises(SweepError, match=r"unknown option 'widht' \(did you mean 'width'\?\)"):
        SweepSpec.load(tmp_path / "s.yaml")


def test_command_line_options_override_a_config_file(run_cli, tmp_path):
    (tmp_path / "cfg.yaml").write_text("group: Z5\nwidth: -4\nsteps: 2\ndiagnostics: 'off'\n")
    code, _, err = run_cli("train", "--config", tmp_path / "cfg.yaml", "--width", "8", "--quiet", "--out",
                           tmp_path / "run")
    assert code == 0, err


# -- no progress output before an argument error -----------------------------------------------------------

@pytest.mark.parametrize("argv", [["train", "--group", "Q9", "--steps", "3"],
                                  ["train", "--group", "Z5", "--steps", "3", "--device", "cuda"]])
def test_no_progress_bar_before_an_error(run_cli, tmp_path, argv):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    code, out, err = run_cli(*argv, "--out", tmp_path / "run")
    assert code == 2 and out == ""
    one_error_line(err)


def test_no_progress_bar_before_a_missing_ray(run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray → ImportError
    (tmp_path / "s.yaml").write_text("base: {group: Z5, width: 4, steps: 2}\ngrid: {seed: [0, 1]}\n")
    code, _, err = run_cli("sweep", tmp_path / "s.yaml", "--out", tmp_path / "study", "--executor", "ray")
    assert code == 2
    assert "li2[ray]" in one_error_line(err)


# -- diagnose says when a run stopped before it could have grokked ------------------------------------------

def test_diagnose_says_a_short_run_stopped_before_the_typical_grok_time():
    from li2.theory.outcomes import typical_grok_step
    config = TrainConfig(group="Z71", train_ratio=0.25, steps=200)
    typical = typical_grok_step(config, 71)
    assert typical is not None and typical > 200
    steps = list(range(0, 201, 25))
    df = pd.DataFrame({"step": steps, "seed": 0, "train_acc": [0.1, 0.6, 1, 1, 1, 1, 1, 1, 1],
                       "test_acc": [0.01, 0.02, 0.03, 0.05, 0.06, 0.06, 0.06, 0.06, 0.06],
                       "w_norm": 1.0, "w_drift": [0, .2, .4, .5, .6, .6, .6, .6, .6]})
    summary = {"models": [{"seed": 0, "status": "completed", "steps_trained": 200}]}
    annotate_outcomes(summary, df, config, 71)
    m = summary["models"][0]
    assert m["evidence"]["stopped_early"] is True and m["evidence"]["typical_grok_step"] == typical
    assert "stopped at step 200" in m["hint"] and "--steps" in m["hint"]
    # the same curve with a budget past the typical grok time: no such note
    config_long = TrainConfig(group="Z71", train_ratio=0.25, steps=20 * typical)
    long = df.assign(step=df.step * 20 * typical // 200)
    _, ev = classify_model(long, {"status": "completed"}, config_long, 71)
    assert not ev.get("stopped_early")


def test_diagnose_of_a_real_short_run_names_the_early_stop(run_cli, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--group", "Z41", "--train-ratio", "0.4", "--width", "256", "--steps", "60",
                           "--no-early-stop", "--diagnostics", "off", "--quiet", "--out", out)
    assert code == 0, err
    code, stdout, err = run_cli("diagnose", out)
    assert code == 0 and err == ""
    assert "stopped at step 60" in stdout, stdout


# -- li2 report refuses an empty or schema-less findings.json -------------------------------------------------

@pytest.mark.parametrize("content, says", [(b"", "is empty"), (b"  \n", "is empty"), (b"{}", "no li2 findings schema"),
                                           (b'{"recipe": "x"}', "no li2 findings schema"), (b"[1, 2]", "not a findings")])
def test_report_refuses_an_empty_or_schemaless_findings_file(run_cli, tmp_path, content, says):
    folder = tmp_path / "recipe"
    folder.mkdir()
    (folder / "findings.json").write_bytes(content)
    code, _, err = run_cli("report", folder, "--out", tmp_path / "r.html")
    assert code == 2 and says in one_error_line(err)
    assert not (tmp_path / "r.html").exists()


# -- a model that diverged at step 0; odd group names -------------------------------------------------------

@pytest.mark.parametrize("extra", [["--init-scale", "1e30"], ["--optimizer", "sgd", "--lr", "100", "--init-scale", "1e20"]])
def test_a_model_diverged_at_step_zero_trains_and_diagnoses_without_warnings(run_cli, tmp_path, extra):
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, _, err = run_cli("train", "--group", "Z7", "--width", "8", "--steps", "5", *extra, "--quiet",
                               "--out", out)
        assert code == 0 and err == "", err
        summary = json.loads((out / "summary.json").read_text())
        assert summary["models"][0]["status"] == "diverged at step 0"
        code, stdout, err = run_cli("diagnose", out)
    assert code == 0 and err == "" and "diverged" in stdout


@pytest.mark.parametrize("name", ["😀 smile", "$\\alpha$ group", "群", "tab\there"])
def test_odd_group_names_draw_without_missing_glyph_warnings(tmp_path, name):
    (tmp_path / "g.json").write_text(json.dumps({"name": name, "table": [[0, 1, 2], [1, 2, 0], [2, 0, 1]]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        li2.train(group_table=str(tmp_path / "g.json"), width=4, steps=3, out=tmp_path / "run")
    assert (tmp_path / "run" / "curves.png").exists()


# -- --deterministic --------------------------------------------------------------------------------------------

def test_deterministic_switches_torch_deterministic_algorithms_while_training():
    seen = []
    before = torch.are_deterministic_algorithms_enabled()
    kw = dict(group="Z7", width=8, steps=10, eval_every=5, write=False, diagnostics="off")
    det = li2.train(**kw, deterministic=True, on_eval=lambda rows: seen.append(torch.are_deterministic_algorithms_enabled()))
    assert seen and all(seen)
    assert torch.are_deterministic_algorithms_enabled() == before
    plain = li2.train(**kw)
    assert torch.equal(det.params[0]["W"], plain.params[0]["W"])   # a CPU run is deterministic either way
    code = python("from li2.cli.train import train_command; import inspect; "
                  "print('deterministic' in inspect.signature(train_command).parameters)")
    assert code.stdout.strip() == "True"
