"""Loading and saving models: external data, path safety, atomic writes and the 2 GB protobuf limit."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Union

import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import (
    ExternalDataInfo,
    load_external_data_for_model,
    load_external_data_for_tensor,
    uses_external_data,
)

from .errors import ModelLoadError, OnnxPruneError, OptionError, UnsafePathError

ModelSource = Union[str, os.PathLike, onnx.ModelProto]

# Protobuf cannot serialize a message of 2 GiB or more; larger models keep their weights in a side file.
PROTOBUF_LIMIT = 2**31 - 1
# The lowest default-domain opset we accept: older models predate the operator semantics the rules assume.
MIN_OPSET = 7


def load_model_sized(source: ModelSource) -> tuple[onnx.ModelProto, Optional[int]]:
    """Like load_model, plus the bytes the model takes on disk (with its external data), None for a ModelProto."""
    if isinstance(source, onnx.ModelProto):
        return load_model(source), None
    model, files = _load_path(Path(source))
    check_opset(model)
    return model, sum(f.stat().st_size for f in files | {Path(source).resolve()})


def load_model(source: ModelSource) -> onnx.ModelProto:
    """Return a ModelProto with all weights in memory, from a path or a ModelProto (used as it is)."""
    if isinstance(source, onnx.ModelProto):
        check_opset(source)
        return source
    return load_model_sized(source)[0]


def _load_path(path: Path) -> tuple[onnx.ModelProto, set[Path]]:
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
    files = check_external_paths(model, path.parent, label=str(path))
    try:
        load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise ModelLoadError(f"{path}: cannot read external data: {_one_line(exc)}") from None
    return model, files


def check_external_paths(model: onnx.ModelProto, folder: Path, label: str = "") -> set[Path]:
    """Refuse external-data locations that leave `folder` (absolute paths, '..', symlinks out);
    returns the external-data files the model reads."""
    root = folder.resolve()
    files: set[Path] = set()
    where = f"{label}: " if label else ""
    for tensor in _all_tensors(model):
        if not uses_external_data(tensor):
            continue
        location = ExternalDataInfo(tensor).location
        if os.path.isabs(location) or Path(location).drive:
            raise UnsafePathError(
                f"{where}tensor {tensor.name!r}: external data location {location!r} is an absolute path; "
                f"only files inside the model's folder {root} are read"
            )
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            how = "" if not Path(os.path.normpath(root / location)).is_relative_to(root) else f" (a link to {target})"
            raise UnsafePathError(
                f"{where}tensor {tensor.name!r}: external data location {location!r}{how} "
                f"leaves the model's folder {root}"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"{where}tensor {tensor.name!r}: external data file {location!r} not found in {root}"
                + (" (it is a folder)" if target.is_dir() else "")
            )
        files.add(target)
    return files


def _all_tensors(model: onnx.ModelProto):
    """Every TensorProto of the model: initializers, sparse initializers and node attributes, subgraphs included."""
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)


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
    """Serialized size, estimated without serializing the model (slow, and impossible past 2 GiB):
    the tensors' data plus the nodes' own size."""
    total = 1024
    for t in model.graph.initializer:
        total += _tensor_nbytes(t) + 64
    for node in model.graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            total += _tensor_nbytes(node.attribute[0].t) + 64
        else:
            total += node.ByteSize()
    return total


def _tensor_nbytes(t: onnx.TensorProto) -> int:
    if t.raw_data:
        return len(t.raw_data)
    count = 1
    for d in t.dims:
        count *= d
    return count * 8 if t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.DOUBLE) else count * 4


class OutputError(OnnxPruneError):
    """The output cannot be written: its folder is missing or read-only, the disk is full, ..."""


def save_model(
    model: onnx.ModelProto,
    path: Union[str, os.PathLike],
    *,
    inputs: tuple[Union[str, os.PathLike], ...] = (),
    force: bool = False,
    external_data_threshold: int = PROTOBUF_LIMIT,
    keep_model: bool = True,
) -> Path:
    """Write `model` to `path` atomically. Refuses to overwrite any of `inputs` unless `force`.

    Models whose serialized size reaches `external_data_threshold` keep their weights in `<name>.data` beside it.
    `model` is left as it was unless `keep_model` is False (then, when external data is written, its tensors
    point to the written file and hold no data: cheaper when the caller drops the model right after).
    """
    with stage_model(
        model, path, inputs=inputs, force=force, external_data_threshold=external_data_threshold,
        keep_model=keep_model,
    ) as staged:
        return staged.commit()


def check_output_path(path: Union[str, os.PathLike], inputs=(), force: bool = False) -> Path:
    """Refuse an output that is one of `inputs` (unless `force`), a folder, or a path through a file. A missing
    folder is no error: writing creates it (make_folder)."""
    out = Path(path)
    for src in inputs:
        if not force and out.exists() and Path(src).exists() and os.path.samefile(out, src):
            raise UnsafePathError(f"{out}: output is the input model; choose another path or pass --force")
    if out.is_dir():
        raise OutputError(f"{out}: is a folder, expected a file name")
    _refuse_file_in_the_way(out.parent, out)
    return out


def make_folder(folder: Union[str, os.PathLike], label: Union[str, os.PathLike, None] = None) -> Path:
    """Create the output folder `folder` and any missing parents; OutputError when a file is in the way or the
    folder cannot be created. `label` names the output in the message (default: the folder)."""
    folder = Path(folder)
    _refuse_file_in_the_way(folder, label or folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{label or folder}: cannot create the folder {folder}: {_one_line(exc)}") from None
    return folder


def _refuse_file_in_the_way(folder: Path, label) -> None:
    """OutputError when `folder` or the nearest of its parents that exists is not a folder."""
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                raise OutputError(f"{label}: {p} is a file, not a folder")
            return


def write_text(path: Union[str, os.PathLike], text: str, *, inputs=(), force: bool = False) -> Path:
    """Write `text` (UTF-8) to `path` atomically: a new file beside it (created with the umask's permissions, as
    any file), then a rename; its folder is created when missing. Refuses to overwrite any of `inputs` unless
    `force` (see check_output_path). Every text output (plans, cards, reports, profiles) is written here."""
    out = check_output_path(path, inputs, force)
    make_folder(out.parent, out)
    tmp = out.parent / f".onnxprune-{os.urandom(6).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write in {out.parent}: {_one_line(exc)}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, out)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write: {_one_line(exc)}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def read_document(path: Union[str, os.PathLike], loads, errors: tuple, what: str):
    """`loads` of a small UTF-8 file (a plan, a policy); one-line OptionError when it is missing, unreadable, or
    `loads` raises one of `errors`. `what` names it in the message ("--policy gate.toml", ...)."""
    p = Path(path)
    if not p.is_file():
        raise OptionError(f"{what}: no such file")
    try:
        return loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) + tuple(errors) as exc:
        raise OptionError(f"{what}: not readable: {' '.join(str(exc).split())}") from None


class StagedModel:
    """A model written into a temporary folder beside its destination; `commit()` moves it into place.

    Leaving the `with` block without `commit()` removes everything written, so a failed check or an
    interrupted write leaves no partial file and keeps an existing output intact.
    """

    def __init__(self, out: Path, tmpdir: Path, data_name: Optional[str]):
        self.out = out
        self.tmpdir = tmpdir
        self.data_name = data_name  # the external data file, or None
        self.path = tmpdir / out.name  # the written model, to check before committing

    def commit(self) -> Path:
        try:
            if self.data_name is not None:
                os.replace(self.tmpdir / self.data_name, self.out.parent / self.data_name)
            os.replace(self.path, self.out)
        except OSError as exc:
            raise OutputError(f"{self.out}: cannot write: {_one_line(exc)}") from None
        return self.out

    def size(self) -> int:
        """Bytes written: the model file and its external data."""
        data = self.tmpdir / self.data_name if self.data_name is not None else None
        return self.path.stat().st_size + (data.stat().st_size if data is not None else 0)

    def discard(self) -> None:
        if self.tmpdir.exists():
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self) -> "StagedModel":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def stage_model(
    model: onnx.ModelProto,
    path: Union[str, os.PathLike],
    *,
    inputs: tuple[Union[str, os.PathLike], ...] = (),
    force: bool = False,
    external_data_threshold: int = PROTOBUF_LIMIT,
    keep_model: bool = True,
) -> StagedModel:
    """Write `model` into a temporary folder beside `path` (see save_model); use as a context manager."""
    out = check_output_path(path, inputs, force)
    folder = make_folder(out.parent, out)
    external = model_nbytes(model) >= external_data_threshold
    data_name = out.name + ".data" if external else None
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=".onnxprune-", dir=folder))
    except OSError as exc:
        raise OutputError(f"{out}: cannot write in {folder}: {_one_line(exc)}") from None
    staged = StagedModel(out, tmpdir, data_name)
    try:
        if external:
            try:
                onnx.save_model(
                    model, str(staged.path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024,
                )
            finally:
                if keep_model:  # onnx moved the weights out of `model`: read them back from what was written
                    _restore_weights(model, tmpdir, data_name)
        else:
            onnx.save_model(model, str(staged.path))
    except OSError as exc:
        staged.discard()
        raise OutputError(f"{out}: cannot write: {_one_line(exc)}") from None
    except BaseException:
        staged.discard()
        raise
    return staged


def _restore_weights(model: onnx.ModelProto, folder: Path, data_name: str) -> None:
    """Undo onnx.save_model's conversion of `model` to external data `data_name` (also after a failed save)."""
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL or ExternalDataInfo(tensor).location != data_name:
            continue
        if tensor.HasField("raw_data"):  # marked but not written yet: the data is still here
            del tensor.external_data[:]
        else:
            load_external_data_for_tensor(tensor, str(folder))
        tensor.ClearField("data_location")  # DEFAULT, as before the save (not written out explicitly)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
