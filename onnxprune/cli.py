"""The `onnxprune` command line: a thin layer over the Python API.

Exit codes: 0 success, 1 bad input or option, 2 command-line usage, 3 nothing to prune,
4 a verification gate or a check failed, 5 an internal error (a bug: please report it with --debug output).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings

import click

from . import api
from .cli_finetune import finetune_cmd, finetune_progress
from .cli_measure import bench_cmd, verify_cmd
from .cli_mlflow import mlflow_group
from .cli_options import round_to_from as _round_to
from .cli_options import (calibration_options, deployment_for, deployment_options, image_options_for,
                          output_report_options, recovery_options, shape_option,
                          structured_prune_options)
from .cli_pipeline import PipelineOutputs, apply_plan_cmd, check_cmd
from .cli_sensitivity import sensitivity_cmd
from .errors import (InternalError, NothingToPruneError, OnnxPruneError, OnnxPruneWarning, OptionError,
                     VerificationError, on_command_line)
from .inputs import counting_shapes, parse_shapes
from .inputs import make_inputs
from .io import check_output_path, load_model, stage_model
from .latency import DEFAULT_BUDGET_S
from .latency_target import target_fraction
from .plan import PlanOptions
from .progress import Progress, Stages
from .target import CHOICES as TARGET_CHOICES
from .validate import check_io, check_runnable

INTERNAL_ERROR_EXIT = InternalError.exit_code
PRUNE_STAGES = {  # api.prune's progress stages: (label, unit)
    "calibration": ("loading calibration data", "samples"),
    "blocks": ("scoring blocks on calibration data", "samples"),
    "scores": ("scoring channels on calibration data", "samples"),
    "recovery": ("recovery passes", "samples run, all passes"),
}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="onnxprune")
def cli() -> None:
    """Structured channel pruning of ONNX models, directly on the graph.

    Pass --debug anywhere to see a traceback above the one-line error (the exit code stays the same).
    """


@cli.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
@shape_option()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--members", type=int, default=4, show_default=True, help="Members shown per group in the table.")
def inspect_cmd(model, shapes, as_json, members):
    """List every channel group of MODEL: members, channels, prunable or why not."""
    report = api.analyze(model, shapes=parse_shapes(shapes) or None)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format(members))


@cli.command("prune")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the pruned model.")
@structured_prune_options
@click.option("--depth-ratio", type=float, default=None,
              help="Remove this fraction of the removable residual blocks (y = x + f(x); rounded up), lowest scores "
                   "first, before any channel pruning; --ratio then defaults to 0 and --exclude keeps blocks too.")
@click.option("--remove-blocks", type=int, default=None, help="Remove this many residual blocks (see --depth-ratio).")
@shape_option()
@calibration_options
@recovery_options
@click.option("--finetune-epochs", type=int, default=0, show_default=True,
              help="Then fine-tune by distillation from MODEL on the calibration data for this many epochs "
                   "(needs onnxprune[finetune]; `onnxprune finetune` has every training option).")
@click.option("--unstructured", is_flag=True, help="Zero weights by magnitude instead (shapes unchanged).")
@click.option("--sparsity", type=float, default=None, help="Unstructured: fraction of weights zeroed.")
@click.option("--pattern", default=None, metavar="N:M", help="Unstructured: keep N of every M weights (e.g. 2:4).")
@click.option("--latency-target", type=float, default=None, metavar="F",
              help="Prune until the model runs in F x the dense latency (e.g. 0.5) on --provider/--batch/--threads, "
                   "measured; widths chosen by importance lost per millisecond saved (replaces --ratio).")
@click.option("--speedup", type=float, default=None, metavar="S", help="The same as --latency-target 1/S.")
@click.option("--sensitivity", "sensitivity_file", type=click.Path(dir_okay=False), default=None,
              help="With --latency-target: what each width loses, from `onnxprune sensitivity` (sensitivity.json), "
                   "in place of channel scores.")
@deployment_options
@click.option("--within", "within_policy", type=click.Path(dir_okay=False), default=None, metavar="POLICY",
              help="Prune as far as POLICY (a `check --policy` TOML file) allows: the highest --ratio whose model "
                   "passes its fidelity thresholds on its data, searched (replaces --ratio); its other thresholds are "
                   "then checked on the written model.")
@click.option("--force", is_flag=True, help="Allow writing over the input model.")
@click.option("--no-check", is_flag=True, help="Skip the checker and onnxruntime run of the written model.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@output_report_options
def prune_cmd(model, output, ratio, depth_ratio, remove_blocks, heads_ratio, ffn_ratio, criterion, scope, max_ratio,
              round_to, target, min_channels, exclude, shapes,
              calib, calib_images, size, mean, std, layout, calib_samples, recover, finetune_epochs, unstructured, sparsity, pattern,
              latency_target, speedup, sensitivity_file, provider, batch, threads, latency_cache, latency_profile,
              latency_budget, within_policy, force, no_check, as_json, plan_out, report_dir, report_bench):
    """Remove the lowest-scoring channels of MODEL and write the smaller model to OUTPUT.

    With calibration data (--calib or --calib-images) the pruned model is recovered without training
    (--recover all by default): layer-wise least squares and statistics matching against the dense model.

    --depth-ratio / --remove-blocks remove whole residual blocks first (fewer layers, fewer kernels: what pays on
    a GPU at small batches), then --ratio prunes the channels of the smaller model.
    """
    _refuse_overwrite(model, output, force)
    pinned = parse_shapes(shapes) or None
    round_to = _round_to(round_to, target)
    samples = _calibration(model, calib, calib_images, size, mean, std, layout, calib_samples)
    if unstructured and (heads_ratio is not None or ffn_ratio is not None):
        raise OptionError("--heads-ratio and --ffn-ratio are for structured pruning, not --unstructured")
    if unstructured and (depth_ratio is not None or remove_blocks is not None):
        raise OptionError("--depth-ratio and --remove-blocks are for structured pruning, not --unstructured")
    if unstructured and (latency_target is not None or speedup is not None):
        raise OptionError("--latency-target and --speedup are for structured pruning, not --unstructured")
    if (depth_ratio is not None or remove_blocks is not None) and (latency_target is not None or speedup is not None):
        raise OptionError("--latency-target and --speedup choose widths only: not with --depth-ratio or "
                          "--remove-blocks yet")
    if unstructured and (samples is not None or recover is not None or finetune_epochs):
        raise OptionError("--calib, --calib-images, --recover and --finetune-epochs are for structured pruning, "
                          "not --unstructured")
    if unstructured and (plan_out is not None or report_dir is not None):
        raise OptionError("--plan-out and --report are for structured pruning, not --unstructured")
    if within_policy is not None:
        _within_only_alone("unstructured", "latency_target", "speedup", "finetune_epochs", "ratio")
    if (depth_ratio is not None or remove_blocks is not None) and \
            click.get_current_context().get_parameter_source("ratio") == click.core.ParameterSource.DEFAULT:
        ratio = None  # blocks only, unless --ratio is given (api.prune's default)
    outputs = PipelineOutputs(model, output, plan_out, report_dir, report_bench)
    if unstructured:
        pruned, report = _prune_unstructured(model, sparsity, scope, pattern, exclude)
        _warn(report)
        _write_checked([pruned], model, output, force, pinned, skip_check=no_check)
        click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format_table())
        return
    if sparsity is not None or pattern is not None:
        raise OptionError("--sparsity and --pattern are for --unstructured; structured pruning uses --ratio")
    fraction = target_fraction(latency_target, speedup)
    policy = None
    if within_policy is not None:
        from .gate import load_policy
        from .policy_search import prune_within

        policy = load_policy(within_policy)
        if pinned:
            policy = policy.updated({"shape": list(shapes)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OnnxPruneWarning)  # printed below, from the report
            result = prune_within(
                model, policy, policy_label=f"--within {within_policy}", calib=samples, calib_samples=calib_samples,
                max_ratio=max_ratio, depth_ratio=depth_ratio, remove_blocks=remove_blocks, scope=scope,
                criterion=criterion, round_to=round_to, min_channels=min_channels, exclude=exclude,
                heads_ratio=heads_ratio, ffn_ratio=ffn_ratio, shapes=pinned, recover=recover,
                progress=Progress("search").step)
    elif fraction is None:
        _latency_only(sensitivity_file=sensitivity_file, provider=provider, batch=batch, threads=threads,
                      latency_cache=latency_cache, latency_profile=latency_profile, latency_budget=latency_budget)
        with Stages(PRUNE_STAGES) as stages, warnings.catch_warnings():
            warnings.simplefilter("ignore", OnnxPruneWarning)  # printed below, from the report
            result = api.prune(
                model, ratio=ratio, depth_ratio=depth_ratio, remove_blocks=remove_blocks, scope=scope,
                criterion=criterion, max_ratio=max_ratio, round_to=round_to, min_channels=min_channels,
                exclude=exclude, heads_ratio=heads_ratio, ffn_ratio=ffn_ratio, shapes=pinned, calib=samples,
                calib_samples=calib_samples, recover=recover, progress=stages.update,
                finetune_epochs=finetune_epochs,
                finetune_progress=finetune_progress(before=stages.close) if finetune_epochs else None,
            )
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OnnxPruneWarning)  # printed below, from the report
            result = _prune_to_latency(
                model, fraction, deployment_for(provider, batch, threads), criterion=criterion, calib=samples,
                calib_samples=calib_samples, recover=recover, sensitivity_file=sensitivity_file, round_to=round_to,
                min_channels=min_channels, max_ratio=max_ratio, exclude=exclude, shapes=pinned,
                cache_dir=latency_cache, profile_file=latency_profile,
                budget_s=DEFAULT_BUDGET_S if latency_budget is None else latency_budget,
                finetune_epochs=finetune_epochs, finetune_progress=finetune_progress() if finetune_epochs else None)
    report = result.report
    _warn(report)
    outputs.take(result)
    feeds = None
    if not no_check:  # what needs the models in memory, before the pruned one is freed
        check_io(result.dense_io, result.model)
        feeds = make_inputs(result.model, shapes=pinned, samples=1, seed=0)[0]
    pruned = [result.model]
    result_latency, search = result.latency, result.search
    del result  # the written file is what gets checked: _write_checked frees the in-memory model first
    report.after.size_bytes = _write_checked(pruned, model, output, force, pinned, skip_check=no_check, feeds=feeds)
    written = outputs.write()
    checked = _check_rest(model, output, policy) if policy is not None else None
    data = report.to_dict()
    if checked is not None:
        data["check"] = checked.to_dict()
    click.echo(json.dumps(data, indent=2) if as_json else report.format())
    for path in written:
        click.echo(f"wrote {path}", err=True)
    if search is not None and not as_json:  # the report's notes gave the verdict
        click.echo(search.format(headline=False))
    if checked is not None:
        from .gate import format_table

        if not as_json:
            click.echo(format_table(checked))
        if not checked.passed:
            raise VerificationError(f"wrote {output}, the most pruned model within the policy's fidelity thresholds, "
                                    "but it fails the rest of the policy: " + "; ".join(
                                        f"{c.name} {c.status}: {c.detail}" for c in checked.failed))
    if result_latency is not None:
        if as_json:  # what the profile and the loop say, on stderr beside the JSON
            for note in result_latency.notes:
                click.echo(f"note: {note}", err=True)
        else:  # the report's notes gave the verdict; the block ends with the loop's notes
            click.echo(result_latency.format(headline=False))
        if not result_latency.reached:
            click.echo(f"warning: latency target not reached: measured {result_latency.measured_fraction:.3f} of "
                       f"dense for a target of {result_latency.target:g}; wrote the closest model", err=True)


def _warn(report) -> None:
    """Print the report's warnings (OnnxPruneWarning messages), saying options where they name parameters; the
    report (its --json, the model card) keeps them so."""
    report.warnings = [on_command_line(w, OnnxPruneWarning.params) for w in report.warnings]
    for message in report.warnings:
        click.echo(f"warning: {message}", err=True)


def _within_only_alone(*names: str) -> None:
    """Options that decide how much to prune, given beside --within: an OptionError (the search decides)."""
    ctx = click.get_current_context()
    for name in names:
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            option = "--" + name.replace("_", "-")
            raise OptionError(f"{option} and --within both decide how much to prune: give one"
                              + ("; fine-tune the result with `onnxprune finetune`" if name == "finetune_epochs" else ""))


def _check_rest(model: str, output: str, policy):
    """`check` on the written model, when the policy has thresholds besides fidelity (speed, size, MACs), which
    the search does not decide; None otherwise."""
    from .gate import check

    if policy.min_speedup is None and policy.max_size_ratio is None and policy.max_macs_ratio is None:
        return None
    return check(model, output, policy, progress=Progress("bench").step)


def _latency_only(**given) -> None:
    """Options that only a latency target uses, set without one: an OptionError (they would change nothing)."""
    ctx = click.get_current_context()
    for name in given:
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise OptionError(f"--{name.replace('_file', '').replace('_', '-')} is for --latency-target or --speedup")


def _prune_to_latency(model, fraction, deployment, *, sensitivity_file, **options):
    """prune --latency-target: latency_target.prune_to_latency with the command's options."""
    from .latency_target import prune_to_latency
    from .sensitivity import load_sensitivity

    ctx = click.get_current_context()
    for name in ("ratio", "scope", "heads_ratio", "ffn_ratio"):
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise OptionError(f"--{name.replace('_', '-')} and --latency-target both choose how much to prune: "
                              "give one")
    return prune_to_latency(
        model, fraction, deployment,
        sensitivity=load_sensitivity(sensitivity_file) if sensitivity_file else None,
        progress=Progress("latency").step, warn=lambda m: click.echo(f"warning: {m}", err=True), **options)


