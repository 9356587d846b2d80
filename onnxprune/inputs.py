"""A model's inputs: what each one is (InputSpec), the shapes they are taken at (--shape text, the model's own
dims, generic sizes for the dims nobody pinned, the sizes MACs are counted at), and feeds for them: random data
(make_inputs) or data read from an .npz or a folder of images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import onnx

from .errors import OptionError
from .io import ModelSource, load_model
from .shapes import Dim

Feed = dict[str, np.ndarray]

INT_HIGH = 2  # random integer inputs lie in [0, INT_HIGH): safe for masks, token ids and indices of any size


# ---------------------------------------------------------------------------------------------------------------
# Input shapes


def parse_shape(text: str) -> tuple[str, list[int]]:
    """Parse ``NAME=1x3x224x224`` into ``("NAME", [1, 3, 224, 224])``; raise OptionError on bad syntax."""
    if not isinstance(text, str) or "=" not in text:
        raise OptionError(f"bad shape {text!r}: expected NAME=DIMS, e.g. input=1x3x224x224")
    name, _, dims_text = text.rpartition("=")
    name, dims_text = name.strip(), dims_text.strip()
    if not name:
        raise OptionError(f"bad shape {text!r}: the input name before '=' is empty")
    if not dims_text:
        raise OptionError(f"bad shape {text!r}: no dims after '=' (expected e.g. {name}=1x3x224x224)")
    dims: list[int] = []
    for part in dims_text.replace(",", "x").split("x"):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise OptionError(
                f"bad shape {text!r}: dim {part!r} is not a positive integer (expected e.g. {name}=1x3x224x224)"
            )
        dims.append(int(part))
    return name, dims


def parse_shapes(texts: Sequence[str]) -> dict[str, list[int]]:
    """Parse several ``NAME=DIMS`` options into a dict; the same name twice is an OptionError."""
    shapes: dict[str, list[int]] = {}
    for text in texts:
        name, dims = parse_shape(text)
        if name in shapes:
            raise OptionError(f"--shape given twice for input {name!r}")
        shapes[name] = dims
    return shapes


@dataclass
class InputSpec:
    name: str
    elem_type: int
    dims: Optional[tuple[Dim, ...]]  # None when the model does not state the rank


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's real inputs (initializers listed as inputs by old exporters excluded), in order."""
    init_names = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        elem_type, dims = 0, None
        if vi.type.HasField("tensor_type"):
            tt = vi.type.tensor_type
            elem_type = tt.elem_type
            if tt.HasField("shape"):
                dims = tuple(
                    int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
                )
        specs.append(InputSpec(vi.name, elem_type, dims))
    return specs


def _dim_text(dims: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def default_input_shapes(
    model: onnx.ModelProto, overrides: Optional[Mapping[str, Sequence[int]]] = None,
    open_size: Optional[Callable[[InputSpec, int], Optional[int]]] = None,
) -> dict[str, list[int]]:
    """Concrete shapes for the model's inputs: `overrides` where given, else the model's dims with dynamic ones
    = 1, or `open_size(input, axis)` (see generic_sizes).

    Raises OptionError for an override naming no input, with the wrong rank, or contradicting a fixed dim.
    Inputs whose rank the model does not state and that have no override are left out.
    """
    overrides = dict(overrides or {})
    specs = {spec.name: spec for spec in model_inputs(model)}
    unknown = [name for name in overrides if name not in specs]
    if unknown:
        names = ", ".join(repr(n) for n in specs) or "(none)"
        raise OptionError(f"a shape names no input of the model: {', '.join(map(repr, unknown))}; inputs are {names}")
    shapes: dict[str, list[int]] = {}
    for name, spec in specs.items():
        if name in overrides:
            dims = [int(d) for d in overrides[name]]
            if any(d < 1 for d in dims):
                raise OptionError(f"the shape of {name!r}: every dim must be a positive integer, got {dims}")
            if spec.dims is not None:
                if len(dims) != len(spec.dims):
                    raise OptionError(
                        f"--shape {name}: rank {len(dims)} {dims} does not match the model's input rank "
                        f"{len(spec.dims)} {_dim_text(spec.dims)}"
                    )
                for axis, (given, fixed) in enumerate(zip(dims, spec.dims)):
                    if isinstance(fixed, int) and fixed > 0 and given != fixed:
                        raise OptionError(
                            f"--shape {name}: dim {axis} is fixed to {fixed} in the model "
                            f"{_dim_text(spec.dims)}, got {given}"
                        )
            shapes[name] = dims
    # a symbolic dim pinned in one input ("batch" = 4) takes the same value wherever else that name appears
    symbols: dict[str, int] = {}
    for name, dims in shapes.items():
        for given, declared in zip(dims, specs[name].dims or ()):
            if isinstance(declared, str):
                symbols.setdefault(declared, given)
    open_size = open_size or (lambda spec, axis: 1)
    for name, spec in specs.items():
        if name not in shapes and spec.dims is not None:
            shapes[name] = [
                d if isinstance(d, int) and d > 0 else symbols[d] if d in symbols else open_size(spec, axis)
                for axis, d in enumerate(spec.dims)
            ]
    return shapes


# Sizes for the dynamic dims nobody pinned. A size of 1 hides an axis (broadcasting lets a [B, 1, S, S] mask
# meet [B, H, S, S] scores at B = S = 1 without showing which axis is which), and two dims of one size look like
# one dim, so each dim name gets its own size, never 1: a prime from 11 on, small because models bound some
# dims (a position table of 32 rows bounds the sequence); on the image axes of float inputs of rank 4 or more,
# 32 times a prime from 7 on (224, 352, ...), since strided networks that concatenate skip connections need
# sizes divisible by their total stride.
ANONYMOUS_DIMS = ("", "?")  # names exporters write for "unknown": each such dim is a dim of its own
IMAGE_MULTIPLE = 32
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)


