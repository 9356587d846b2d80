"""The MLflow registry integration against a real `mlflow server` (sqlite store, local artifacts) on 127.0.0.1,
its webhooks delivered by that server, and Ray running locally."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_cnn.onnx"
BIN = Path(sys.executable).parent
SECRET = "test-webhook-secret"
FAST_BENCH = "rounds = 2\nruns = 2\nwarmup = 1\nsamples = 2\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A fresh MLflow tracking server; it delivers webhooks to 127.0.0.1 (allowed for local testing only)."""
    from cryptography.fernet import Fernet

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = dict(os.environ, MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true", MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
               MLFLOW_WEBHOOK_CACHE_TTL="1", MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=Fernet.generate_key().decode())
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail("mlflow server exited: " + (root / "server.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(url + "/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("mlflow server did not start: " + (root / "server.log").read_text()[-2000:])
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def client(server):
    import mlflow

    mlflow.set_tracking_uri(server)
    return mlflow.MlflowClient(server)


def register(server: str, name: str, model=MODEL) -> str:
    """Log an ONNX model with a signature and register it under `name`; returns the new version."""
    import mlflow
    import mlflow.onnx
    import onnxruntime as ort
    from mlflow.models import infer_signature

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    first = proto.graph.input[0]
    x = np.zeros([d.dim_value or 1 for d in first.type.tensor_type.shape.dim], np.float32)
    y = ort.InferenceSession(proto.SerializeToString()).run(None, {first.name: x})[0]
    mlflow.set_tracking_uri(server)
    with mlflow.start_run():
        info = mlflow.onnx.log_model(proto, name="model", signature=infer_signature({first.name: x}, y),
                                     registered_model_name=name, pip_requirements=["onnxruntime"])
    return str(info.registered_model_version)


def relu_only() -> onnx.ModelProto:
    """An ONNX model without a channel group: its job fails with 'nothing to prune'."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "relu_only", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def policy(tmp_path, text: str) -> Path:
    path = tmp_path / "gate.toml"
    path.write_text(text + FAST_BENCH)
    return path


def cli(*args, server=None, check=None):
    env = dict(os.environ, MLFLOW_TRACKING_URI=server) if server else None
    done = subprocess.run([str(BIN / "onnxprune"), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600)
    if check is not None:
        assert done.returncode == check, done.stderr[-3000:]
    return done


def versions(client, name: str) -> list:
    return sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


# ---------------------------------------------------------------------------------------------------------------
# Without a server


def test_core_imports_without_mlflow_or_ray():
    code = ("import sys; import onnxprune, onnxprune.cli; "
            "assert 'mlflow' not in sys.modules and 'ray' not in sys.modules, 'the core imported an extra'; "
            "sys.modules['mlflow'] = None; sys.modules['ray'] = None; "
            "from onnxprune.cli import main; main(['mlflow', 'prune', 'models:/m/1'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == "error: needs onnxprune[mlflow]: pip install 'onnxprune[mlflow]'"


def test_signature_is_mlflows_and_verify_refuses_the_rest():
    from mlflow.webhooks.delivery import _generate_hmac_signature

    from onnxprune.integrations.webhook import (DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, Rejected,
                                                parse_event, sign, verify)

    body = json.dumps({"entity": "model_version", "action": "created", "timestamp": "2026-01-01T00:00:00+00:00",
                       "data": {"name": "m", "version": "3", "source": "models:/m-1", "run_id": None,
                                "tags": {}, "description": None}})
    now = int(time.time())
    delivery = str(uuid.uuid4())
    assert sign(SECRET, delivery, str(now), body.encode()) == _generate_hmac_signature(SECRET, delivery, str(now), body)
    headers = {DELIVERY_HEADER: delivery, TIMESTAMP_HEADER: str(now),
               SIGNATURE_HEADER: _generate_hmac_signature(SECRET, delivery, str(now), body)}
    assert verify(headers, body.encode(), SECRET) == delivery
    event = parse_event(body.encode())
    assert (event.name, event.version) == ("m", "3")

    def refused(h, b=body.encode(), secret=SECRET):
        with pytest.raises(Rejected) as info:
            verify(h, b, secret)
        return info.value.status, str(info.value)

    assert refused({k: v for k, v in headers.items() if k != SIGNATURE_HEADER})[0] == 401  # unsigned
    assert refused(headers, body.replace('"3"', '"4"').encode()) == (401, "bad signature")  # tampered
    assert refused(headers, secret="another")[1] == "bad signature"
    old = str(now - 3600)
    stale = dict(headers, **{TIMESTAMP_HEADER: old, SIGNATURE_HEADER: _generate_hmac_signature(SECRET, delivery, old, body)})
    assert refused(stale)[1].startswith("stale")
    assert refused(dict(headers, **{TIMESTAMP_HEADER: "soon"}))[0] == 400
    assert refused(dict(headers, **{DELIVERY_HEADER: "../../etc"}))[0] == 400
    for bad in (b"not json", b'{"entity": "model_version", "action": "created", "data": {"name": "m", "version": "../1"}}'):
        with pytest.raises(Rejected) as info:
            parse_event(bad)
        assert info.value.status == 400


def test_hook_config_errors_are_one_line(tmp_path):
    from onnxprune.errors import OptionError
    from onnxprune.integrations.mlflow_hook import load_config

    cases = {
        'port = 1\n[[watch]]\nmodel = "m"\n': None,
        'colour = "red"\n[[watch]]\nmodel = "m"\n': "unknown key 'colour'",
        'port = 1\n': "no [[watch]] table",
        '[[watch]]\nmodel = "m"\nratio = "half"\n': "--ratio must be a number",
        '[[watch]]\nmodel = "m"\nalias = "best"\n': "'alias' is set only when the gate passes",
        '[[watch]]\nmodel = "m"\ncalib = "missing.npz"\n': "no such file",
    }
    for text, expected in cases.items():
        path = tmp_path / "hook.toml"
        path.write_text(text)
        if expected is None:
            assert load_config(path, environ={"ONNXPRUNE_HOOK_SECRET": SECRET}).watches["m"].recipe.ratio == 0.5
            with pytest.raises(OptionError, match=r"\$ONNXPRUNE_HOOK_SECRET, which is not set"):
                load_config(path, environ={})
            continue
        with pytest.raises(OptionError) as info:
            load_config(path, environ={"ONNXPRUNE_HOOK_SECRET": SECRET})
        assert expected in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# Against the server


def test_prune_registers_a_version_with_lineage_card_plan_and_alias(server, client, tmp_path):
    import mlflow

    register(server, "digits")
    client.set_registered_model_alias("digits", "champion", "1")
    gate = policy(tmp_path, "min-cosine = 0.0\nmax-macs-ratio = 0.5\n")
    args = ["mlflow", "prune", "models:/digits@champion", "--ratio", "0.5", "--round-to", "1", "--policy", gate,
            "--register-as", "digits-pruned", "--alias", "pruned", "--json"]
    done = cli(*args, server=server, check=0)
    [result] = json.loads(done.stdout)
    assert (result["status"], result["uri"], result["gate"], result["alias"]) == \
        ("registered", "models:/digits-pruned/1", "pass", "pruned")

    mv = client.get_model_version_by_alias("digits-pruned", "pruned")
    assert mv.version == "1"
    tags = mv.tags
    assert (tags["onnxprune.parent_name"], tags["onnxprune.parent_version"], tags["onnxprune.gate"]) == \
        ("digits", "1", "pass")
    assert tags["onnxprune.run_id"] == result["run_id"] and tags["onnxprune.version"]
    run = client.get_run(result["run_id"])
    assert run.data.params["ratio"] == "0.5" and run.data.params["source"] == "models:/digits/1"
    assert 0 < run.data.metrics["macs_ratio"] < 0.5 and run.data.metrics["speedup"] > 0
    assert run.data.metrics["fidelity_min_cosine"] > 0 and run.data.metrics["gate_passed"] == 1.0
    # the policy has no data: the gate judged random inputs, and says so beside its verdict, in the run too
    assert any("random inputs" in n for n in result["notes"]) and "random inputs" in run.data.tags["onnxprune.gate_notes"]
    folder = Path(mlflow.artifacts.download_artifacts(run_id=result["run_id"], artifact_path="onnxprune",
                                                       dst_path=str(tmp_path / "run"), tracking_uri=server))
    card = json.loads((folder / "card" / "report.json").read_text())
    assert card["source"]["path"] == "models:/digits/1" and (folder / "card" / "report.md").is_file()
    assert tags["onnxprune.plan_sha256"] == card["plan"]["sha256"]
    from onnxprune.provenance import file_sha256

    assert file_sha256(folder / "plan.json") == tags["onnxprune.plan_sha256"]
    assert json.loads((folder / "bench.json").read_text())["rows"][1]["speedup"] > 0
    assert json.loads((folder / "gate.json").read_text())["passed"] is True

    source_info = mlflow.models.get_model_info("models:/digits/1")
    pruned_info = mlflow.models.get_model_info("models:/digits-pruned/1")
    assert "onnx" in pruned_info.flavors and pruned_info.signature == source_info.signature
    pruned = mlflow.onnx.load_model("models:/digits-pruned/1")
    dense = onnx.load(str(MODEL))
    count = lambda m: sum(int(np.prod(t.dims)) for t in m.graph.initializer)  # noqa: E731
    assert count(pruned) < 0.5 * count(dense)
    # the plan, replayed on the registry's own source version, gives the registered model's bytes
    got = {k: Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / k),
                                                        tracking_uri=server))
           for k, uri in (("source", "models:/digits/1"), ("pruned", "models:/digits-pruned/1"))}
    cli("apply-plan", got["source"] / "model.onnx", folder / "plan.json", "-o", tmp_path / "replayed.onnx", check=0)
    assert (tmp_path / "replayed.onnx").read_bytes() == (got["pruned"] / "model.onnx").read_bytes()

    from onnxprune.integrations.mlflow_registry import prune_version
    from onnxprune.integrations.recipe import Recipe

    again = prune_version("models:/digits/1", Recipe(ratio=0.5, round_to=1, policy=str(gate)),
                          register_as="digits-pruned", alias="pruned", tracking_uri=server)
    assert (again.status, again.version) == ("exists", "1")  # the same recipe on the same version: nothing new
    assert [v.version for v in versions(client, "digits-pruned")] == ["1"]


def test_a_failed_gate_registers_without_the_alias(server, client, tmp_path):
    from onnxprune.integrations.mlflow_registry import prune_version
    from onnxprune.integrations.recipe import Recipe

    register(server, "gated")
    recipe = Recipe(ratio=0.25, round_to=1, policy=str(policy(tmp_path, "max-macs-ratio = 0.01\n")))
    result = prune_version("models:/gated/1", recipe, alias="pruned", tracking_uri=server)
    assert (result.status, result.version, result.gate, result.alias) == ("registered", "2", "fail", None)
    assert client.get_model_version("gated", "2").tags["onnxprune.gate"] == "fail"
    assert client.get_registered_model("gated").aliases == {}


def test_many_versions_as_ray_tasks_a_failure_leaves_the_others(server, client):
    register(server, "fleet-a")
    register(server, "fleet-b")
    register(server, "fleet-c", relu_only())
    done = cli("mlflow", "prune", "--filter", "name LIKE 'fleet-%'", "--ratio", "0.5", "--round-to", "1",
               "--executor", "ray", "--json", server=server, check=1)
    results = {r["source"]: r for r in json.loads(done.stdout)}
    assert results["models:/fleet-a/1"]["status"] == results["models:/fleet-b/1"]["status"] == "registered"
    assert results["models:/fleet-c/1"]["status"] == "failed"
    assert "nothing to prune" in results["models:/fleet-c/1"]["message"]
    assert "1 of 3 job(s) failed" in done.stderr.strip().splitlines()[-1]
    assert [v.version for v in versions(client, "fleet-a")] == ["1", "2"]
    assert versions(client, "fleet-c")[-1].version == "1"


def _post(url, body: bytes, headers: dict):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers},
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _signed(name, version, delivery=None, timestamp=None, secret=SECRET):
    from mlflow.webhooks.delivery import _generate_hmac_signature

    body = json.dumps({"entity": "model_version", "action": "created", "timestamp": "2026-01-01T00:00:00+00:00",
                       "data": {"name": name, "version": version, "source": "models:/m-x", "run_id": None,
                                "tags": {}, "description": None}})
    delivery = delivery or str(uuid.uuid4())
    timestamp = str(timestamp or int(time.time()))
    return body.encode(), {"X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": timestamp,
                           "X-MLflow-Signature": _generate_hmac_signature(secret, delivery, timestamp, body)}


def _hook(tmp_path, server, models, monkeypatch):
    from onnxprune.integrations.mlflow_hook import HookServer, load_config

    gate = policy(tmp_path, "min-cosine = 0.0\n")
    watches = "".join(f'[[watch]]\nmodel = "{m}"\nratio = 0.5\nround-to = 1\npolicy = "{gate.name}"\nalias = "pruned"\n'
                      for m in models)
    config = tmp_path / "hook.toml"
    config.write_text(f'tracking-uri = "{server}"\nport = {free_port()}\npath = "/hook"\n' + watches)
    monkeypatch.setenv("ONNXPRUNE_HOOK_SECRET", SECRET)
    return HookServer(load_config(config)).start()


def test_webhook_delivered_by_the_server_prunes_once(server, client, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="onnxprune.hook")
    hook = _hook(tmp_path, server, ["hooked"], monkeypatch)
    try:
        client.create_webhook(name="onnxprune", url=hook.url, events=["model_version.created"], secret=SECRET)
        time.sleep(1.5)  # the server caches its webhook list for MLFLOW_WEBHOOK_CACHE_TTL seconds
        register(server, "hooked")
        deadline = time.monotonic() + 300
        while not (len(hook.store.jobs()) == 1 and hook.wait_idle(1) and len(versions(client, "hooked")) == 2):
            assert time.monotonic() < deadline, hook.store.jobs()
            time.sleep(0.5)
        time.sleep(2)  # the pruned version's own event arrives too, and queues nothing
        [job] = hook.store.jobs()
        assert (job["name"], job["version"], job["state"]) == ("hooked", "1", "done")
        pruned = client.get_model_version("hooked", "2")
        assert pruned.tags["onnxprune.parent_version"] == "1" and pruned.aliases == ["pruned"]

        # forged, stale, malformed and oversized requests get a 4xx; a redelivery queues nothing
        body, headers = _signed("hooked", "1")
        assert _post(hook.url, body, {k: v for k, v in headers.items() if k != "X-MLflow-Signature"})[0] == 401
        assert _post(hook.url, body.replace(b'"1"', b'"7"'), headers)[0] == 401
        stale_body, stale = _signed("hooked", "1", timestamp=int(time.time()) - 3600)
        assert _post(hook.url, stale_body, stale)[0] == 401
        junk = b'{"entity": "model_version", "action": "created", "data": {"name": "hooked", "version": "/etc/passwd"}}'
        assert _post(hook.url, junk, _signed_bytes(junk))[0] == 400
        assert _post(hook.url, b"x" * 100_000, headers)[0] == 413
        assert _post(hook.url.replace("/hook", "/other"), body, headers)[0] == 404
        assert _post(hook.url, body, headers) == (200, {"ignored": "job already queued", "job": job["id"]})
        assert _post(hook.url, body, headers)[1]["ignored"] == "delivery already received"
        assert hook.wait_idle(30) and len(hook.store.jobs()) == 1 and len(versions(client, "hooked")) == 2
        rejected = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rejected")]
        assert len(rejected) == 6 and "rejected 401 from 127.0.0.1: unsigned" in rejected[0]
    finally:
        hook.stop()


def _signed_bytes(body: bytes) -> dict:
    from onnxprune.integrations.webhook import sign

    delivery, timestamp = str(uuid.uuid4()), str(int(time.time()))
    return {"X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": timestamp,
            "X-MLflow-Signature": sign(SECRET, delivery, timestamp, body)}


def test_a_restarted_receiver_finishes_interrupted_jobs_without_registering_twice(server, client, tmp_path,
                                                                                monkeypatch):
    from onnxprune.integrations.mlflow_hook import JobStore, load_config
    from onnxprune.integrations.mlflow_registry import prune_version

    register(server, "crash-after")  # the crash came after the registration, before the job was marked done
    register(server, "crash-before")  # the crash came in the middle of pruning
    monkeypatch.setenv("ONNXPRUNE_HOOK_SECRET", SECRET)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    first = _hook(config_dir, server, ["crash-after", "crash-before"], monkeypatch)
    first.stop()  # a receiver that is gone: its state file says what it was doing
    config = load_config(config_dir / "hook.toml")
    store = JobStore(config.state_file)
    for name in ("crash-after", "crash-before"):
        store.accept(str(uuid.uuid4()), name, "1", config.watches[name].recipe_sha256)
    assert store.next_job()[1] == "crash-after"  # running when the receiver died ...
    watch = config.watches["crash-after"]
    made = prune_version("models:/crash-after/1", watch.recipe, alias=watch.alias, tracking_uri=server)
    assert made.status == "registered"  # ... after it had registered

    from onnxprune.integrations.mlflow_hook import HookServer

    hook = HookServer(config).start()
    try:
        assert hook.wait_idle(300), hook.store.jobs()
    finally:
        hook.stop()
    jobs = {j["name"]: j for j in JobStore(config.state_file).jobs()}
    assert jobs["crash-after"]["state"] == jobs["crash-before"]["state"] == "done"
    assert jobs["crash-after"]["attempts"] == 2 and jobs["crash-after"]["result"]["status"] == "exists"
    assert jobs["crash-before"]["result"]["status"] == "registered"
    assert [v.version for v in versions(client, "crash-after")] == ["1", "2"]
    assert [v.version for v in versions(client, "crash-before")] == ["1", "2"]
