"""The `verify` and `bench` commands. The main CLI adds them to its group:

    main.add_command(verify_cmd)
    main.add_command(bench_cmd)

User errors are raised as OnnxPruneError subclasses; the main CLI prints their one-line message and exits with
their `exit_code` (a failed verification gate: VerificationError, exit code 4, after the table is printed).
"""

from __future__ import annotations

import json

import click

from .bench import PROVIDERS, BenchConfig, bench, format_markdown
from .bench import format_table as format_bench_table
from .cli_options import fidelity_options, image_options, image_options_for, shape_option
from .diagnosis import gather
from .errors import OptionError, VerificationError
from .inputs import counting_shapes, load_inputs_images, load_inputs_npz, make_inputs, parse_shapes
from .io import load_model
from .layers import bench_layers, format_groups
from .progress import Progress, Stages
from .verify import Gates, compare, format_table, load_labels


# progress of the given inputs (--data, --data-images); random inputs are a few small batches
VERIFY_STAGES = {"images": ("reading images", "images"), "batches": ("running both models", "batches")}


@click.command("verify")
@click.argument("dense", type=click.Path(dir_okay=False))
@click.argument("pruned", type=click.Path(dir_okay=False))
@shape_option()
@click.option("--samples", type=int, default=None, help="Random input batches to compare on (default 4).")
@fidelity_options
@click.option("--data-images", type=click.Path(file_okay=False), default=None,
              help="Inputs from a folder of images, sorted by name (needs onnxprune[images]); see --size, --mean, "
                   "--std, --layout. --labels then holds one class id per image.")
@image_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
def verify_cmd(dense, pruned, shapes, samples, data, data_images, size, mean, std, layout, seed, max_rel_error,
               min_cosine, min_top1, max_abs, labels, max_accuracy_drop, as_json):
    """Compare DENSE and PRUNED on the same inputs with onnxruntime; exit 4 if a gate fails.

    Without --data or --data-images the inputs are random: the numbers then say how much the function changed
    on noise, not how accurate the pruned model is.
    """
    gates = Gates(min_cosine=min_cosine, min_top1=min_top1, max_abs=max_abs, max_accuracy_drop=max_accuracy_drop,
                  max_rel_error=max_rel_error)
    gates.validate()
    images = image_options_for(data_images, "--data-images", size, mean, std, layout)
    if data is not None and data_images is not None:
        raise OptionError("--data and --data-images are exclusive: choose one")
    given = "--data" if data is not None else "--data-images" if data_images is not None else None
    if labels is not None and given is None:
        raise OptionError("--labels needs the inputs they label: give --data X.npz or --data-images DIR")
    if max_accuracy_drop is not None and labels is None:
        raise OptionError("--max-accuracy-drop needs --labels (and --data or --data-images)")
    if given is not None and (shapes or samples is not None):
        raise OptionError(f"{given} gives the inputs and their shapes: drop --shape and --samples")
    with Stages(VERIFY_STAGES) as stages:
        if data is not None:
            feeds, inputs = load_inputs_npz(data, dense), f"--data {data}"
        elif data_images is not None:
            feeds = load_inputs_images(data_images, dense, images, progress=lambda *n: stages.update("images", *n))
            inputs = f"--data-images {data_images}"
        else:
            measured, notes = counting_shapes(load_model(dense), parse_shapes(shapes), what="the outputs are compared")
            _notes(notes)
            feeds, inputs = make_inputs(dense, measured, samples=4 if samples is None else samples,
                                        seed=0 if seed is None else seed), "random"
        report = compare(dense, pruned, feeds, gates=gates, labels=load_labels(labels) if labels else None,
                         inputs=inputs, progress=lambda *n: stages.update("batches", *n) if given else None)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_table(report))
    if as_json:  # the table shows them beside the verdict; a pipeline reading JSON sees them in its log
        for warning in report.gate_warnings:
            click.echo(f"warning: {warning}", err=True)
    if not report.passed:
        raise VerificationError(
            f"verification failed: {len(report.failures)} gate(s): " + "; ".join(str(f) for f in report.failures)
        )


