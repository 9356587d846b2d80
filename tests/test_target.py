"""--target: the channel multiple of the deployment hardware sets --round-to."""

import json

from cli_run import run as invoke


def test_target_presets_and_detection():
    from onnxprune.target import cpu_target, round_to_for

    assert cpu_target("flags\t\t: fpu sse avx avx2 fma\n") == "cpu-avx2"
    assert cpu_target("flags\t\t: fpu avx2 avx512f avx512bw\n") == "cpu-avx512"
    assert round_to_for("cpu-avx512") == 16 and round_to_for("cpu-avx2") == 8 and round_to_for("gpu") == 8
    assert round_to_for("auto") in (8, 16)


def test_cli_target_sets_round_to(files, tmp_path):
    model, _ = files
    r = invoke("prune", model, "-o", tmp_path / "p.onnx", "--ratio", "0.6", "--target", "cpu-avx2", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output[r.output.index("{"):])
    assert report["options"]["round_to"] == 8
    assert all(g["kept"] % 8 == 0 for g in report["groups"] if g["prunable"])
    r = invoke("prune", model, "-o", tmp_path / "p.onnx", "--target", "gpu", "--round-to", "4", "--force")
    assert r.exit_code == 1 and "give one" in r.output
