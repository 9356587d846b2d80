"""Sample inputs for calibration and verification: from an .npz, a folder of images, or any iterable of feeds.

An .npz holds one array per model input with the samples on axis 0, in either of two forms:
- *rows*: the array has the input's own rank and axis 0 is the input's batch axis (`x[500, 1, 28, 28]`
  for an input `[batch, 1, 28, 28]`); samples are fed `batch` rows at a time (or the input's fixed batch);
- *stacked*: the array has one more axis than the input (`x[500, 1, 3, 224, 224]` for `[1, 3, 224, 224]`);
  each entry on axis 0 is one whole feed.
A `SampleSet` keeps the arrays (or the user's feeds) and cuts them into feed dicts on demand, so that the
same samples can be walked several times (recovery makes one pass per layer depth).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import onnx

from .errors import OptionError
from .inputs import Feed, input_dtype, model_inputs

MIN_CALIB_SAMPLES = 8
CALIB_SAMPLES = 512  # the most calibration samples a stage uses unless told otherwise (prune, sensitivity, recipes)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class SampleSet:
    """Model inputs, sample by sample. `arrays` (rows or stacked form) or `feeds` (given as they are)."""

    source: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    stacked: bool = False
    fixed_batch: Optional[int] = None  # rows form: the input's fixed leading dim, fed exactly that many rows
    given: list[Feed] = field(default_factory=list)
    held: Optional[int] = None  # after take(): the samples the source held, of which these are the first

    @property
    def count(self) -> int:
        if self.given:
            return sum(feed_rows(feed) for feed in self.given)
        first = next(iter(self.arrays.values()), None)
        return 0 if first is None else int(first.shape[0])

    def feeds(self, batch: int = 32) -> Iterator[Feed]:
        """Feed dicts of about `batch` samples each, in order."""
        if self.given:
            yield from self.given
            return
        n = self.count
        if self.stacked:
            for i in range(n):
                yield {k: np.ascontiguousarray(v[i]) for k, v in self.arrays.items()}
            return
        step = self.fixed_batch or max(1, batch)
        for start in range(0, n - (n % step if self.fixed_batch else 0), step):
            yield {k: np.ascontiguousarray(v[start:start + step]) for k, v in self.arrays.items()}

    def take(self, limit: Optional[int]) -> "SampleSet":
        """The first `limit` samples (all of them when limit is None)."""
        if limit is None or limit >= self.count:
            return self
        if self.given:
            kept, total = [], 0
            for feed in self.given:
                if total >= limit:
                    break
                kept.append(feed)
                total += feed_rows(feed)
            return SampleSet(self.source, given=kept, held=self.count)
        return SampleSet(self.source, {k: v[:limit] for k, v in self.arrays.items()}, self.stacked, self.fixed_batch,
                         held=self.count)

    def labels_for(self, labels: np.ndarray) -> tuple[np.ndarray, Optional[str]]:
        """`labels` (one per sample of the source, in order) for these samples, and a note when take() kept the
        first ones and the labels are cut alike; OptionError when the counts do not fit."""
        n, held = self.count, self.held or self.count
        if labels.size == n:
            return labels, None
        if labels.size == held:
            return labels[:n], (f"--labels: the first {n} of {held} labels, for the first {n} samples that "
                                "--calib-samples keeps")
        kept = f" (calib_samples keeps the first {n})" if held != n else ""
        raise OptionError(f"labels holds {labels.size} labels for {held} samples{kept}",
                          params=("labels", "calib_samples"))

    def require(self, minimum: int) -> "SampleSet":
        if self.count < minimum:
            raise OptionError(f"{self.source}: {self.count} sample(s); calibration needs at least {minimum}")
        return self


def feed_rows(feed: Feed) -> int:
    """Samples in one feed: the leading dim of its first input (1 for scalars)."""
    first = next(iter(feed.values()), None)
    return 1 if first is None or np.ndim(first) == 0 else int(np.shape(first)[0])


def _names(items) -> str:
    return ", ".join(map(repr, items)) or "nothing"


def check_arrays(arrays: Mapping[str, np.ndarray], model: onnx.ModelProto, label: str) -> SampleSet:
    """A SampleSet from arrays named after the model's inputs; OptionError for any mismatch, said in one line."""
    specs = model_inputs(model)
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise OptionError(f"{label}: no array for input(s) {_names(missing)}; it holds {_names(arrays)}")
    extra = [k for k in arrays if k not in names]
    if extra:
        raise OptionError(f"{label}: array(s) {_names(extra)} name no input; inputs are {_names(names)}")
    forms, counts, fixed = set(), set(), None
    for spec in specs:
        arr = arrays[spec.name]
        dtype = input_dtype(spec)
        if dtype is not None and arr.dtype != dtype:
            raise OptionError(f"{label}: input {spec.name!r} needs dtype {dtype}, the array is {arr.dtype}")
        if arr.ndim < 1:
            raise OptionError(f"{label}: input {spec.name!r} needs samples on axis 0, got a scalar")
        if spec.dims is None:
            forms.add("stacked")
        else:
            rank = len(spec.dims)
            if arr.ndim not in (rank, rank + 1) or rank == 0 and arr.ndim == 0:
                raise OptionError(
                    f"{label}: input {spec.name!r} has rank {rank}, so its array needs rank {rank} (samples along "
                    f"the batch axis) or {rank + 1} (samples stacked on a new axis 0), got shape {list(arr.shape)}"
                )
            stacked = arr.ndim == rank + 1
            forms.add("stacked" if stacked else "rows")
            sample_dims = arr.shape[1:] if stacked else arr.shape
            for axis, want in enumerate(spec.dims):
                if not (isinstance(want, int) and want > 0) or (not stacked and axis == 0):
                    continue
                if sample_dims[axis] != want:
                    raise OptionError(
                        f"{label}: input {spec.name!r} needs dim {axis} = {want}, the array has "
                        f"{sample_dims[axis]} (array shape {list(arr.shape)}, samples on axis 0)"
                    )
            if not stacked and isinstance(spec.dims[0], int) and spec.dims[0] > 0:
                fixed = spec.dims[0]
        counts.add(arr.shape[0])
    if len(forms) > 1:
        raise OptionError(f"{label}: mixes arrays stacked on a new axis 0 with arrays along the batch axis; give "
                          "every input one more axis than the model's, samples on axis 0 (for an input whose batch "
                          "is not axis 0, such as an RNN state [2, batch, H], that is the only form)")
    if len(counts) > 1:
        raise OptionError(f"{label}: arrays hold different numbers of samples on axis 0: {sorted(counts)}")
    if counts == {0}:
        raise OptionError(f"{label}: no samples (axis 0 has size 0)")
    stacked = forms == {"stacked"}
    if not stacked and fixed and fixed > 1 and next(iter(counts)) % fixed:
        raise OptionError(f"{label}: the model's batch is fixed to {fixed}; give a multiple of {fixed} samples")
    return SampleSet(label, dict(arrays), stacked, None if stacked else fixed)


