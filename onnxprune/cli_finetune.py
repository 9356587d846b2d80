"""The `finetune` command: distill a pruned ONNX model from its dense teacher (needs onnxprune[finetune]).

The training itself lives in onnxprune/finetune/; this module reads the options and the data, draws the
progress, and writes the result atomically after the checker and an onnxruntime run.
"""

from __future__ import annotations

import json
import sys

import click

from .cli_options import image_options
from .errors import OnnxPruneError, OptionError
from .finetune.train import DEVICES, FinetuneOptions


class Interrupted(OnnxPruneError):
    """Ctrl-C stopped training; the best model so far was written."""

    exit_code = 130


def finetune_progress(before=None):
    """A Progress that draws a bar per epoch on a terminal, and a line per epoch elsewhere (a CI log);
    `before` is called when the first epoch starts (to close the previous stage's bar)."""
    from .finetune.train import Progress

    class EpochBar(Progress):
        def __init__(self):
            self.bar, self.loss, self.label = None, None, ""

        def epoch_start(self, epoch, epochs, steps):
            if before is not None:
                before()
            self.label = f"epoch {epoch}/{epochs}"
            if sys.stderr.isatty():
                self.bar = click.progressbar(length=steps, label=self.label, file=sys.stderr,
                                             item_show_func=lambda _: None if self.loss is None else f"loss {self.loss:.4f}")
                self.bar.__enter__()

        def step(self, loss):
            self.loss = loss
            if self.bar is not None:
                self.bar.update(1)

        def epoch_end(self, record):
            if self.bar is not None:
                self.bar.__exit__(None, None, None)
                self.bar = None
            if record.epoch == 0 and before is not None:
                before()
            label = self.label if record.epoch else "before training"
            click.echo(f"{label}: {describe_epoch(record)}", err=True)

    return EpochBar()


def describe_epoch(record) -> str:
    parts = ([f"loss {record.train_loss:.4f}"] if record.train_loss is not None else []) + [
        f"held-out loss {record.heldout_loss:.4f}"]
    if record.agreement is not None:
        parts.append(f"top-1 agreement {record.agreement:.4f}")
    if record.cosine is not None:
        parts.append(f"cosine {record.cosine:.4f}")
    if record.accuracy is not None:
        parts.append(f"accuracy {record.accuracy:.4f}")
    return ", ".join(parts) + f" ({record.seconds:.1f}s)"


def finetune_options_from(epochs, lr, batch_size, device, max_minutes, holdout, patience, augment, seed):
    options = FinetuneOptions(epochs, lr, batch_size, device, max_minutes, holdout, patience or None, augment, seed)
    options.validate()
    return options


@click.command("finetune")
@click.argument("pruned", type=click.Path(dir_okay=False))
@click.option("--teacher", required=True, type=click.Path(dir_okay=False), help="The dense model PRUNED came from.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the model.")
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Training inputs (.npz, one array per input, samples on axis 0); labels are not needed.")
@click.option("--calib-images", type=click.Path(file_okay=False), default=None,
              help="Training inputs from a folder of images (needs onnxprune[images]); see --size, --mean, --std.")
@image_options
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="Class ids (.npy, one per sample): adds a cross-entropy loss and reports held-out accuracy.")
@click.option("--samples", type=int, default=None, help="Most samples used (default: all).")
@click.option("--epochs", type=int, default=FinetuneOptions.epochs, show_default=True,
              help="Passes over the training split.")
@click.option("--lr", type=float, default=FinetuneOptions.lr, show_default=True,
              help="Peak learning rate (AdamW, cosine decay).")
@click.option("--batch-size", type=int, default=FinetuneOptions.batch_size, show_default=True, help="Samples per step.")
@click.option("--device", type=click.Choice(list(DEVICES)), default=FinetuneOptions.device, show_default=True,
              help="Where the student trains (the teacher runs in onnxruntime on CPU).")
@click.option("--max-minutes", type=float, default=None, help="Stop training after this long; the best model is kept.")
@click.option("--holdout", type=float, default=FinetuneOptions.holdout, show_default=True,
              help="Fraction of the samples held out to pick the best epoch.")
@click.option("--patience", type=int, default=FinetuneOptions.patience, show_default=True,
              help="Stop after this many epochs without a better held-out score (0: never).")
@click.option("--augment/--no-augment", default=FinetuneOptions.augment, show_default=True,
              help="Image inputs: zoom, shift, flip, contrast and mixup; the teacher labels what comes out.")
@click.option("--seed", type=int, default=FinetuneOptions.seed, show_default=True,
              help="Seed of the split, the order and the augmentation.")
@click.option("--force", is_flag=True, help="Allow writing over the input model.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def finetune_cmd(pruned, teacher, output, data, calib_images, size, mean, std, layout, labels, samples, epochs, lr,
                 batch_size, device, max_minutes, holdout, patience, augment, seed, force, as_json):
    """Fine-tune PRUNED by distillation from TEACHER's outputs and write it to OUTPUT.

    The student is PRUNED's own graph run in PyTorch: only its weights change, so OUTPUT has PRUNED's inputs,
    outputs, opset and structure. Unlabeled inputs are enough; a share of them (--holdout) is never trained on
    and picks the best epoch. Ctrl-C or --max-minutes writes the best model so far.
    """
    from .cli import _calibration
    from .io import check_output_path, load_model, stage_model
    from .validate import check_runnable
    from .verify import load_labels

    check_output_path(output, inputs=(pruned, teacher), force=force)
    if data is None and calib_images is None:
        raise OptionError("give the training inputs: --data X.npz or --calib-images DIR")
    if samples is not None and samples < 2:
        raise OptionError(f"--samples must be at least 2, got {samples}")
    options = finetune_options_from(epochs, lr, batch_size, device, max_minutes, holdout, patience, augment, seed)
    from . import api

    student = load_model(pruned)
    source = _calibration(pruned, data, calib_images, size, mean, std, layout, samples or 1 << 62)
    sample_set = api.calibration_samples(source, student, None, option="--data", minimum=2)
    label_array = load_labels(labels) if labels is not None else None
    from .finetune.train import check_labels, finetune

    check_labels(label_array, sample_set)  # against every sample given, before --samples takes the first ones
    sample_set = sample_set.take(samples)
    if label_array is not None:
        label_array = label_array[:sample_set.count]

    trained, report = finetune(student, teacher, sample_set, label_array, options, finetune_progress())
    with stage_model(trained, output, inputs=(pruned, teacher), force=force, keep_model=False) as staged:
        check_runnable(pruned, staged.path, label=output)
        staged.commit()
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"wrote {output} (max difference from the trained torch module in onnxruntime: "
               f"{report.check_max_diff:.2e})", err=as_json)
    if report.stopped == "interrupted":
        raise Interrupted(f"interrupted: {output} holds the best model so far (epoch {report.best_epoch})")