@click.command("bench")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--provider", "providers", multiple=True, type=click.Choice(list(PROVIDERS)),
              help="Execution provider (repeatable; default cpu). Missing ones are reported as unavailable.")
@click.option("--batch", "batches", multiple=True, type=int,
              help="Batch size (repeatable); replaces the first dim. Default: the model's own batch, else 1.")
@click.option("--threads", multiple=True, type=int, help="intra_op_num_threads (repeatable; default 1).")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed warm-up runs per session.")
@click.option("--runs", type=int, default=5, show_default=True, help="Timed runs per visit of a model.")
@click.option("--rounds", type=int, default=10, show_default=True, help="Shuffled rounds visiting every model.")
@shape_option("Pin other dynamic dims, NAME=1x3x224x224 (repeatable); the first dim is set by --batch.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the inputs and the round order.")
@click.option("--require-provider", is_flag=True, help="Fail instead of reporting an unavailable provider.")
@click.option("--trt-sparsity", is_flag=True, help="TensorRT: enable sparse kernels (trt_sparsity_enable).")
@click.option("--visit-ms", type=float, default=20.0, show_default=True,
              help="Timed work per visit, at least: a fast model gets more than --runs timed runs per visit.")
@click.option("--cuda-graph", is_flag=True,
              help="CUDA: capture each model as a CUDA graph and replay it (inputs and outputs preallocated on the "
                   "device); needs --provider cuda.")
@click.option("--fp16", is_flag=True,
              help="Time float16 copies of the models (inputs and outputs stay float32), each checked against its "
                   "float32 model before timing.")
@click.option("--diagnose/--no-diagnose", default=True, show_default=True,
              help="When a speedup falls far short of the MAC reduction, measure why on the first model (batch "
                   "scaling, a CUDA graph on CUDA, kernels per run) and say so.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--markdown", is_flag=True, help="Print the report as Markdown tables.")
@click.option("--layers", type=int, default=None, metavar="N",
              help="Then profile the first model and each other one layer by layer (CPU; --warmup runs, then "
                   "--runs x --rounds profiled runs) and show the N layers that take the most time.")
def bench_cmd(models, providers, batches, threads, warmup, runs, rounds, shapes, seed, require_provider,
              trt_sparsity, visit_ms, cuda_graph, fp16, diagnose, as_json, markdown, layers):
    """Time MODEL [MODEL ...] side by side; the first is the baseline, and a control row shows the noise."""
    if as_json and markdown:
        raise OptionError("--json and --markdown are exclusive: choose one")
    if layers is not None and (layers < 1 or len(models) < 2):
        raise OptionError("--layers N compares the first model with the others: it needs N >= 1 and two models")
    config = BenchConfig(
        providers=tuple(providers) or ("cpu",),
        batches=tuple(batches) or None,
        threads=tuple(threads) or (1,),
        warmup=warmup,
        runs=runs,
        rounds=rounds,
        shapes=parse_shapes(shapes),
        seed=seed,
        require_provider=require_provider,
        trt_sparsity=trt_sparsity,
        visit_ms=visit_ms,
        cuda_graph=cuda_graph,
        fp16=fp16,
    )
    config.validate()
    _notes(counting_shapes(load_model(models[0]), config.shapes, what="latency is measured")[1])
    if layers and fp16:
        _notes(["--layers profiles the float32 files on the CPU, not the float16 copies"])
    steps = Progress("bench")
    report = bench(list(models), config, progress=steps.step)
    if diagnose:
        report.diagnoses = gather(report, models[0], progress=steps.step)
    groups = bench_layers(list(models), report, progress=steps.step) if layers else []
    if as_json:
        data = report.to_dict()
        if layers:
            data["layers"] = [g.to_dict() for g in groups]
        click.echo(json.dumps(data, indent=2))
    elif markdown:
        click.echo(format_markdown(report), nl=False)
        if layers:
            click.echo("\n" + format_groups(groups, layers, markdown=True), nl=False)
    else:
        click.echo(format_bench_table(report))
        if layers:
            click.echo("\n" + format_groups(groups, layers), nl=False)


def _notes(notes: list[str]) -> None:
    for note in notes:
        click.echo(f"note: {note}", err=True)