def load_npz(path: Union[str, os.PathLike], model: onnx.ModelProto, option: str = "--calib") -> SampleSet:
    p = Path(path)
    label = f"{option} {p}"
    if not p.is_file():
        raise OptionError(f"{label}: no such file")
    try:
        loaded = np.load(p, allow_pickle=False)
        if not hasattr(loaded, "files"):
            raise OptionError(f"{label}: holds a single array, expected an .npz archive (numpy.savez)")
        with loaded as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise OptionError(f"{label}: not a readable .npz file: {str(exc).strip().splitlines()[0]}") from None
    return check_arrays(arrays, model, label)


def from_feeds(feeds: Iterable[Mapping[str, np.ndarray]], model: onnx.ModelProto) -> SampleSet:
    """The Python API's calibration data: any iterable of feed dicts, read once and kept in memory."""
    specs = {s.name: s for s in model_inputs(model)}
    given = []
    for i, feed in enumerate(feeds):
        if not isinstance(feed, Mapping):
            raise OptionError(f"calibration feed {i} is a {type(feed).__name__}, expected a dict of input arrays")
        if sorted(feed) != sorted(specs):
            raise OptionError(f"calibration feed {i} names {_names(sorted(feed))}; the model needs {_names(sorted(specs))}")
        arrays = {k: np.asarray(v) for k, v in feed.items()}
        for name, arr in arrays.items():
            dtype = input_dtype(specs[name])
            if dtype is not None and arr.dtype != dtype:
                raise OptionError(f"calibration feed {i}: input {name!r} needs dtype {dtype}, got {arr.dtype}")
        given.append(arrays)
    if not given:
        raise OptionError("calibration data holds no feeds")
    return SampleSet("calibration feeds", given=given)


