"""One definition of each option's defaults: the command line, the Python API and the option dataclasses agree;
and the API's errors name its parameters, which the command line says as its options."""

import dataclasses
import inspect

import pytest

import onnxprune
from cli_run import assert_error, run
from graphs import image_model
from onnxprune import api, cli
from onnxprune.cli_options import round_to_from
from onnxprune.errors import OptionError
from onnxprune.finetune.train import FinetuneOptions
from onnxprune.integrations.recipe import Recipe
from onnxprune.latency_target import prune_to_latency
from onnxprune.plan import PlanOptions
from onnxprune.sensitivity import sensitivity

PLAN = {f.name: f.default for f in dataclasses.fields(PlanOptions)}


def click_defaults(command) -> dict:
    return {p.name: p.default for p in command.params}


def signature_defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def test_prune_defaults_are_plan_options_everywhere():
    api_d = signature_defaults(api.prune)
    assert api_d["ratio"] is None  # PlanOptions.ratio, or 0 with a depth option
    for command in (cli.cli.commands["prune"], cli.cli.commands["mlflow"].commands["prune"]):
        cli_d = click_defaults(command)
        assert cli_d["ratio"] == PLAN["ratio"]
        assert round_to_from(cli_d["round_to"], cli_d["target"]) == PLAN["round_to"]
        for name in ("scope", "max_ratio", "min_channels", "criterion", "calib_samples", "recover"):
            assert cli_d[name] == api_d[name], name
    for name in ("scope", "max_ratio", "round_to", "min_channels"):
        assert api_d[name] == PLAN[name], name
    assert click_defaults(cli.cli.commands["prune"])["finetune_epochs"] == api_d["finetune_epochs"]


def test_recipes_the_latency_target_and_sensitivity_share_the_defaults():
    api_d = signature_defaults(api.prune)
    recipe = Recipe()
    assert recipe.ratio == PLAN["ratio"] and recipe.resolved_round_to() == PLAN["round_to"]
    for name in ("scope", "max_ratio", "min_channels", "criterion", "calib_samples"):
        assert getattr(recipe, name) == api_d[name], name
    latency = signature_defaults(prune_to_latency)
    for name in ("max_ratio", "round_to", "min_channels", "criterion", "calib_samples"):
        assert latency[name] == api_d[name], name
    sens, sens_cli = signature_defaults(sensitivity), click_defaults(cli.cli.commands["sensitivity"])
    assert round_to_from(sens_cli["round_to"], sens_cli["target"]) == sens["round_to"] == PLAN["round_to"]
    for name in ("min_channels", "calib_samples"):
        assert sens_cli[name] == sens[name] == api_d[name], name


def test_finetune_defaults_are_finetune_options():
    cli_d = click_defaults(cli.cli.commands["finetune"])
    for f in dataclasses.fields(FinetuneOptions):
        assert cli_d[f.name] == f.default, f.name


def test_prune_without_a_ratio_uses_the_plan_options_ratio():
    assert onnxprune.prune(image_model(), round_to=1).report.options["ratio"] == PLAN["ratio"]


@pytest.mark.parametrize("kwargs, api_text, cli_args, cli_text", [
    ({"ratio": 1.5}, "ratio must be in [0, 1), got 1.5", ["--ratio", "1.5"], "--ratio must be in [0, 1), got 1.5"),
    ({"max_ratio": 0.0, "scope": "global"}, "max_ratio must be in (0, 1)", ["--max-ratio", "0", "--scope", "global"],
     "--max-ratio must be in (0, 1)"),
    ({"depth_ratio": 2.0}, "depth_ratio must be in (0, 1]", ["--depth-ratio", "2"], "--depth-ratio must be in (0, 1]"),
    ({"depth_ratio": 0.5, "remove_blocks": 1}, "depth_ratio and remove_blocks both set how many blocks go",
     ["--depth-ratio", "0.5", "--remove-blocks", "1"], "--depth-ratio and --remove-blocks both set how many"),
    ({"finetune_epochs": -1}, "finetune_epochs must not be negative", ["--finetune-epochs", "-1"],
     "--finetune-epochs must not be negative"),
])
def test_api_errors_name_parameters_and_the_cli_names_options(tmp_path, kwargs, api_text, cli_args, cli_text):
    with pytest.raises(OptionError) as caught:
        onnxprune.prune(image_model(), **kwargs)
    assert str(caught.value).startswith(api_text) and "--" not in str(caught.value)
    model = tmp_path / "m.onnx"
    model.write_bytes(image_model().SerializeToString())
    assert_error(run("prune", model, "-o", tmp_path / "out.onnx", *cli_args), 1, "error: " + cli_text)


def test_finetune_options_errors_name_parameters():
    with pytest.raises(OptionError, match=r"^epochs must be at least 1, got 0$"):
        FinetuneOptions(epochs=0).validate()
    with pytest.raises(OptionError, match=r"^batch_size must be at least 1"):
        FinetuneOptions(batch_size=0).validate()
    assert OptionError("batch_size must be at least 1", params=("batch_size",)).on_command_line() == \
        "--batch-size must be at least 1"
