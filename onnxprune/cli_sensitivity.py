"""The `sensitivity` command: each group narrowed alone, its fidelity and the milliseconds it saves
(sensitivity.py). The main CLI adds it to its group: `cli.add_command(sensitivity_cmd)`."""

from __future__ import annotations

import json

import click

from .calib import CALIB_SAMPLES
from .cli_options import deployment_for, deployment_options, executor_options, round_to_from, shape_option
from .errors import OptionError
from .executors import make_executor
from .inputs import parse_shapes
from .plan import PlanOptions
from .progress import Progress
from .sweep import parse_ratios
from .target import CHOICES as TARGET_CHOICES
from .verify import load_labels


@click.command("sensitivity")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--calib", required=True, type=click.Path(dir_okay=False),
              help="Calibration inputs (.npz, one array per input, samples on axis 0): fidelity is measured on them.")
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="Class ids (.npy, one per calibration sample): accuracy at every ratio too.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for sensitivity.json, .md and .png (a rerun there resumes an interrupted run).")
@click.option("--ratios", default="0.25,0.5,0.75", show_default=True, help="Comma-separated ratios per group.")
@click.option("--round-to", type=int, default=None, help=f"Kept-count multiple [default: {PlanOptions.round_to}].")
@click.option("--target", type=click.Choice(list(TARGET_CHOICES)), default=None, help="Sets --round-to, as for prune.")
@click.option("--min-channels", type=int, default=PlanOptions.min_channels, show_default=True,
              help="Fewest channels a group keeps.")
@click.option("--calib-samples", type=int, default=CALIB_SAMPLES, show_default=True, help="Most calibration samples used.")
@shape_option()
@deployment_options
@click.option("--no-latency", is_flag=True, help="Skip the latency profile (no milliseconds column).")
@executor_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def sensitivity_cmd(model, calib, labels, out_dir, ratios, round_to, target, min_channels, calib_samples, shapes,
                    provider, batch, threads, latency_cache, latency_profile, latency_budget, no_latency, executor,
                    ray_address, as_json):
    """Fidelity of MODEL with each group narrowed alone at each ratio, and the milliseconds each saves."""
    from .sensitivity import sensitivity

    step = round_to_from(round_to, target)
    if calib_samples < 1:
        raise OptionError(f"--calib-samples must be at least 1, got {calib_samples}")
    deployment = None if no_latency else deployment_for(provider, batch, threads)
    runner = make_executor(executor, ray_address)
    tasks: list[Progress] = []

    def progress(done: int, total: int) -> None:
        if not tasks:
            tasks.append(Progress("sensitivity", total, unit="tasks"))
        tasks[0].update(done)

    try:
        report = sensitivity(
            model, calib, out_dir, labels=load_labels(labels) if labels else None, ratios=parse_ratios(ratios),
            round_to=step, min_channels=min_channels, calib_samples=calib_samples,
            shapes=parse_shapes(shapes) or None, deployment=deployment, executor=runner,
            cache_dir=latency_cache, profile_file=latency_profile, budget_s=latency_budget,
            progress=progress, say=lambda m: click.echo(f"sensitivity: {m}", err=True),
            warn=lambda m: click.echo(f"warning: {m}", err=True),
        )
    finally:
        for bar in tasks:
            bar.close()
        runner.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.format_markdown())
        click.echo("wrote " + ", ".join(report.files.values())
                   + ("" if "plot" in report.files else " (install onnxprune[plot] for sensitivity.png)"))
