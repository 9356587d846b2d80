"""The commands of deployment pipelines: `apply-plan` and `check`, and the plan and model card that `prune`
and `apply-plan` write beside their model (--plan-out, --report). The main CLI adds the commands to its group.

Exit codes as in cli.py: 0 pass, 1 bad input (a plan that does not fit, a malformed policy), 4 a check failed or
was left open by the noise.
"""

from __future__ import annotations

import json
import os
import shlex
from typing import Optional

import click

from .bench import PROVIDERS
from .cli_options import calibration_options, fidelity_options, output_report_options, shape_option
from .errors import OptionError, VerificationError
from .inputs import parse_shapes


# ---------------------------------------------------------------------------------------------------------------
# --plan-out and --report


class PipelineOutputs:
    """The plan and the model card a pruning command writes beside its model.

    Use: `outputs = PipelineOutputs(...)` before any work (it refuses bad paths early), `outputs.take(result)`
    while the PruneResult is alive, and `outputs.write(output)` once the model is written.
    """

    def __init__(self, model: str, output: str, plan_out: Optional[str], report_dir: Optional[str],
                 report_bench: bool = False, force: bool = False):
        from .io import check_output_path

        self.model, self.output, self.plan_out, self.report_dir = model, output, plan_out, report_dir
        self.report_bench, self.force = report_bench, force
        if report_bench and report_dir is None:
            raise OptionError("--report-bench adds a benchmark to the model card: give --report DIR")
        if plan_out is not None:
            check_output_path(plan_out, inputs=(model, output), force=False)
        if report_dir is not None and os.path.isfile(report_dir):
            raise OptionError(f"--report {report_dir}: is a file, expected a folder")
        self.plan = self.facts = None
        ctx = click.get_current_context(silent=True)
        argv = (ctx.obj or {}).get("argv") if ctx is not None and isinstance(ctx.obj, dict) else None
        self.command = shlex.join(["onnxprune", *argv]) if argv is not None else None

    def take(self, result) -> None:
        """Keep what the outputs need of `result` (the plan, the card's facts) so the models can be freed."""
        from .card import PruneFacts

        if self.plan_out is not None:
            from .api import pruning_plan

            self.plan = pruning_plan(result)
        self.facts = PruneFacts.of(result)

    def write(self) -> list[str]:
        """Write the plan and the card; returns the paths written."""
        written = []
        if self.plan is not None:
            written.append(str(self.plan.save(self.plan_out, inputs=(self.model, self.output))))
        if self.report_dir is not None:
            from .card import model_card

            bench_report = None
            if self.report_bench:
                from .bench import BenchConfig, bench

                from .progress import Progress

                bench_report = bench([self.model, self.output], BenchConfig(shapes=dict(self.facts.shapes)),
                                     progress=Progress("bench").step)
            card = model_card(self.facts, self.output, plan=self.plan_out, command=self.command, bench=bench_report)
            written += [str(p) for p in card.write(self.report_dir)]
        return written


# ---------------------------------------------------------------------------------------------------------------
# apply-plan


