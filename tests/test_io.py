"""onnxprune.io: loading (unreadable files, opsets, external data and its path safety) and saving (atomic
writes, refusing to overwrite the input, external data past the protobuf limit)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from onnx.external_data_helper import set_external_data, uses_external_data

import onnxprune.io as io
from models import zoo
from onnxprune.errors import ModelLoadError, OnnxPruneError, UnsafePathError
from onnxprune.io import OutputError, check_opset, load_model, save_model, stage_model


@pytest.fixture(scope="module")
def _model() -> onnx.ModelProto:
    return zoo.conv_flatten_gemm()  # about 140 kB, weights from 216 to 32768 elements


@pytest.fixture
def model(_model) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(_model)
    return copy


def weights(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: nh.to_array(t) for t in m.graph.initializer}


def run_ort(path_or_model, x=None) -> np.ndarray:
    source = str(path_or_model) if isinstance(path_or_model, Path) else path_or_model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    if x is None:
        x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    return session.run(None, {"input": x})[0]


def files(folder: Path) -> list[str]:
    """Every name under `folder`, hidden ones (temporary folders) included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text.strip(), text
    return text


def save_external(m: onnx.ModelProto, path: Path, location: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    copy = onnx.ModelProto()
    copy.CopyFrom(m)  # onnx.save_model moves the weights of the model it saves with external data
    onnx.save_model(copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
                    size_threshold=0)


def relocate(path: Path, location: str) -> None:
    m = onnx.load(str(path), load_external_data=False)
    for t in m.graph.initializer:
        if uses_external_data(t):
            next(e for e in t.external_data if e.key == "location").value = location
    onnx.save(m, str(path))


# --------------------------------------------------------------------------------------------- loading


def test_load_missing_and_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file") as exc:
        load_model(tmp_path / "missing.onnx")
    one_line(exc.value)
    with pytest.raises(ModelLoadError, match="is a folder"):
        load_model(tmp_path)


@pytest.mark.parametrize("kind", ["random", "text", "truncated", "empty"])
def test_load_not_onnx(tmp_path, model, kind):
    data = {
        "random": np.random.default_rng(5).bytes(1000),
        "text": b"name,value\nconv1,3\n" * 50,
        "truncated": model.SerializeToString()[:-5000],
        "empty": b"",
    }[kind]
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError) as exc:
        load_model(path)
    assert "bad.onnx" in one_line(exc.value)
    assert exc.value.exit_code == 1


def test_load_proto_is_used_as_is(model):
    assert load_model(model) is model


@pytest.mark.parametrize("version, ok", [(1, False), (3, False), (io.MIN_OPSET - 1, False), (io.MIN_OPSET, True),
                                         (17, True), (onnx.defs.onnx_opset_version(), True),
                                         (onnx.defs.onnx_opset_version() + 1, False), (99, False)])
@pytest.mark.parametrize("domain", ["", "ai.onnx"])
def test_opsets(model, version, ok, domain):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.opset_import[:]
    m.opset_import.extend([h.make_opsetid("com.example", 1), h.make_opsetid(domain, version)])
    if ok:
        check_opset(m)
    else:
        with pytest.raises(ModelLoadError, match=f"unsupported opset {version}"):
            check_opset(m)


def test_no_default_domain_opset(model):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.opset_import[:]
    with pytest.raises(ModelLoadError, match="no default-domain opset"):
        check_opset(m)


# ------------------------------------------------------------------------------- external data, reading


@pytest.mark.parametrize("location", ["m.bin", "weights/m.bin", "./sub/../m.bin"])
def test_external_data_inside_the_folder(tmp_path, model, location):
    save_external(model, tmp_path / "m.onnx", "m.bin")
    (tmp_path / "sub").mkdir()
    if location.startswith("weights/"):
        (tmp_path / "weights").mkdir()
        os.replace(tmp_path / "m.bin", tmp_path / location)
    relocate(tmp_path / "m.onnx", location)
    loaded = load_model(tmp_path / "m.onnx")
    assert not any(uses_external_data(t) for t in loaded.graph.initializer)
    assert all(np.array_equal(a, weights(model)[k]) for k, a in weights(loaded).items())


def _outside(tmp_path, model, location):
    save_external(model, tmp_path / "in" / "m.onnx", "m.bin")
    os.replace(tmp_path / "in" / "m.bin", tmp_path / "outside.bin")
    relocate(tmp_path / "in" / "m.onnx", location)
    return tmp_path / "in" / "m.onnx"


@pytest.mark.parametrize("location", ["../outside.bin", "sub/../../outside.bin"])
def test_external_data_leaving_the_folder(tmp_path, model, location):
    path = _outside(tmp_path, model, location)
    with pytest.raises(UnsafePathError, match="leaves the model's folder") as exc:
        load_model(path)
    assert location in one_line(exc.value) and str(path) in str(exc.value)


