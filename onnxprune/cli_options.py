"""CLI options that several commands share, declared once.

`deployment_options` adds --provider, --batch, --threads and where the latency profile comes from: the runtime a
latency target (prune) or the milliseconds of a sensitivity run are measured for.

`image_options` adds --size, --mean, --std and --layout: how a folder of images becomes the model's input, for
prune's --calib-images and verify's --data-images; `image_options_for` turns their values into ImageOptions.
`shape_option` is --shape (every command that runs or counts a model); `fidelity_options` are verify's inputs and
gates, which check shares; `output_report_options` are what a pruning command writes beside its model.
"""

from __future__ import annotations

from typing import Optional

import click

from .bench import PROVIDERS
from .calib import CALIB_SAMPLES, ImageOptions, parse_floats, parse_size
from .errors import OptionError
from .executors import EXECUTORS

IMAGE_FOLDER_OPTIONS = "--calib-images, --data-images"

_IMAGE_OPTIONS = (
    click.option("--size", default=None, metavar="HxW",
                 help=f"Images ({IMAGE_FOLDER_OPTIONS}): resize to this (default: the model's)."),
    click.option("--mean", default="0", show_default=True, metavar="M[,M,M]",
                 help="Images: subtracted after /255."),
    click.option("--std", default="1", show_default=True, metavar="S[,S,S]", help="Images: divided by, after --mean."),
    click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default="NCHW", show_default=True,
                 help="Images: the model input's layout."),
)


def _stack(*options):
    """One decorator that applies `options` in order (the first is listed first in --help)."""
    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command

    return apply


image_options = _stack(*_IMAGE_OPTIONS)
image_options.__doc__ = "Decorator: the image options (--size, --mean, --std, --layout) on a click command."

calib_option = click.option("--calib", type=click.Path(dir_okay=False), default=None,
                            help="Calibration inputs (.npz, one array per input, samples on axis 0): data-aware "
                                 "scores and recovery.")
calibration_options = _stack(
    calib_option,
    click.option("--calib-images", type=click.Path(file_okay=False), default=None,
                 help="Calibration images from a folder (needs onnxprune[images]); see --size, --mean, --std, "
                      "--layout."),
    image_options,
)
calibration_options.__doc__ = "Decorator: --calib, --calib-images and the image options (prune, apply-plan)."

SHAPE_HELP = "Pin an input's dynamic dims, NAME=1x3x224x224 (repeatable): shape inference, MAC counts and inputs."


def shape_option(help: str = SHAPE_HELP):
    """--shape NAME=AxBxC, repeatable, into the `shapes` parameter (parse it with inputs.parse_shapes)."""
    return click.option("--shape", "shapes", multiple=True, metavar="NAME=AxBxC", help=help)


# verify's inputs and gates (verify.Gates), shared by check; defaults are None so that a policy file can fill them
fidelity_options = _stack(
    click.option("--data", type=click.Path(dir_okay=False), default=None,
                 help="Inputs from an .npz: one array per input, samples on axis 0 (along the batch axis or stacked)."),
    click.option("--labels", type=click.Path(dir_okay=False), default=None,
                 help="Class ids (.npy, one per input sample): report both models' accuracy and the drop."),
    click.option("--seed", type=int, default=None, help="Seed of the random inputs [default: 0]."),
    click.option("--max-rel-error", type=float, default=None,
                 help="Fail if any output's relative error ||pruned - dense|| / ||dense|| is larger (0.05 = 5%)."),
    click.option("--min-cosine", type=float, default=None,
                 help="Fail if any output's cosine similarity is lower (blind to scale, and to most changes of "
                      "outputs of one sign: prefer --max-rel-error)."),
    click.option("--min-top1", type=float, default=None,
                 help="Fail if top-1 agreement of outputs that look like class scores ([N, classes]) is lower."),
    click.option("--max-abs", type=float, default=None, help="Fail if any output's max absolute error is larger."),
    click.option("--max-accuracy-drop", type=float, default=None,
                 help="Fail if accuracy drops more than this fraction (0.01 = 1 point); needs --labels."),
)

output_report_options = _stack(
    click.option("--plan-out", type=click.Path(dir_okay=False), default=None,
                 help="Also write the pruning plan (JSON: kept channels by weight name) for apply-plan."),
    click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
                 help="Also write a model card, report.json and report.md, into this folder."),
    click.option("--report-bench", is_flag=True,
                 help="--report: also time the source and the output side by side (bench's method, cpu, 1 thread)."),
)


def image_options_for(folder, folder_option: str, size: Optional[str], mean: str, std: str,
                      layout: str) -> Optional[ImageOptions]:
    """ImageOptions for the image folder given with `folder_option`, or None without one; an image option set
    on the command line without a folder is an OptionError (it would change nothing)."""
    if folder is None:
        ctx = click.get_current_context(silent=True)
        for name in ("size", "mean", "std", "layout"):
            if ctx is not None and ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                raise OptionError(f"--{name} is for {folder_option}: it applies to images only")
        return None
    return ImageOptions(parse_size(size) if size else None, parse_floats(mean, "--mean"),
                        parse_floats(std, "--std"), layout)