# ---------------------------------------------------------------------------------------------------------------
# Images


@dataclass(frozen=True)
class ImageOptions:
    size: Optional[tuple[int, int]] = None  # (height, width); default: the model input's
    mean: tuple[float, ...] = (0.0,)  # after scaling pixels to [0, 1]
    std: tuple[float, ...] = (1.0,)
    layout: str = "NCHW"  # or NHWC


@dataclass(frozen=True)
class ImageFolder:
    """Calibration images to read once the model's input is known (api.prune(calib=ImageFolder(...)))."""

    folder: Union[str, os.PathLike]
    options: ImageOptions = ImageOptions()


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise OptionError(f"{option} takes comma-separated numbers, e.g. 0.485,0.456,0.406; got {text!r}") from None
    if not values:
        raise OptionError(f"{option} takes comma-separated numbers, got {text!r}")
    return values


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts if p.strip()]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise OptionError(f"--size takes HEIGHTxWIDTH or one number, e.g. 224x224; got {text!r}")
    return values[0], values[1]


def load_images(folder: Union[str, os.PathLike], model: onnx.ModelProto, options: ImageOptions,
                limit: Optional[int] = None, option: str = "--calib-images",
                progress: Optional[Callable[[int, int], None]] = None) -> SampleSet:
    """The images of `folder` (sorted by name), resized, scaled to [0, 1], normalized, as the model's image input;
    `option` names the folder in messages; `progress(done, total)` after each image."""
    label = f"{option} {folder}"
    try:
        from PIL import Image
    except ImportError:
        raise OptionError(f"{label}: reading images needs Pillow: pip install 'onnxprune[images]'") from None
    p = Path(folder)
    if not p.is_dir():
        raise OptionError(f"{label}: not a folder")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    if not files:
        raise OptionError(f"{label}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    specs = model_inputs(model)
    if len(specs) != 1 or specs[0].dims is None or len(specs[0].dims) != 4:
        raise OptionError(f"{label}: images need a model with one 4-D image input; give the inputs as an .npz")
    spec = specs[0]
    if options.layout not in ("NCHW", "NHWC"):
        raise OptionError(f"layout must be NCHW or NHWC, got {options.layout!r}")
    channel_axis = 1 if options.layout == "NCHW" else 3
    spatial = (2, 3) if options.layout == "NCHW" else (1, 2)
    channels = spec.dims[channel_axis]
    if channels not in (1, 3):
        raise OptionError(f"{label}: the input {spec.name!r} {list(spec.dims)} has {channels} channels on the "
                          f"{options.layout} channel axis; images give 1 or 3 (check the layout)")
    size = options.size or tuple(spec.dims[a] for a in spatial)
    if not all(isinstance(d, int) and d > 0 for d in size):
        raise OptionError(f"{label}: the model's image size is dynamic; give the size to resize images to "
                          "(HEIGHTxWIDTH)")
    mean, std = _per_channel(options.mean, channels, "mean"), _per_channel(options.std, channels, "std")
    if np.any(std == 0):
        raise OptionError("std values must not be 0")
    dtype = input_dtype(spec) or np.dtype(np.float32)
    batch = []
    files = files[:limit]
    for f in files:
        try:
            with Image.open(f) as img:
                img = img.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
                arr = np.asarray(img, dtype=np.float32) / 255.0
        except (OSError, ValueError) as exc:
            raise OptionError(f"{label}: cannot read {f.name}: {str(exc).strip().splitlines()[0]}") from None
        arr = arr.reshape(size[0], size[1], channels)
        arr = (arr - mean) / std
        batch.append(arr.transpose(2, 0, 1) if options.layout == "NCHW" else arr)
        if progress is not None:
            progress(len(batch), len(files))
    return check_arrays({spec.name: np.stack(batch).astype(dtype)}, model, label)


def _per_channel(values: Sequence[float], channels: int, option: str) -> np.ndarray:
    if len(values) == 1:
        return np.full(channels, values[0], np.float32)
    if len(values) != channels:
        raise OptionError(f"{option}: {len(values)} values for an input with {channels} channels")
    return np.asarray(values, np.float32)
