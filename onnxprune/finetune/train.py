"""Distillation of a pruned model from its dense teacher: the training loop, held-out selection and the output.

`finetune(pruned, teacher, samples)` trains the pruned graph's weights (student.py) to reproduce the
teacher's outputs, which onnxruntime computes on the same (augmented) inputs, so unlabeled inputs are enough;
`labels` add a cross-entropy task loss. A seeded held-out split of the samples, never trained on, picks the
best epoch (and stops early); the best weights are written back into the pruned graph, and the written model
is checked against the torch module on the held-out inputs. Ctrl-C and the time limit end training early and
still return the best model so far (`report.stopped` says why it stopped). The pruned model is not changed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import onnx

from ..calib import SampleSet
from ..errors import OptionError
from ..inputs import model_inputs
from ..validate import InvalidOutputError

DEVICES = ("cpu", "cuda")
DEFAULT_PATIENCE = 10
HELD_OUT_VIEWS = 4  # augmented views of each held-out image in the held-out loss (image inputs)


@dataclass
class FinetuneOptions:
    epochs: int = 10
    lr: float = 1e-4  # Adam at 1e-3 unsettled pretrained weights: held-out KL 0.15 -> 0.48 within 4 steps
    batch_size: int = 32
    device: str = "cpu"
    max_minutes: Optional[float] = None
    holdout: float = 0.1  # fraction of the samples kept out of training, to pick the best epoch
    patience: Optional[int] = DEFAULT_PATIENCE  # epochs without a better held-out score before stopping
    augment: bool = True  # for image inputs
    seed: int = 0

    def validate(self) -> None:
        if self.epochs < 1:
            raise OptionError(f"epochs must be at least 1, got {self.epochs}", params=("epochs",))
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise OptionError(f"lr must be a positive number, got {self.lr}", params=("lr",))
        if self.batch_size < 1:
            raise OptionError(f"batch_size must be at least 1, got {self.batch_size}", params=("batch_size",))
        if self.device not in DEVICES:
            raise OptionError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}", params=("device",))
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise OptionError(f"max_minutes must be positive, got {self.max_minutes}", params=("max_minutes",))
        if not 0 < self.holdout < 1:
            raise OptionError(f"holdout must be between 0 and 1, got {self.holdout}", params=("holdout",))
        if self.patience is not None and self.patience < 1:
            raise OptionError(f"patience must be at least 1, got {self.patience}", params=("patience",))


@dataclass
class EpochRecord:
    epoch: int  # 0: before training
    train_loss: Optional[float]
    heldout_loss: float  # distillation loss on the held-out samples and, for images, augmented views of them
    agreement: Optional[float]  # top-1 agreement with the teacher on the held-out split (classifier outputs)
    cosine: Optional[float]  # mean cosine similarity with the teacher's outputs, held out
    accuracy: Optional[float]  # with labels: held-out accuracy
    seconds: float  # wall time of this epoch's training steps


@dataclass
class FinetuneReport:
    train_samples: int
    heldout_samples: int
    parameters: int  # trained values
    device: str
    augmented: bool
    probabilities: list[str]  # outputs matched as probabilities (a Softmax at the end)
    epochs: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = "completed"  # completed, early stop, time limit, interrupted
    seconds: float = 0.0
    check_max_diff: Optional[float] = None  # written ONNX vs the torch module, held-out inputs

    @property
    def before(self) -> EpochRecord:
        return self.epochs[0]

    @property
    def best(self) -> EpochRecord:
        return next(e for e in self.epochs if e.epoch == self.best_epoch)

    @property
    def warnings(self) -> list[str]:
        """What the kept epoch's own scores say against it: the held-out loss picked it (no labels), yet its top-1
        agreement with the teacher on the held-out inputs fell."""
        b, a = self.before, self.best
        if a.epoch == 0 or a.accuracy is not None or a.agreement is None or b.agreement is None:
            return []
        if a.agreement >= b.agreement:
            return []
        views = " and augmented views of them" if self.augmented else ""
        return [f"the kept epoch {a.epoch} was picked by the loss on the held-out inputs{views}, but its top-1 "
                f"agreement with the dense model on the held-out inputs fell {b.agreement:.3f} -> {a.agreement:.3f}: "
                "compare both models "
                "on labelled data (onnxprune verify --data X --labels Y) before using it (the starting score is "
                "optimistic where recovery fitted these same inputs)"]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["before"], out["best"] = asdict(self.before), asdict(self.best)
        out["warnings"] = self.warnings
        return out

    def summary(self) -> str:
        b, a = self.before, self.best
        parts = [f"fine-tuned {len(self.epochs) - 1} epoch(s) on {self.train_samples} samples "
                 f"({self.heldout_samples} held out) in {self.seconds:.0f}s, {self.stopped}; kept epoch {a.epoch}"]
        if a.accuracy is not None:
            parts.append(f"held-out accuracy {b.accuracy:.4f} -> {a.accuracy:.4f}")
        if a.agreement is not None:
            parts.append(f"top-1 agreement with the dense model {b.agreement:.4f} -> {a.agreement:.4f}")
        if a.cosine is not None:
            parts.append(f"cosine {b.cosine:.4f} -> {a.cosine:.4f}")
        if self.heldout_samples < 100:
            parts.append(f"(held-out scores from {self.heldout_samples} samples: one sample is "
                         f"{100 / self.heldout_samples:.1f} points)")
        return "; ".join(parts)


class Progress:
    """What the training loop reports; the CLI draws it (a bar per epoch, or a line per epoch)."""

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self, loss: float) -> None:
        pass

    def epoch_end(self, record: EpochRecord) -> None:
        pass


# ---------------------------------------------------------------------------------------------------------------
# Data: units of samples (a row of a batched input, or one whole feed), cut into batches


@dataclass
class _Data:
    samples: SampleSet
    names: list[str]
    dtypes: dict[str, np.dtype]
    units: list[np.ndarray]  # row indices per unit
    batched: bool  # units are single rows of inputs with a free batch axis: a batch is one feed

    def feeds(self, unit_ids) -> list[dict[str, np.ndarray]]:
        if self.batched:
            rows = np.concatenate([self.units[u] for u in unit_ids])
            return [{k: v[rows] for k, v in self.samples.arrays.items()}]
        if self.samples.given:
            return [self.samples.given[u] for u in unit_ids]
        if self.samples.stacked:
            return [{k: v[u] for k, v in self.samples.arrays.items()} for u in unit_ids]
        return [{k: v[self.units[u]] for k, v in self.samples.arrays.items()} for u in unit_ids]

    def rows(self, unit_ids) -> np.ndarray:
        return np.concatenate([self.units[u] for u in unit_ids])


def _data(samples: SampleSet, model: onnx.ModelProto) -> _Data:
    specs = model_inputs(model)
    names = [s.name for s in specs]
    dtypes = {s.name: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(s.elem_type)) for s in specs}
    if samples.given:
        counts = [len(next(iter(f.values()))) if next(iter(f.values())).ndim else 1 for f in samples.given]
        starts = np.cumsum([0] + counts)
        units = [np.arange(starts[i], starts[i + 1]) for i in range(len(counts))]
        return _Data(samples, names, dtypes, units, batched=False)
    n = samples.count
    if samples.stacked:
        return _Data(samples, names, dtypes, [np.array([i]) for i in range(n)], batched=False)
    if samples.fixed_batch:
        step = samples.fixed_batch
        return _Data(samples, names, dtypes, [np.arange(i, i + step) for i in range(0, n - n % step, step)], False)
    return _Data(samples, names, dtypes, [np.array([i]) for i in range(n)], batched=True)


def check_labels(labels: Optional[np.ndarray], samples: SampleSet, label: str = "--labels") -> None:
    if labels is None:
        return
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise OptionError(f"{label}: needs a 1-D array of integer class ids, got {labels.dtype} {list(labels.shape)}")
    if labels.size != samples.count:
        raise OptionError(f"{label}: holds {labels.size} labels for {samples.count} samples")
    if labels.size and labels.min() < 0:
        raise OptionError(f"{label}: class ids must not be negative (found {int(labels.min())})")


# ---------------------------------------------------------------------------------------------------------------
# Losses and scores


def _is_classes(shape) -> bool:
    return len(shape) == 2 and shape[1] > 1


def _softmax_outputs(model: onnx.ModelProto) -> list[str]:
    """Outputs produced by a Softmax (through shape-only ops): probabilities, matched as such."""
    producer = {o: n for n in model.graph.node for o in n.output}
    found = []
    for out in model.graph.output:
        node = producer.get(out.name)
        while node is not None and node.op_type in ("Identity", "Reshape", "Flatten", "Squeeze", "Cast"):
            node = producer.get(node.input[0])
        if node is not None and node.op_type == "Softmax":
            found.append(out.name)
    return found


class _Loss:
    def __init__(self, names: list[str], probabilities: list[str], class_output: Optional[str]):
        self.names, self.probabilities, self.class_output = names, set(probabilities), class_output

    def log_probs(self, name: str, x):
        import torch

        if name in self.probabilities:
            return torch.log(x.clamp_min(1e-8))
        return torch.log_softmax(x, dim=1)

    def __call__(self, student: list, teacher: list, labels=None, mix=None):
        import torch

        total = 0.0
        for name, s, t in zip(self.names, student, teacher):
            s = s.float()
            if _is_classes(s.shape):
                log_s, log_t = self.log_probs(name, s), self.log_probs(name, t)
                total = total + (log_t.exp() * (log_t - log_s)).sum(1).mean()
            else:
                total = total + ((s - t) ** 2).mean() / ((t ** 2).mean() + 1e-8)
        if labels is not None and self.class_output is not None:
            log_s = self.log_probs(self.class_output, student[self.names.index(self.class_output)].float())
            task = torch.nn.functional.nll_loss(log_s, labels, reduction="none")
            if mix is not None:  # augmentation runs on the CPU: its mix follows the loss to the device
                partner, weight = mix.partner.to(labels.device), mix.weight.to(task.device)
                other = torch.nn.functional.nll_loss(log_s, labels[partner], reduction="none")
                task = weight * task + (1 - weight) * other
            total = total + task.mean()
        return total


# ---------------------------------------------------------------------------------------------------------------
# The loop


def finetune(pruned: onnx.ModelProto, teacher, samples: SampleSet, labels: Optional[np.ndarray] = None,
             options: Optional[FinetuneOptions] = None, progress: Optional[Progress] = None):
    """Train `pruned`'s weights by distillation from `teacher` (a path or ModelProto); returns (model, report).

    `pruned` is not changed; the returned model is a copy with the best held-out weights.
    """
    try:
        import torch
    except ImportError:
        raise OptionError("fine-tuning needs PyTorch: pip install 'onnxprune[finetune]'") from None

    from ..session import open_session, run_session, source_label
    from .augment import augment, image_layout
    from .student import Student, StudentError, write_back

    options = options or FinetuneOptions()
    options.validate()
    progress = progress or Progress()
    check_labels(labels, samples)
    if options.device == "cuda" and not torch.cuda.is_available():
        raise OptionError("device cuda: this torch build or machine has no CUDA device", params=("device",))
    data = _data(samples, pruned)
    if len(data.units) < 2:
        raise OptionError(f"{samples.source}: fine-tuning needs at least 2 samples (one to train, one held out)")
    try:
        student = Student(pruned)
    except StudentError as exc:
        raise OptionError(str(exc)) from None
    if student.parameter_count() == 0:
        raise OptionError("the pruned model has no float weights to fine-tune")
    device = torch.device(options.device)
    student.to(device)
    session = open_session(teacher)
    out_names = student.output_names
    teacher_in = sorted(i.name for i in session.get_inputs())
    teacher_names = [o.name for o in session.get_outputs()]
    teacher_out = set(teacher_names)
    if teacher_in != sorted(data.names) or not set(out_names) <= teacher_out:
        raise OptionError(f"the teacher's inputs {teacher_in} and outputs {sorted(teacher_out)} are not the pruned "
                          f"model's ({sorted(data.names)}, {out_names}): give the dense model it was pruned from")
    rng = np.random.default_rng(options.seed)
    gen = torch.Generator().manual_seed(options.seed)
    order = rng.permutation(len(data.units))
    n_held = min(len(order) - 1, max(1, round(len(order) * options.holdout)))
    held, train = np.sort(order[:n_held]), order[n_held:]
    spec_dims = {s.name: s.dims for s in model_inputs(pruned)}
    layouts = {}
    if options.augment and data.batched:
        for name in data.names:
            layout = image_layout(spec_dims[name], data.dtypes[name].kind == "f")
            if layout is not None:
                layouts[name] = layout

    def teacher_outputs(feed: dict[str, np.ndarray]) -> list:
        feed = {k: np.ascontiguousarray(v, dtype=data.dtypes[k]) for k, v in feed.items()}
        outs = run_session(session, feed, f"the teacher {source_label(teacher)}")
        outs = [outs[teacher_names.index(n)] for n in out_names]
        return [torch.from_numpy(np.asarray(o, dtype=np.float32)).to(device) for o in outs]

    def student_outputs(feed: dict[str, np.ndarray]) -> list:
        return student(*[torch.from_numpy(np.asarray(feed[n]).astype(np.float32) if data.dtypes[n] == np.float16
                                          else np.asarray(feed[n])).to(device) for n in student.input_names])

    held_feeds = data.feeds(held) if data.batched else None
    first = teacher_outputs(data.feeds(held[:1])[0])
    probabilities = _softmax_outputs(pruned)
    class_output = next((n for n, o in zip(out_names, first) if _is_classes(o.shape)), None)
    if labels is not None and class_output is None:
        raise OptionError("--labels was given but no output is shaped [N, classes] (2-D, classes > 1)")
    loss_fn = _Loss(out_names, probabilities, class_output)
    label_t = torch.from_numpy(labels.astype(np.int64)).to(device) if labels is not None else None

    def held_batches():
        if data.batched:
            for start in range(0, len(held), 256):
                ids = held[start:start + 256]
                yield data.feeds(ids)[0], data.rows(ids)
        else:
            for u in held:
                yield data.feeds([u])[0], data.units[u]

    held_teacher = [teacher_outputs(feed) for feed, _ in held_batches()]
    # Augmented views of the held-out images, fixed for the run: the held-out images alone cannot pick the epoch
    # when recovery fitted the pruned model to these same samples (as prune --calib does), because every step
    # then looks like a loss on them; the views, which nothing was fitted to, show whether the student learned
    # to follow the teacher.
    held_views = []
    if layouts:
        view_gen = torch.Generator().manual_seed(options.seed + 1)
        for _ in range(HELD_OUT_VIEWS):
            for feed, rows in held_batches():
                feed = dict(feed)
                for name, layout in layouts.items():
                    feed[name] = augment(torch.from_numpy(feed[name].astype(np.float32)), layout, view_gen,
                                         flips=labels is None)[0].numpy()
                held_views.append((feed, len(rows), teacher_outputs(feed)))

    def evaluate(epoch: int, train_loss: Optional[float], seconds: float) -> EpochRecord:
        student.eval()
        losses, agree, cos, correct, count = [], [], [], [], 0
        with torch.no_grad():
            for (feed, rows), t in zip(held_batches(), held_teacher):
                s = student_outputs(feed)
                losses.append(float(loss_fn(s, t)) * len(rows))
                count += len(rows)
                for name, so, to in zip(out_names, s, t):
                    so, to = so.float().reshape(len(rows), -1), to.reshape(len(rows), -1)
                    cos.append(torch.nn.functional.cosine_similarity(so, to, dim=1, eps=1e-12).cpu().numpy())
                    if name == class_output:
                        agree.append((so.argmax(1) == to.argmax(1)).cpu().numpy())
                        if label_t is not None:
                            correct.append((so.argmax(1) == label_t[torch.from_numpy(rows).to(device)]).cpu().numpy())
            for feed, n, t in held_views:
                losses.append(float(loss_fn(student_outputs(feed), t)) * n)
                count += n
        student.train()
        return EpochRecord(
            epoch, train_loss, sum(losses) / count,
            float(np.concatenate(agree).mean()) if agree else None,
            float(np.concatenate(cos).mean()) if cos and class_output is None else None,
            float(np.concatenate(correct).mean()) if correct else None, seconds,
        )

    def score(r: EpochRecord):
        return (r.accuracy, -r.heldout_loss) if r.accuracy is not None else (-r.heldout_loss,)

    report = FinetuneReport(int(sum(len(data.units[u]) for u in train)), int(sum(len(data.units[u]) for u in held)),
                            student.parameter_count(), options.device, bool(layouts), probabilities)
    t_start = time.perf_counter()
    deadline = t_start + options.max_minutes * 60 if options.max_minutes else None
    best = evaluate(0, None, 0.0)
    report.epochs.append(best)
    progress.epoch_end(best)
    best_state = {k: v.detach().clone() for k, v in student.params.items()}
    steps_per_epoch = max(1, math.ceil(len(train) / options.batch_size))
    total_steps = steps_per_epoch * options.epochs
    optimizer = torch.optim.AdamW(student.params.values(), lr=options.lr, weight_decay=0.0)
    warmup = max(1, min(steps_per_epoch, total_steps // 10))  # Adam's first steps move every weight by lr

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total_steps) / max(1, total_steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    student.train()
    since_best = 0
    try:
        for epoch in range(1, options.epochs + 1):
            progress.epoch_start(epoch, options.epochs, steps_per_epoch)
            t_epoch = time.perf_counter()
            perm = train[rng.permutation(len(train))]
            total, seen = 0.0, 0
            timed_out = False
            for start in range(0, len(perm), options.batch_size):
                ids = perm[start:start + options.batch_size]
                optimizer.zero_grad(set_to_none=True)
                batch_loss = 0.0
                feeds = data.feeds(ids)
                parts = [data.rows(ids)] if data.batched else [data.units[u] for u in ids]
                for feed, rows in zip(feeds, parts):
                    mix = None
                    if layouts:
                        feed = dict(feed)
                        for name, layout in layouts.items():
                            x, mix = augment(torch.from_numpy(feed[name].astype(np.float32)), layout, gen,
                                             flips=labels is None)
                            feed[name] = x.numpy()
                    y = label_t[torch.from_numpy(rows).to(device)] if label_t is not None else None
                    loss = loss_fn(student_outputs(feed), teacher_outputs(feed), y, mix) / len(feeds)
                    loss.backward()
                    batch_loss += float(loss.detach())
                optimizer.step()
                schedule.step()
                total += batch_loss * len(ids)
                seen += len(ids)
                progress.step(batch_loss)
                if deadline is not None and time.perf_counter() > deadline:
                    timed_out = True
                    break
            record = evaluate(epoch, total / max(seen, 1), time.perf_counter() - t_epoch)
            report.epochs.append(record)
            if score(record) > score(best):
                best, since_best = record, 0
                best_state = {k: v.detach().clone() for k, v in student.params.items()}
            else:
                since_best += 1
            progress.epoch_end(record)
            if timed_out:
                report.stopped = "time limit"
                break
            if options.patience is not None and since_best >= options.patience and epoch < options.epochs:
                report.stopped = "early stop"
                break
    except KeyboardInterrupt:
        report.stopped = "interrupted"
    report.best_epoch = best.epoch
    report.seconds = time.perf_counter() - t_start
    student.params.load_state_dict(best_state)
    trained = write_back(pruned, student.weights())
    check_feed = {k: v[:64] for k, v in held_feeds[0].items()} if held_feeds else data.feeds([held[0]])[0]
    report.check_max_diff = _check_written(trained, student, check_feed, student_outputs)
    return trained, report


def _check_written(model: onnx.ModelProto, student, feed, student_outputs) -> float:
    """Largest difference between the written model (onnxruntime) and the torch module on held-out inputs."""
    import torch

    from ..session import open_session

    session = open_session(model)
    worst = 0.0
    student.eval()
    with torch.no_grad():
        ref = [o.float().cpu().numpy() for o in student_outputs(feed)]
    got = session.run(student.output_names, feed)
    for r, g in zip(ref, got):
        g = np.asarray(g, dtype=np.float32)
        diff = float(np.abs(r - g).max()) if r.size else 0.0
        tolerance = 1e-4 + 1e-3 * float(np.abs(r).max() if r.size else 0.0)
        if not diff <= tolerance:
            raise InvalidOutputError(
                f"the fine-tuned model differs from the trained torch module by {diff:.3g} "
                f"(tolerance {tolerance:.3g}) in onnxruntime; it was not written")
        worst = max(worst, diff)
    return worst
