"""Loading and saving models: external data, path safety, atomic writes and the 2 GB protobuf limit."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import (
    ExternalDataInfo,
    load_external_data_for_model,
    uses_external_data,
)

from .errors import ModelLoadError, UnsafePathError

ModelSource = Union[str, os.PathLike, onnx.ModelProto]

# Protobuf cannot serialize a message of 2 GiB or more; larger models keep their weights in a side file.
PROTOBUF_LIMIT = 2**31 - 1
# The lowest default-domain opset we accept: older models predate the operator semantics the rules assume.
MIN_OPSET = 7


def load_model(source: ModelSource) -> onnx.ModelProto:
    """Return a ModelProto with all weights in memory, from a path or a ModelProto (used as it is)."""
    if isinstance(source, onnx.ModelProto):
        model = source
    else:
        model = _load_path(Path(source))
    check_opset(model)
    return model


def _load_path(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a folder, expected an .onnx file")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise ModelLoadError(f"{path}: not a readable ONNX model (truncated or not ONNX): {_one_line(exc)}") from None
    if not model.HasField("graph") or (len(model.graph.node) == 0 and not model.opset_import):
        raise ModelLoadError(f"{path}: not an ONNX model (no graph found)")
    check_external_paths(model, path.parent)
    try:
        load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot read external data: {_one_line(exc)}") from None
    return model


def check_external_paths(model: onnx.ModelProto, folder: Path) -> None:
    """Refuse external-data locations that leave `folder` (absolute paths, '..', symlinks out)."""
    root = folder.resolve()
    for tensor in _all_tensors(model):
        if not uses_external_data(tensor):
            continue
        location = ExternalDataInfo(tensor).location
        target = (root / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(root):
            raise UnsafePathError(
                f"tensor {tensor.name!r}: external data location {location!r} leaves the model's folder {root}"
            )
        if not target.exists():
            raise ModelLoadError(f"tensor {tensor.name!r}: external data file {location!r} not found in {root}")


def _all_tensors(model: onnx.ModelProto):
    yield from model.graph.initializer
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t


def check_opset(model: onnx.ModelProto) -> None:
    latest = onnx.defs.onnx_opset_version()
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            if not MIN_OPSET <= entry.version <= latest:
                raise ModelLoadError(
                    f"unsupported opset {entry.version}: onnxprune supports default-domain opsets {MIN_OPSET}..{latest}"
                )
            return
    if model.graph.node:
        raise ModelLoadError("the model imports no default-domain opset")


def model_nbytes(model: onnx.ModelProto) -> int:
    """Serialized size, estimated without serializing (which fails past 2 GiB)."""
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    try:
        return model.ByteSize()
    except (ValueError, OverflowError):  # pragma: no cover - protobuf builds differ
        return weights


def save_model(
    model: onnx.ModelProto,
    path: Union[str, os.PathLike],
    *,
    inputs: tuple[Union[str, os.PathLike], ...] = (),
    force: bool = False,
    external_data_threshold: int = PROTOBUF_LIMIT,
) -> Path:
    """Write `model` to `path` atomically. Refuses to overwrite any of `inputs` unless `force`.

    Models whose serialized size reaches `external_data_threshold` keep their weights in `<name>.data` beside it.
    """
    out = Path(path)
    for src in inputs:
        if out.exists() and Path(src).exists() and out.resolve() == Path(src).resolve() and not force:
            raise UnsafePathError(f"{out}: output is the input model; choose another path or pass --force")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise UnsafePathError(f"{out}: folder {folder} does not exist")
    external = model_nbytes(model) >= external_data_threshold
    tmpdir = tempfile.mkdtemp(prefix=".onnxprune-", dir=folder)
    try:
        tmp_model = Path(tmpdir) / out.name
        if external:
            data_name = out.name + ".data"
            onnx.save_model(
                model, str(tmp_model), save_as_external_data=True, all_tensors_to_one_file=True,
                location=data_name, size_threshold=1024,
            )
            os.replace(Path(tmpdir) / data_name, folder / data_name)
        else:
            onnx.save_model(model, str(tmp_model))
        os.replace(tmp_model, out)
    finally:
        for leftover in Path(tmpdir).iterdir() if Path(tmpdir).exists() else ():
            leftover.unlink()
        if Path(tmpdir).exists():
            os.rmdir(tmpdir)
    return out


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