def _calibration(model, calib, calib_images, size, mean, std, layout, limit):
    """What api.prune takes as `calib`: the .npz path, an ImageFolder, or None."""
    images = image_options_for(calib_images, "--calib-images", size, mean, std, layout)
    if calib is None and calib_images is None:
        return None
    if calib is not None and calib_images is not None:
        raise OptionError("--calib and --calib-images are exclusive: choose one")
    if limit < 1:
        raise OptionError(f"--calib-samples must be at least 1, got {limit}")
    if calib is not None:
        return calib
    from .calib import ImageFolder

    return ImageFolder(calib_images, images)


def _write_checked(holder: list, model: str, output: str, force: bool, pinned, skip_check: bool, feeds=None) -> int:
    """Write the model in `holder` (a one-item list, emptied so that the model is freed before the check) beside
    OUTPUT, check it against MODEL, then move it into place; returns its size on disk.

    A failed check or an interrupted write leaves OUTPUT (and MODEL, under --force) as they were.
    """
    with stage_model(holder.pop(), output, inputs=(model,), force=force, keep_model=False) as staged:
        size = staged.size()
        if not skip_check:
            for warning in check_runnable(model, staged.path, pinned, label=output, feeds=feeds,
                                          io_checked=feeds is not None):
                click.echo(f"warning: {warning}", err=True)
        staged.commit()
    return size


