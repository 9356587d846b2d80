"""Shapes onnxruntime computes where inference could not: the last resort of shapes.infer_shapes.

Some ops have no shape function onnx can use (ai.onnx.ml's Scaler, say): everything after them has an unknown
rank, and no --shape reaches past them. onnxruntime still runs them. So the model is run on generated inputs with
the unknown tensors exposed as outputs, and their shapes are read back.

A run sees numbers, not dim names. The model is therefore run twice: once with every open input dim at 1 (what
the rest of onnxprune counts at), once with each open dim name at its own prime. A dim that is the same in both runs
is fixed; one that follows a dim name's values is that name; anything else (a product, a size computed from it)
stays unknown. Only what inference left unknown is filled: a dim it knew is never replaced.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import onnx

from .shapes import Dim, ShapeInfo, TensorInfo

RUNNABLE_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47)


def fill_unknown(model: onnx.ModelProto, input_shapes: Optional[Mapping[str, Sequence[int]]], info: ShapeInfo) -> None:
    """Fill, in place, what `info` left unknown about the top-level graph's tensors with what onnxruntime computes."""
    fill_missing(info, observed_shapes(model, input_shapes, missing_names(model, info)))


def missing_names(model: onnx.ModelProto, info: ShapeInfo) -> list[str]:
    """Outputs of the top-level graph's nodes whose rank or some dim inference left unknown."""
    names = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        for name in node.output:
            dims = info.dims(name) if name else ()
            if dims is None or any(d is None for d in dims):
                names.append(name)
    return names


def observed_shapes(model: onnx.ModelProto, input_shapes: Optional[Mapping[str, Sequence[int]]],
                    names: Sequence[str]) -> ShapeInfo:
    """The shapes of tensors `names` as onnxruntime computes them (see the module's docstring); best effort: an
    empty ShapeInfo when the model cannot be run (an op onnxruntime lacks, inputs of unstated rank ...)."""
    if not names or any(n.domain not in RUNNABLE_DOMAINS for n in model.graph.node):
        return ShapeInfo()
    try:
        assignments, symbols = _input_assignments(model, dict(input_shapes or {}))
        runs = [_run(model, feeds, names) for feeds in assignments]
    except Exception:  # onnxruntime refuses the model or fails on the generated inputs: inference stays as it was
        return ShapeInfo()
    info = ShapeInfo()
    for name in names:
        shapes = [run.get(name) for run in runs]
        if any(s is None for s in shapes) or len({len(s[0]) for s in shapes}) != 1:
            continue
        dims = tuple(_dim(values, symbols) for values in zip(*(s[0] for s in shapes)))
        info.tensors[name] = TensorInfo(shapes[0][1], dims)
    return info


def fill_missing(info: ShapeInfo, observed: ShapeInfo) -> None:
    """Fill the ranks and dims `info` left unknown with `observed`; known dims (numbers or names) stay."""
    for name, seen in observed.tensors.items():
        have = info.tensors.get(name)
        if have is None or have.dims is None:
            elem = have.elem_type if have is not None and have.elem_type else seen.elem_type
            info.tensors[name] = TensorInfo(elem, seen.dims)
        elif len(have.dims) == len(seen.dims):
            dims = tuple(s if h is None else h for h, s in zip(have.dims, seen.dims))
            info.tensors[name] = TensorInfo(have.elem_type or seen.elem_type, dims)


def _dim(values: tuple[int, ...], symbols: dict[int, str]) -> Dim:
    if len(set(values)) == 1:
        return values[0]
    return symbols.get(values[-1]) if len(values) == 2 and values[0] == 1 else None


def _input_assignments(model: onnx.ModelProto, pinned: dict) -> tuple[list[dict], dict[int, str]]:
    """Feeds for the runs (one when no input dim is open, else two) and which prime stands for which dim name."""
    from .inputs import make_inputs, model_inputs

    specs = model_inputs(model)
    settled = {d: int(v) for spec in specs if spec.name in pinned  # a name pinned in one input holds in all
               for d, v in zip(spec.dims or (), pinned[spec.name]) if isinstance(d, str) and d}
    base = _concrete(model, pinned, settled)
    open_names: list[Optional[str]] = []
    for spec in specs:
        if spec.name in pinned:
            continue
        for d in spec.dims or ():
            if not (isinstance(d, int) and d > 0) and d not in settled:
                key = d if isinstance(d, str) and d else None
                if key is None or key not in open_names:
                    open_names.append(key)  # each unnamed open dim is its own unknown
    feeds = [make_inputs(model, base, samples=1, seed=0)[0]]
    if not open_names:
        return feeds, {}
    primes = dict(zip(range(len(open_names)), PRIMES))
    if len(open_names) > len(PRIMES):
        raise ValueError("too many open input dims")
    named = {name: primes[i] for i, name in enumerate(open_names) if name is not None}
    unnamed = iter(primes[i] for i, name in enumerate(open_names) if name is None)
    feeds.append(make_inputs(model, _concrete(model, pinned, {**settled, **named}, unnamed), samples=1, seed=0)[0])
    return feeds, {value: name for name, value in named.items()}


def _concrete(model: onnx.ModelProto, pinned: dict, named: dict, unnamed=iter(())) -> dict[str, list[int]]:
    from .inputs import model_inputs

    shapes = {}
    for spec in model_inputs(model):
        if spec.name in pinned:
            shapes[spec.name] = list(pinned[spec.name])
        elif spec.dims is not None:
            shapes[spec.name] = [d if isinstance(d, int) and d > 0 else named[d] if isinstance(d, str) and d in named
                                 else next(unnamed, 1) for d in spec.dims]
    return shapes


def _run(model: onnx.ModelProto, feeds: dict, names: Sequence[str]) -> dict[str, tuple[tuple[int, ...], int]]:
    """{name: (shape, elem_type)} of `names` after one run of `model` on `feeds`."""
    import onnxruntime as ort

    outputs = model.graph.output
    declared = {vi.name for vi in outputs}
    added = [n for n in dict.fromkeys(names) if n not in declared]
    outputs.extend(onnx.ValueInfoProto(name=n) for n in added)
    try:
        data = model.SerializeToString()
    finally:
        del outputs[len(outputs) - len(added):]
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    del data
    wanted = list(dict.fromkeys(names))
    values = session.run(wanted, feeds)
    return {n: (tuple(int(d) for d in v.shape), onnx.helper.np_dtype_to_tensor_dtype(v.dtype))
            for n, v in zip(wanted, values) if isinstance(v, np.ndarray) and v.dtype.kind in "fiub"}