def _primes(start: int):
    n = start
    while True:
        if all(n % k for k in range(2, int(n**0.5) + 1)):
            yield n
        n += 1


def generic_sizes() -> Callable[[InputSpec, int], int]:
    """An `open_size` for default_input_shapes: the generic size of each dynamic dim (above), the same for
    every input that names the dim."""
    named: dict[str, int] = {}
    small, image = _primes(11), _primes(7)

    def size(spec: InputSpec, axis: int) -> int:
        declared = spec.dims[axis]
        name = declared if isinstance(declared, str) and declared not in ANONYMOUS_DIMS else None
        if name not in named:
            image_axis = spec.elem_type in FLOAT_TYPES and len(spec.dims) >= 4 and axis >= 1
            value = IMAGE_MULTIPLE * next(image) if image_axis else next(small)
            if name is None:
                return value
            named[name] = value
        return named[name]

    return size


def generic_input_shapes(
    model: onnx.ModelProto, overrides: Optional[Mapping[str, Sequence[int]]] = None
) -> dict[str, list[int]]:
    """The shapes the analysis works at: `overrides` where given, every other dynamic dim at its generic size.
    The plan does not depend on these sizes (no rule fixes a dynamic size into the model); they only let shape
    inference resolve what exporters compute from the input's shape, as a pinned shape does."""
    return default_input_shapes(model, overrides, generic_sizes())


def dynamic_dims(model: onnx.ModelProto) -> dict[str, list[int]]:
    """For each input, the axes whose size the model leaves open (symbolic or unknown)."""
    return {
        spec.name: [axis for axis, d in enumerate(spec.dims) if not (isinstance(d, int) and d > 0)]
        for spec in model_inputs(model)
        if spec.dims is not None
    }


def _pin_example(spec: InputSpec) -> str:
    """`--shape` text for `spec` with its dynamic dims as placeholders (the batch axis as 1): 1x3x<H>x<W>."""
    def dim(axis: int, d) -> str:
        if isinstance(d, int) and d > 0:
            return str(d)
        if axis == 0:
            return "1"
        return f"<{d}>" if isinstance(d, str) and d not in ANONYMOUS_DIMS else f"<dim{axis}>"

    return "x".join(dim(a, d) for a, d in enumerate(spec.dims))


def counting_shapes(
    model: onnx.ModelProto, pinned: Optional[Mapping[str, Sequence[int]]] = None,
    sample: Optional[Mapping[str, Sequence[int]]] = None, what: str = "MACs counted",
) -> tuple[dict[str, list[int]], list[str]]:
    """The input shapes onnxprune measures at when nobody pinned the dims (MACs in `prune` and `inspect`; random
    inputs in `verify`, `check`, `bench`, `sweep`), and notes on those dims, saying `what` is done at them: a
    dynamic batch axis (0) is 1 (per sample), in every input that names its dim; every other open dim is at the
    calibration data's size where given (`sample`: the input shapes of one feed), else at its generic size
    (generic_sizes; never 1, which turns a 1x1 image into constant outputs and drops whole terms such as
    attention's S x S). A named dim is noted once."""
    generic = generic_input_shapes(model, pinned)
    marked = default_input_shapes(model, pinned, lambda spec, axis: 0)  # 0: a dim nobody pinned
    specs = {spec.name: spec for spec in model_inputs(model)}
    batch_names = {(specs[name].dims or ())[0] for name, dims in marked.items() if dims and dims[0] == 0}
    batch_names = {d for d in batch_names if isinstance(d, str) and d not in ANONYMOUS_DIMS}
    shapes: dict[str, list[int]] = {}
    notes, noted = [], set()
    for name, dims in generic.items():
        given = (sample or {}).get(name)
        given = list(given) if given is not None and len(given) == len(dims) else None
        declared = specs[name].dims or ()
        open_axes = [a for a, d in enumerate(marked[name]) if d == 0]
        for axis in open_axes:
            per_sample = axis == 0 or declared[axis] in batch_names
            dims[axis] = 1 if per_sample else given[axis] if given is not None else dims[axis]
        shapes[name] = dims
        shown = [a for a in open_axes if a > 0 and declared[a] not in batch_names and declared[a] not in noted]
        if not shown:
            continue
        noted.update(declared[a] for a in shown if isinstance(declared[a], str) and declared[a] not in ANONYMOUS_DIMS)
        sizes = "x".join(str(dims[a]) for a in shown)
        where = (f"the calibration data's sizes {sizes}" if given is not None else
                 f"generic sizes {sizes}; pin real sizes with --shape {name}={_pin_example(specs[name])}")
        notes.append(f"input {name!r}: dynamic dims {shown} not pinned: {what} at {where}")
    return shapes, notes