def test_external_data_absolute_path(tmp_path, model):
    location = str(tmp_path / "outside.bin")
    path = _outside(tmp_path, model, location)
    with pytest.raises(UnsafePathError, match="absolute path") as exc:
        load_model(path)
    one_line(exc.value)
    # inside the folder, but absolute: still refused (the folder is the only place looked in)
    save_external(model, tmp_path / "in2" / "m.onnx", "m.bin")
    relocate(tmp_path / "in2" / "m.onnx", str(tmp_path / "in2" / "m.bin"))
    with pytest.raises(UnsafePathError, match="absolute path"):
        load_model(tmp_path / "in2" / "m.onnx")


def test_external_data_symlink_out_of_the_folder(tmp_path, model):
    path = _outside(tmp_path, model, "m.bin")
    (path.parent / "m.bin").symlink_to(tmp_path / "outside.bin")
    with pytest.raises(UnsafePathError, match="a link to .*leaves the model's folder"):
        load_model(path)


def _if_model_with_external_branch_tensor(location: str) -> onnx.ModelProto:
    w = nh.from_array(np.ones(4, np.float32), "w")
    out = lambda n: [h.make_tensor_value_info(n, T.FLOAT, [4])]  # noqa: E731
    then = h.make_graph([h.make_node("Add", ["x", "w"], ["t"])], "then", [], out("t"), [w])
    other = h.make_graph([h.make_node("Identity", ["x"], ["e"])], "else", [], out("e"))
    graph = h.make_graph([h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "g",
                         [h.make_tensor_value_info("c", T.BOOL, []), h.make_tensor_value_info("x", T.FLOAT, [4])],
                         out("y"))
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    tensor = next(a for a in m.graph.node[0].attribute if a.name == "then_branch").g.initializer[0]
    set_external_data(tensor, location, 0, 16)
    tensor.ClearField("raw_data")
    tensor.data_location = T.EXTERNAL
    return m


def test_external_data_inside_subgraphs_is_checked_too(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "outside.bin").write_bytes(np.full(4, 7, np.float32).tobytes())
    onnx.save(_if_model_with_external_branch_tensor("../outside.bin"), tmp_path / "in" / "m.onnx")
    with pytest.raises(UnsafePathError, match="tensor 'w'.*leaves the model's folder"):
        load_model(tmp_path / "in" / "m.onnx")
    # and a legitimate one inside the folder is loaded
    (tmp_path / "in" / "w.bin").write_bytes(np.full(4, 7, np.float32).tobytes())
    onnx.save(_if_model_with_external_branch_tensor("w.bin"), tmp_path / "in" / "ok.onnx")
    loaded = load_model(tmp_path / "in" / "ok.onnx")
    branch = next(a for a in loaded.graph.node[0].attribute if a.name == "then_branch").g
    assert nh.to_array(branch.initializer[0]).tolist() == [7.0] * 4


def test_external_data_of_a_constant_node_is_checked(tmp_path):
    tensor = nh.from_array(np.ones(4, np.float32), "value")
    set_external_data(tensor, "../outside.bin", 0, 16)
    tensor.ClearField("raw_data")
    tensor.data_location = T.EXTERNAL
    graph = h.make_graph([h.make_node("Constant", [], ["y"], value=tensor)], "g", [],
                         [h.make_tensor_value_info("y", T.FLOAT, [4])])
    (tmp_path / "in").mkdir()
    (tmp_path / "outside.bin").write_bytes(bytes(16))
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), tmp_path / "in" / "m.onnx")
    with pytest.raises(UnsafePathError):
        load_model(tmp_path / "in" / "m.onnx")


@pytest.mark.parametrize("damage, match", [("missing", "not found"), ("folder", "not found"),
                                           ("truncated", "cannot read external data")])
def test_broken_external_data(tmp_path, model, damage, match):
    save_external(model, tmp_path / "m.onnx", "m.bin")
    data = (tmp_path / "m.bin").read_bytes()
    (tmp_path / "m.bin").unlink()
    if damage == "folder":
        (tmp_path / "m.bin").mkdir()
    if damage == "truncated":
        (tmp_path / "m.bin").write_bytes(data[:1000])
    with pytest.raises(ModelLoadError, match=match) as exc:
        load_model(tmp_path / "m.onnx")
    assert "m.onnx" in one_line(exc.value)


# ------------------------------------------------------------------------------------- saving: the basics