@click.command("apply-plan")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the pruned model.")
@shape_option()
@calibration_options
@click.option("--force", is_flag=True, help="Allow writing over the input model.")
@click.option("--no-check", is_flag=True, help="Skip the checker and onnxruntime run of the written model.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@output_report_options
def apply_plan_cmd(model, plan, output, shapes, calib, calib_images, size, mean, std, layout, force, no_check,
                   as_json, plan_out, report_dir, report_bench):
    """Prune MODEL as PLAN (from prune --plan-out) says and write it to OUTPUT.

    On the model the plan was made on this gives the same bytes as that prune run; on a re-export of the same
    network (same weight names, other node names or order) an equivalent model. A plan that does not fit fails
    with one line naming the first mismatch. A plan made with recovery needs the same calibration data
    (--calib, or --calib-images with the same image options).
    """
    from . import api
    from .cli import PRUNE_STAGES, _calibration, _write_checked
    from .progress import Stages
    from .planfile import PlanFile
    from .provenance import model_sha256
    from .validate import check_io
    from .inputs import make_inputs

    from .io import check_output_path

    check_output_path(output, inputs=(model,), force=force)
    outputs = PipelineOutputs(model, output, plan_out, report_dir, report_bench)
    planned = PlanFile.load(plan)
    pinned = parse_shapes(shapes) or None
    with Stages(PRUNE_STAGES) as bar:
        samples = _calibration(model, calib, calib_images, size, mean, std, layout, 1)
        result = api.apply_plan(model, planned, shapes=pinned, calib=samples, progress=bar.update)
    notes = []
    if planned.source_sha256 and model_sha256(model) != planned.source_sha256:
        notes.append(f"{model} is not the model the plan was made on ({planned.source_name or 'SHA-256'} differs): "
                     "its groups were matched by weight names")
    if planned.onnxprune and planned.onnxprune != _version():
        notes.append(f"the plan was made with onnxprune {planned.onnxprune}, this is {_version()}")
    result.report.notes[:0] = notes
    outputs.take(result)
    report = result.report
    feeds = None
    if not no_check:
        check_io(result.dense_io, result.model)
        feeds = make_inputs(result.model, shapes=pinned or result.shapes or None, samples=1, seed=0)[0]
    pruned = [result.model]
    del result
    report.after.size_bytes = _write_checked(pruned, model, output, force, pinned, skip_check=no_check, feeds=feeds)
    written = outputs.write()
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format())
    for path in written:
        click.echo(f"wrote {path}", err=True)


def _version() -> str:
    from .provenance import versions

    return versions()["onnxprune"]


# ---------------------------------------------------------------------------------------------------------------
# check


@click.command("check")
@click.argument("dense", type=click.Path(dir_okay=False))
@click.argument("pruned", type=click.Path(dir_okay=False))
@click.option("--policy", type=click.Path(dir_okay=False), default=None,
              help="Thresholds and settings from a TOML file (keys named as these options); options override it.")
@fidelity_options
@click.option("--samples", type=int, default=None, help="Random input samples without --data [default: 4].")
@click.option("--min-speedup", type=float, default=None,
              help="Fail unless the lower end of the speedup's 95% interval, less the control's noise, reaches this.")
@click.option("--max-size-ratio", type=float, default=None, help="Fail if pruned/dense bytes on disk is larger.")
@click.option("--max-macs-ratio", type=float, default=None, help="Fail if pruned/dense MACs is larger.")
@click.option("--provider", type=click.Choice(list(PROVIDERS)), default=None,
              help="--min-speedup: execution provider [default: cpu].")
@click.option("--batch", type=int, default=None, help="--min-speedup: batch size [default: the model's, or 1].")
@click.option("--threads", type=int, default=None, help="--min-speedup: intra_op_num_threads [default: 1].")
@click.option("--rounds", type=int, default=None, help="--min-speedup: shuffled rounds [default: 10].")
@click.option("--runs", type=int, default=None, help="--min-speedup: timed runs per visit [default: 5].")
@click.option("--warmup", type=int, default=None, help="--min-speedup: untimed warm-up runs [default: 5].")
@shape_option()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def check_cmd(dense, pruned, policy, shapes, as_json, **settings):
    """Pass or fail PRUNED against DENSE on thresholds: exit 0 when all pass, 4 when one fails (or the noise
    leaves it open), 1 on bad input. With $GITHUB_STEP_SUMMARY set, a Markdown summary is appended to it."""
    from .gate import CheckPolicy, check, format_markdown, format_table, load_policy

    base = load_policy(policy) if policy is not None else CheckPolicy()
    if shapes:
        settings["shape"] = list(shapes)
    from .progress import Progress

    result = check(dense, pruned, base.updated(settings), progress=Progress("bench").step)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_table(result))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as f:
                f.write(format_markdown(result) + "\n")
        except OSError as exc:
            click.echo(f"note: cannot append to $GITHUB_STEP_SUMMARY ({summary}): {exc.strerror}", err=True)
    if not result.passed:
        raise VerificationError("check failed: " + "; ".join(f"{c.name} {c.status}: {c.detail}" for c in result.failed))