# ---------------------------------------------------------------------------------------------------------------
# Feeds


def input_dtype(spec: InputSpec) -> Optional[np.dtype]:
    """The numpy dtype of `spec`'s element type; None where numpy has none (or the model states no type)."""
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(spec.elem_type))
    except (KeyError, TypeError, ValueError):
        return None


def _random_dtype(spec: InputSpec) -> np.dtype:
    """The dtype of random data for `spec`; OptionError where none can be made (strings, bfloat16, no type)."""
    elem_type = spec.elem_type
    if elem_type in (onnx.TensorProto.STRING, onnx.TensorProto.BFLOAT16) or elem_type == 0:
        what = "no tensor type" if elem_type == 0 else onnx.TensorProto.DataType.Name(elem_type)
        raise OptionError(f"input {spec.name!r}: cannot make random data for {what}; pass the inputs with --data")
    dtype = input_dtype(spec)
    if dtype is None:
        raise OptionError(
            f"input {spec.name!r}: cannot make random data for type {elem_type}; pass the inputs with --data"
        )
    return dtype


def _as_proto(model: ModelSource) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else load_model(model)


def make_inputs(
    model: ModelSource,
    shapes: Optional[Mapping[str, Sequence[int]]] = None,
    samples: int = 1,
    seed: int = 0,
) -> list[Feed]:
    """`samples` feed dicts of random inputs with the model's shapes and dtypes, reproducible from `seed`.

    Floats: standard normal. Integers: uniform in [0, 2) (valid as masks and as token ids of any vocabulary).
    Bools: fair coin. Dynamic dims are 1 unless `shapes` pins them (see default_input_shapes): measuring code
    passes counting_shapes' sizes.
    """
    if samples < 1:
        raise OptionError(f"samples must be at least 1, got {samples}", params=("samples",))
    proto = _as_proto(model)
    concrete = default_input_shapes(proto, shapes)
    specs = model_inputs(proto)
    for spec in specs:
        if spec.name not in concrete:
            raise OptionError(f"input {spec.name!r}: the model does not state its shape; pass --shape {spec.name}=...")
    rng = np.random.default_rng(seed)
    feeds: list[Feed] = []
    for _ in range(samples):
        feed: Feed = {}
        for spec in specs:
            dtype = _random_dtype(spec)
            shape = tuple(concrete[spec.name])
            if dtype.kind == "f":
                arr = rng.standard_normal(shape).astype(dtype)
            elif dtype.kind in "iu":
                arr = rng.integers(0, INT_HIGH, size=shape).astype(dtype)
            elif dtype.kind == "b":
                arr = rng.integers(0, 2, size=shape).astype(bool)
            else:
                raise OptionError(f"input {spec.name!r}: cannot make random data of dtype {dtype}; use --data")
            feed[spec.name] = arr
        feeds.append(feed)
    return feeds


def load_inputs_npz(path: Union[str, os.PathLike], model: ModelSource, batch: int = 64) -> list[Feed]:
    """Feed dicts from an .npz holding one array per model input, samples on axis 0 (see calib.py for the two
    forms: along the batch axis, fed `batch` rows at a time, or stacked on a new axis 0, one feed each).

    Raises OptionError for a missing/unreadable file, a missing or unknown input, a wrong dtype or rank,
    a shape that contradicts a fixed dim, or inputs with different sample counts.
    """
    from .calib import load_npz

    return list(load_npz(path, _as_proto(model), option="--data").feeds(batch))


def load_inputs_images(folder: Union[str, os.PathLike], model: ModelSource, options, batch: int = 64,
                       progress=None) -> list[Feed]:
    """Feed dicts from a folder of images (calib.load_images with calib.ImageOptions `options`), `batch` images
    at a time (or the input's fixed batch); sorted by file name, so that labels can follow the same order.
    `progress(done, total)` after each image."""
    from .calib import load_images

    return list(load_images(folder, _as_proto(model), options, option="--data-images", progress=progress).feeds(batch))