def test_save_small_model_inline(tmp_path, model):
    out = save_model(model, tmp_path / "out.onnx")
    assert out == tmp_path / "out.onnx"
    assert files(tmp_path) == ["out.onnx"]
    assert onnx.load(str(out)).SerializeToString() == model.SerializeToString()


def test_save_refuses_the_input_unless_forced(tmp_path, model):
    src = tmp_path / "in.onnx"
    onnx.save(model, src)
    original = src.read_bytes()
    os.link(src, tmp_path / "hard.onnx")
    (tmp_path / "soft.onnx").symlink_to(src)
    for out in (src, tmp_path / "." / "in.onnx", tmp_path / "hard.onnx", tmp_path / "soft.onnx"):
        with pytest.raises(UnsafePathError, match="output is the input model") as exc:
            save_model(model, out, inputs=(src,))
        assert exc.value.exit_code == 1
    assert src.read_bytes() == original
    assert sorted(files(tmp_path)) == ["hard.onnx", "in.onnx", "soft.onnx"]
    other = zoo.vgg()
    save_model(other, src, inputs=(src,), force=True)
    assert onnx.load(str(src)).graph.name == other.graph.name


def test_save_creates_missing_folders_and_refuses_files_in_the_way(tmp_path, model):
    save_model(model, tmp_path / "new" / "sub" / "out.onnx")
    assert files(tmp_path) == ["new", "new/sub", "new/sub/out.onnx"]
    (tmp_path / "plain").write_text("a file")
    for out in (tmp_path / "plain" / "out.onnx", tmp_path / "plain" / "sub" / "out.onnx"):
        with pytest.raises(OutputError, match="plain is a file, not a folder") as exc:
            save_model(model, out)
        assert isinstance(exc.value, OnnxPruneError) and exc.value.exit_code == 1
        with pytest.raises(OutputError, match="plain is a file, not a folder"):
            io.write_text(out, "text")
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        save_model(model, tmp_path / "taken")
    assert files(tmp_path) == ["new", "new/sub", "new/sub/out.onnx", "plain", "taken"]


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_outputs_get_the_permissions_the_umask_gives(tmp_path, model, mask):
    """Text and model outputs alike: what a new file gets under the umask (not a temporary file's 0600)."""
    old = os.umask(mask)
    try:
        io.write_text(tmp_path / "a" / "plan.json", "{}\n")
        save_model(model, tmp_path / "m.onnx")
    finally:
        os.umask(old)
    for name in ("a/plan.json", "m.onnx"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    assert files(tmp_path) == ["a", "a/plan.json", "m.onnx"]  # no temporary file left


def test_save_relative_path_in_the_current_folder(tmp_path, monkeypatch, model):
    monkeypatch.chdir(tmp_path)
    save_model(model, "out.onnx")
    assert files(tmp_path) == ["out.onnx"]


# --------------------------------------------------------------------------------- saving: external data


def test_save_with_external_data_loads_back_and_runs(tmp_path, model):
    before = model.SerializeToString()
    out = save_model(model, tmp_path / "out.onnx", external_data_threshold=1000)
    assert files(tmp_path) == ["out.onnx", "out.onnx.data"]  # no temporary folder left
    assert (tmp_path / "out.onnx").stat().st_size < 10_000 < (tmp_path / "out.onnx.data").stat().st_size
    raw = onnx.load(str(out), load_external_data=False)
    assert any(uses_external_data(t) for t in raw.graph.initializer)
    onnx.checker.check_model(str(out), full_check=True)

    loaded = load_model(out)
    assert weights(loaded).keys() == weights(model).keys()
    assert all(np.array_equal(a, weights(model)[k]) for k, a in weights(loaded).items())
    np.testing.assert_allclose(run_ort(out), run_ort(model), rtol=1e-5, atol=1e-6)

    # the in-memory model is as it was: it can be saved again, anywhere, as a standalone file
    assert model.SerializeToString() == before
    (tmp_path / "elsewhere").mkdir()
    again = save_model(model, tmp_path / "elsewhere" / "again.onnx")
    assert files(tmp_path / "elsewhere") == ["again.onnx"]
    np.testing.assert_allclose(run_ort(again), run_ort(model), rtol=1e-5, atol=1e-6)


def test_models_past_the_protobuf_limit_get_external_data(tmp_path, monkeypatch, model):
    monkeypatch.setattr(io, "model_nbytes", lambda m: io.PROTOBUF_LIMIT)  # as if the model were 2 GiB
    save_model(model, tmp_path / "big.onnx")
    assert files(tmp_path) == ["big.onnx", "big.onnx.data"]
    np.testing.assert_allclose(run_ort(tmp_path / "big.onnx"), run_ort(model), rtol=1e-5, atol=1e-6)


def test_external_save_replaces_a_previous_pair(tmp_path, model):
    save_model(zoo.vgg(), tmp_path / "out.onnx", external_data_threshold=1000)
    save_model(model, tmp_path / "out.onnx", external_data_threshold=1000)
    np.testing.assert_allclose(run_ort(tmp_path / "out.onnx"), run_ort(model), rtol=1e-5, atol=1e-6)


def test_keep_model_false_may_leave_weights_outside(tmp_path, model):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    save_model(m, tmp_path / "out.onnx", external_data_threshold=1000, keep_model=False)
    np.testing.assert_allclose(run_ort(tmp_path / "out.onnx"), run_ort(model), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------- saving: atomic writes


def _half_then(exc: BaseException):
    def save(m, f, *args, **kwargs):
        Path(f).write_bytes(m.SerializeToString()[:200])  # a partial file, as an interrupted write leaves
        raise exc

    return save


@pytest.mark.parametrize("exc, raised", [
    (RuntimeError("disk on fire"), RuntimeError),
    (KeyboardInterrupt(), KeyboardInterrupt),
    (OSError(28, "No space left on device"), OutputError),
])
@pytest.mark.parametrize("existing", [False, True])
def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch, model, exc, raised, existing):
    if existing:
        (tmp_path / "out.onnx").write_bytes(b"the previous output")
    monkeypatch.setattr(onnx, "save_model", _half_then(exc))
    with pytest.raises(raised) as info:
        save_model(model, tmp_path / "out.onnx")
    if raised is OutputError:
        assert "cannot write" in one_line(info.value) and "No space left" in str(info.value)
    assert files(tmp_path) == (["out.onnx"] if existing else [])
    if existing:
        assert (tmp_path / "out.onnx").read_bytes() == b"the previous output"


def test_interrupted_external_save_leaves_nothing_and_keeps_the_model(tmp_path, monkeypatch, model):
    """onnx fails after writing some tensors to the data file: no file is left and `model` keeps its weights."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    before = m.SerializeToString()
    (tmp_path / "out.onnx").write_bytes(b"old model")
    (tmp_path / "out.onnx.data").write_bytes(b"old data")
    real = onnx.external_data_helper.save_external_data
    calls = []

    def flaky(tensor, base_path):
        calls.append(tensor.name)
        if len(calls) == 3:
            raise OSError(5, "Input/output error")
        real(tensor, base_path)

    monkeypatch.setattr(onnx.external_data_helper, "save_external_data", flaky)
    with pytest.raises(OutputError, match="Input/output error"):
        save_model(m, tmp_path / "out.onnx", external_data_threshold=1000)
    assert len(calls) == 3
    assert files(tmp_path) == ["out.onnx", "out.onnx.data"]
    assert (tmp_path / "out.onnx").read_bytes() == b"old model"
    assert (tmp_path / "out.onnx.data").read_bytes() == b"old data"
    assert m.SerializeToString() == before


def test_failed_move_into_place_leaves_nothing(tmp_path, monkeypatch, model):
    (tmp_path / "out.onnx").write_bytes(b"the previous output")
    real_replace = os.replace

    def refuse(src, dst):
        if Path(dst).name == "out.onnx":
            raise PermissionError(13, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputError, match="Permission denied"):
        save_model(model, tmp_path / "out.onnx")
    assert files(tmp_path) == ["out.onnx"]
    assert (tmp_path / "out.onnx").read_bytes() == b"the previous output"


def test_unwritable_folder_is_a_user_error(tmp_path, monkeypatch, model):
    def no_temp(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io.tempfile, "mkdtemp", no_temp)
    with pytest.raises(OutputError, match="cannot write in"):
        save_model(model, tmp_path / "out.onnx")


def test_staged_model_is_checked_before_it_replaces_the_output(tmp_path, model):
    (tmp_path / "out.onnx").write_bytes(b"the previous output")
    with stage_model(model, tmp_path / "out.onnx", external_data_threshold=1000) as staged:
        assert staged.path.exists() and staged.path.parent != tmp_path
        run_ort(staged.path)  # the staged pair is complete and loadable where it is
        assert (tmp_path / "out.onnx").read_bytes() == b"the previous output"
        # leaving without commit(): e.g. the check failed
    assert files(tmp_path) == ["out.onnx"]
    assert (tmp_path / "out.onnx").read_bytes() == b"the previous output"

    with stage_model(model, tmp_path / "out.onnx", external_data_threshold=1000) as staged:
        assert staged.commit() == tmp_path / "out.onnx"
    assert files(tmp_path) == ["out.onnx", "out.onnx.data"]
    np.testing.assert_allclose(run_ort(tmp_path / "out.onnx"), run_ort(model), rtol=1e-5, atol=1e-6)