def _structured_prune_options():
    from .importance import CRITERIA, DEFAULT_CRITERION
    from .plan import SCOPES, PlanOptions
    from .target import CHOICES as TARGET_CHOICES

    return _stack(
        click.option("--ratio", type=float, default=PlanOptions.ratio, show_default=True,
                     help="Fraction of channels to remove per group."),
        click.option("--heads-ratio", type=float, default=None,
                     help="Fraction of attention heads to remove (default: --ratio)."),
        click.option("--ffn-ratio", type=float, default=None,
                     help="Fraction of MatMul/Gemm output neurons (FFN intermediates) to remove (default: --ratio)."),
        click.option("--criterion", type=click.Choice(list(CRITERIA)), default=DEFAULT_CRITERION, show_default=True,
                     help="Channel score: l1/l2 norm of the weights that produce and read the channel; activation "
                          "(mean |x| where it is read) and wanda (|w| x ||x||) need --calib."),
        click.option("--scope", type=click.Choice(list(SCOPES)), default=PlanOptions.scope, show_default=True,
                     help="uniform: every group loses --ratio; global: rank normalized scores across groups."),
        click.option("--max-ratio", type=float, default=PlanOptions.max_ratio, show_default=True,
                     help="Global scope: most any group loses."),
        click.option("--round-to", type=int, default=None,
                     help=f"Kept channel counts are multiples of this (1: no rounding) [default: {PlanOptions.round_to}, "
                          "or --target's]."),
        click.option("--target", type=click.Choice(list(TARGET_CHOICES)), default=None,
                     help="Hardware the model will run on: sets --round-to to its channel block (cpu-avx2 8, "
                          "cpu-avx512 16, gpu 8; auto: this machine's CPU)."),
        click.option("--min-channels", type=int, default=PlanOptions.min_channels, show_default=True,
                     help="Fewest channels a group keeps."),
        click.option("--exclude", multiple=True, metavar="GLOB", help="Leave groups with a member node matching GLOB."),
    )


def _recovery_options():
    from .recovery import METHODS

    return _stack(
        click.option("--calib-samples", type=int, default=CALIB_SAMPLES, show_default=True,
                     help="Most calibration samples used."),
        click.option("--recover", type=click.Choice(list(METHODS)), default=None,
                     help="Training-free recovery: none, bias, lsq, stats or all [default: all with calibration data, "
                          "else none]."),
    )


# how structured pruning chooses channels (prune, mlflow prune)
structured_prune_options = _structured_prune_options()
# how much calibration data recovery uses, and which recovery (prune, mlflow prune)
recovery_options = _recovery_options()

_DEPLOYMENT_OPTIONS = (
    click.option("--provider", type=click.Choice(list(PROVIDERS)), default="cpu", show_default=True,
                 help="Latency: the onnxruntime provider the model will run on."),
    click.option("--batch", type=int, default=1, show_default=True, help="Latency: the batch size it will run at."),
    click.option("--threads", type=int, default=1, show_default=True,
                 help="Latency: the intra-op threads it will run with."),
    click.option("--latency-cache", type=click.Path(file_okay=False), default=None,
                 help="Folder of cached latency profiles [default: $ONNXPRUNE_CACHE/latency or "
                      "~/.cache/onnxprune/latency]."),
    click.option("--latency-profile", type=click.Path(dir_okay=False), default=None,
                 help="Use this latency profile file (measured elsewhere: warned when its machine differs)."),
    click.option("--latency-budget", type=float, default=None, metavar="SECONDS",
                 help="Most time spent measuring the latency ladders; groups left are modelled from their MACs "
                      "[default: 900]."),
)


# where the model will run and how its latency profile is found (prune --latency-target, sensitivity)
deployment_options = _stack(*_DEPLOYMENT_OPTIONS)

executor_options = _stack(
    click.option("--executor", type=click.Choice(list(EXECUTORS)), default="inprocess", show_default=True,
                 help="Where the tasks run: one by one in this process, or as Ray tasks (needs onnxprune[ray])."),
    click.option("--ray-address", default=None, help="--executor ray: the cluster to join [default: a local Ray]."),
)
executor_options.__doc__ = "Decorator: --executor and --ray-address (executors.make_executor takes them)."


def deployment_for(provider: str, batch: int, threads: int):
    """latency.Deployment from the deployment options."""
    from .latency import Deployment

    deployment = Deployment(provider, batch, threads)
    deployment.validate()
    return deployment


def round_to_from(round_to: Optional[int], target: Optional[str]) -> int:
    """The kept-count multiple from --round-to or --target (at most one of them)."""
    from .plan import PlanOptions
    from .target import round_to_for

    if round_to is not None and target is not None:
        raise OptionError("--round-to and --target both set the channel multiple: give one")
    return round_to_for(target) if target is not None else PlanOptions.round_to if round_to is None else round_to
