"""`li2 train`'s options are generated from TrainConfig: every field is a flag, with its help and choices."""
import typing

import pytest
import yaml
from typer.testing import CliRunner

from li2.cli import app
from li2.cli.options import _option_type, config_parameters
from li2.config import TrainConfig


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "240", "TERM": "dumb"},
                                terminal_width=240)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_trainconfig_field_is_a_flag_of_train():
    text = help_text("train")
    missing = [name for name in TrainConfig.model_fields if f"--{name.replace('_', '-')}" not in text]
    assert not missing, f"TrainConfig fields without a `li2 train` flag: {missing}"


def test_help_comes_from_the_field_descriptions_and_literals_are_choices():
    text = " ".join(help_text("train").split())
    for name, field in TrainConfig.model_fields.items():
        assert field.description, f"TrainConfig.{name} has no description (it is the flag's help)"
    assert "Adam β₂" in text and "hidden nodes K" in text
    for name in ("activation", "loss", "optimizer", "diagnostics", "device", "execution", "dtype", "top_layer"):
        values = typing.get_args(TrainConfig.model_fields[name].annotation)
        assert "|".join(values) in text, (name, values)     # shown as choices, not as <text>
    assert "stop a model once test acc ≥ --grok-threshold held for --stop-margin steps" in text


def test_a_field_type_without_a_command_line_form_is_refused():
    with pytest.raises(TypeError, match="no command-line form"):
        _option_type(dict[str, int])
    assert {p.name for p in config_parameters()} == set(TrainConfig.model_fields)


def test_every_field_given_on_the_command_line_reaches_the_config(tmp_path, run_cli):
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--group", "Z7", "--steps", "3", "--width", "8", "--seeds", "0,2",
                           "--beta1", "0.8", "--beta2", "0.99", "--eps", "1e-7", "--momentum", "0.5",
                           "--dtype", "float64", "--grok-threshold", "0.9", "--stop-margin", "7",
                           "--no-early-stop", "--checkpoint-every", "0", "--diagnostics", "off",
                           "--top-init-scale", "0.5", "--out", out, "--quiet")
    assert code == 0, err
    saved = yaml.safe_load((out / "config.yaml").read_text())["config"]
    assert saved["beta1"] == 0.8 and saved["beta2"] == 0.99 and saved["eps"] == 1e-7 and saved["momentum"] == 0.5
    assert saved["dtype"] == "float64" and saved["grok_threshold"] == 0.9 and saved["stop_margin"] == 7
    assert saved["early_stop"] is False and saved["seeds"] == [0, 2] and saved["top_init_scale"] == 0.5


def test_a_bad_choice_is_one_line(run_cli):
    code, out, err = run_cli("train", "--activation", "tanh")
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1 and "tanh" in err


def test_heavy_imports_pause_the_collector_and_restore_its_state():
    import gc

    from li2.cli.common import heavy_imports
    was, kept = gc.isenabled(), []
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            frozen = gc.get_freeze_count()
            with heavy_imports():
                assert not gc.isenabled()
                kept.append([[i] for i in range(100)])   # what an import leaves behind (kept alive)
            assert gc.isenabled() is enabled
            assert gc.get_freeze_count() >= frozen + 100
    finally:
        (gc.enable if was else gc.disable)()