def _refuse_overwrite(model: str, output: str, force: bool) -> None:
    """Fail early, before any work: OUTPUT is MODEL (without --force), a folder, or a path through a file."""
    check_output_path(output, inputs=(model,), force=force)


def _prune_unstructured(model, sparsity, scope, pattern, exclude):
    from .unstructured import parse_pattern, prune_unstructured

    if sparsity is None and pattern is None:
        raise OptionError("--unstructured needs --sparsity S or --pattern N:M")
    if sparsity is None:
        n, m = parse_pattern(pattern)
        sparsity = 1.0 - n / m
    pruned, report = prune_unstructured(
        load_model(model), sparsity,
        scope="global" if scope == "global" else "layer",
        pattern=parse_pattern(pattern) if pattern else None, exclude=exclude,
    )
    if not report.layers:
        reasons = sorted({s.reason for s in report.skipped})
        raise NothingToPruneError(
            "nothing to prune: no Conv, ConvTranspose, Gemm or MatMul has a float constant weight"
            + (f" ({reasons[0]})" if reasons else "")
        )
    return pruned, report


@cli.command("sweep")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--ratios", default="0.1,0.3,0.5,0.7,0.9", show_default=True, help="Comma-separated pruning ratios.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for models, JSON, table, plot.")
@click.option("--round-to", type=int, default=None, help=f"Structured: kept-count multiple [default: {PlanOptions.round_to}].")
@click.option("--target", type=click.Choice(list(TARGET_CHOICES)), default=None, help="Sets --round-to, as for prune.")
@shape_option()
@click.option("--threads", type=int, default=1, show_default=True, help="intra_op_num_threads of the benchmark.")
@click.option("--batch", type=int, default=None, help="Batch size of the benchmark (default: the model's, or 1).")
@click.option("--rounds", type=int, default=6, show_default=True, help="Benchmark rounds (each visits every model).")
@click.option("--runs", type=int, default=3, show_default=True, help="Timed runs per visit.")
@click.option("--samples", type=int, default=4, show_default=True, help="Random samples for the fidelity numbers.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def sweep_cmd(model, ratios, out_dir, round_to, target, shapes, threads, batch, rounds, runs, samples, as_json):
    """Structured vs unstructured pruning of MODEL at several ratios: MACs, fidelity and latency side by side."""
    from .bench import BenchConfig
    from .sweep import METHODS, parse_ratios, sweep

    values = parse_ratios(ratios)
    pinned = parse_shapes(shapes) or None
    round_to = _round_to(round_to, target)
    config = BenchConfig(threads=(threads,), batches=(batch,) if batch else None, rounds=rounds, runs=runs,
                         warmup=3, shapes=dict(pinned or {}))
    config.validate()
    for note in counting_shapes(load_model(model), config.shapes, what="fidelity and latency are measured")[1]:
        click.echo(f"note: {note}", err=True)
    with Progress("sweep", len(values) * len(METHODS) + 1) as steps:
        report = sweep(model, values, out_dir, round_to=round_to, shapes=pinned, samples=samples, config=config,
                       progress=steps.step)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.format_markdown())
        click.echo("wrote " + ", ".join(report.files.values())
                   + ("" if "plot" in report.files else " (install onnxprune[plot] for sweep.png)"))


cli.add_command(verify_cmd)
cli.add_command(mlflow_group)
cli.add_command(bench_cmd)
cli.add_command(apply_plan_cmd)
cli.add_command(check_cmd)
cli.add_command(sensitivity_cmd)
cli.add_command(finetune_cmd)


def main(argv=None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("ONNXPRUNE_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    # The CLI owns its process (the library leaves onnxruntime's logger alone): the sessions that fold shape
    # arithmetic would warn about every fusion they skip.
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    try:
        cli.main(args=args, prog_name="onnxprune", standalone_mode=False, obj={"argv": args})
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OnnxPruneError as exc:
        if debug:  # the traceback as well, with the same exit code
            traceback.print_exc()
        click.echo(f"error: {exc.on_command_line() if isinstance(exc, OptionError) else exc}", err=True)
        sys.exit(exc.exit_code)
    except InternalError as exc:  # a bug onnxprune's own checks caught: its message, and how to report it
        if debug:  # the traceback as well, with the same exit code
            traceback.print_exc()
        text = str(exc).strip().splitlines()
        report = "with this output" if debug else "with --debug"
        click.echo(f"internal error: {text[0] if text else type(exc).__name__} (a bug: please report it {report})",
                   err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: one line by default, the traceback with --debug
        if debug:
            traceback.print_exc()
        text = str(exc).strip().splitlines()
        hint = "" if debug else " (rerun with --debug)"
        click.echo(f"internal error: {type(exc).__name__}: {text[0] if text else ''}{hint}", err=True)
        sys.exit(INTERNAL_ERROR_EXIT)


if __name__ == "__main__":
    main()
