"""Prune a version of an MLflow model registry and register the result (`onnxprune[mlflow]`).

One job, `prune_version`:
1. resolve `models:/NAME/VERSION`, `models:/NAME@ALIAS` or `models:/NAME` (its latest version) in the registry;
2. look for a version this recipe already produced from it (tags below): if there is one, finish it (set the alias
   when its gate passed) and register nothing;
3. download the version through the registry client into a temporary folder of our own, and find the ONNX file
   the way the ONNX flavor does (its `data` entry in MLmodel, which must stay inside that folder);
4. prune it (api.prune), write the plan and the model card, gate it with the policy (gate.check), benchmark it;
5. log a run (options as params; ratios, fidelity and speedup as metrics; card, plan, bench and gate JSON as
   artifacts), log the pruned model with the ONNX flavor and the source's signature, and register it with its
   lineage tags in the same call that creates the version, so a version never exists without them;
6. set `alias` only when the gate passed.
Nothing a registry returns is used as a path outside the job's own folder.
"""

from __future__ import annotations

import json
import shlex
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import OnnxPruneError, OptionError
from . import require
from .recipe import Recipe

TAG = "onnxprune."
PARENT_NAME, PARENT_VERSION = TAG + "parent_name", TAG + "parent_version"
RUN_ID, PLAN_SHA256, RECIPE_SHA256 = TAG + "run_id", TAG + "plan_sha256", TAG + "recipe_sha256"
TOOL_VERSION, GATE = TAG + "version", TAG + "gate"  # gate: pass | fail | none (no policy)
SINGLE_FILE_LIMIT = 2_000_000_000  # bytes: protobuf's limit for a model in one file is 2 GiB
GATE_NOTES = TAG + "gate_notes"  # on the run: the gate's warnings (a statistic that can be fooled, random inputs)
URI_PREFIX = "models:/"
ARTIFACTS = "onnxprune"  # the run's folder for the card, the plan, the bench and gate JSON


class RegistryError(OnnxPruneError):
    """The registry refused a request or does not hold what was asked for."""


@dataclass(frozen=True)
class VersionRef:
    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"{URI_PREFIX}{self.name}/{self.version}"


@dataclass
class JobResult:
    """What one job did: status registered (a new version), exists (made before: nothing registered), failed."""

    source: str
    status: str
    name: Optional[str] = None  # the registered model that holds the pruned version
    version: Optional[str] = None
    run_id: Optional[str] = None
    gate: Optional[str] = None  # pass | fail | none
    alias: Optional[str] = None  # set on the pruned version by this job
    metrics: dict = field(default_factory=dict)
    message: str = ""  # why it failed, or which gate thresholds failed
    notes: list = field(default_factory=list)  # what the gate warns of (a statistic that can be fooled, random inputs)

    @property
    def uri(self) -> Optional[str]:
        return VersionRef(self.name, self.version).uri if self.name and self.version else None

    def to_dict(self) -> dict:
        return dict(asdict(self), uri=self.uri)

    def line(self) -> str:
        if self.status == "failed":
            return f"{self.source}: failed: {self.message}"
        what = "registered" if self.status == "registered" else "already pruned with this recipe:"
        alias = f", alias {self.alias!r}" if self.alias else ""
        why = f": {self.message}" if self.message else ""
        notes = "".join(f"\n  {n if n.startswith('warning: ') else 'note: ' + n}" for n in self.notes)
        return f"{self.source}: {what} {self.uri} (gate {self.gate}{alias}){why}{notes}"


def parse_model_uri(text: str) -> tuple[str, Optional[str], Optional[str]]:
    """(name, version, alias) of `models:/NAME/VERSION`, `models:/NAME@ALIAS` or `models:/NAME`."""
    if not isinstance(text, str) or not text.startswith(URI_PREFIX) or not text[len(URI_PREFIX):].strip("/"):
        raise OptionError(f"{text!r}: expected models:/NAME/VERSION, models:/NAME@ALIAS or models:/NAME")
    rest = text[len(URI_PREFIX):]
    if "@" in rest:
        name, _, alias = rest.rpartition("@")
        if not name or not alias:
            raise OptionError(f"{text}: expected models:/NAME@ALIAS")
        return name, None, alias
    name, slash, version = rest.rpartition("/")
    if slash:
        if not name or not version.isdigit():
            raise OptionError(f"{text}: expected models:/NAME/VERSION with a version number")
        return name, version, None
    return rest, None, None


def quoted(value: str) -> str:
    """`value` as a string literal of MLflow's search syntax."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise OptionError(f"{value!r}: a name with both quote characters cannot be searched for")


def is_produced(tags: dict) -> bool:
    """Whether a version's tags say onnxprune made it."""
    return PARENT_NAME in (tags or {})


class Registry:
    """The registry calls a job makes, with MLflow's errors turned into one-line RegistryErrors."""

    def __init__(self, tracking_uri: Optional[str] = None, registry_uri: Optional[str] = None):
        mlflow = require("mlflow", "mlflow")
        self.tracking_uri = tracking_uri or mlflow.get_tracking_uri()
        self.registry_uri = registry_uri
        self.client = mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=registry_uri)

    def call(self, what: str, fn, *args, **kwargs):
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            raise RegistryError(f"{what}: {' '.join(str(exc.message).split())[:300]}") from None
        except OSError as exc:  # the server cannot be reached
            raise RegistryError(f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None

    def resolve(self, text: str) -> VersionRef:
        """The version `text` (a models:/ URI, or a bare registered model name: its latest version) names."""
        if not text.startswith(URI_PREFIX):
            text = URI_PREFIX + text
        name, version, alias = parse_model_uri(text)
        if alias is not None:
            mv = self.call(text, self.client.get_model_version_by_alias, name, alias)
            return VersionRef(name, str(mv.version))
        if version is not None:
            self.call(text, self.client.get_model_version, name, version)
            return VersionRef(name, version)
        versions = [v for v in self.search(f"name = {quoted(name)}") if not is_produced(v.tags)]
        if not versions:
            raise RegistryError(f"{text}: the registry holds no version of {name!r} (other than pruned ones)")
        return VersionRef(name, str(max(int(v.version) for v in versions)))

    def search(self, filter_string: str) -> list:
        """Every model version matching an MLflow search filter, all pages."""
        out, token = [], None
        while True:
            page = self.call(f"search {filter_string!r}", self.client.search_model_versions, filter_string,
                             max_results=1000, page_token=token)
            out.extend(page)
            token = getattr(page, "token", None)
            if not token:
                return out

    def select(self, sources: Sequence[str] = (), filter_string: Optional[str] = None) -> list[VersionRef]:
        """The versions named by `sources` (URIs or names) and matched by `filter_string` (MLflow's
        search_model_versions syntax; versions onnxprune produced are left out), each once, in order."""
        refs = [self.resolve(s) for s in sources]
        if filter_string:
            found = [v for v in self.search(filter_string) if not is_produced(v.tags)]
            refs += [VersionRef(v.name, str(v.version)) for v in sorted(found, key=lambda v: (v.name, int(v.version)))]
        return list(dict.fromkeys(refs))

    def tags(self, ref: VersionRef) -> dict:
        return dict(self.call(ref.uri, self.client.get_model_version, ref.name, ref.version).tags or {})

    def find_produced(self, target: str, ref: VersionRef, recipe_sha256: str):
        """The version of `target` this recipe made from `ref`, or None."""
        found = self.search(f"name = {quoted(target)} and tags.`{RECIPE_SHA256}` = '{recipe_sha256}'")
        found = [v for v in found if v.tags.get(PARENT_NAME) == ref.name and v.tags.get(PARENT_VERSION) == ref.version]
        return min(found, key=lambda v: int(v.version)) if found else None

    def download(self, ref: VersionRef, folder: Path) -> tuple[Path, object]:
        """Download `ref` into `folder` (made here); returns its ONNX file and its signature (or None)."""
        import mlflow
        from mlflow.models import Model

        where = self.call(ref.uri, self.client.get_model_version_download_uri, ref.name, ref.version)
        folder.mkdir(parents=True, exist_ok=True)
        local = Path(self.call(f"download {ref.uri}", mlflow.artifacts.download_artifacts, artifact_uri=where,
                               dst_path=str(folder), tracking_uri=self.tracking_uri)).resolve()
        if not local.is_relative_to(folder.resolve()):
            raise RegistryError(f"{ref.uri}: the download left its folder")
        try:
            meta = Model.load(str(local))
        except Exception as exc:  # no MLmodel file, or an unreadable one
            raise RegistryError(f"{ref.uri}: not an MLflow model (MLmodel: {' '.join(str(exc).split())[:200]})") from None
        flavor = meta.flavors.get("onnx")
        if not flavor or not isinstance(flavor.get("data"), str):
            raise RegistryError(f"{ref.uri}: has no ONNX flavor (flavors: {', '.join(sorted(meta.flavors)) or 'none'}); "
                                "onnxprune prunes ONNX models")
        path = (local / flavor["data"]).resolve()
        if not path.is_relative_to(local) or not path.is_file():
            raise RegistryError(f"{ref.uri}: the ONNX flavor's data {flavor['data']!r} is not a file inside the model")
        return path, meta.signature


# ---------------------------------------------------------------------------------------------------------------
# The job


def command_line(source: str, recipe: Recipe, register_as: Optional[str], alias: Optional[str]) -> str:
    """The `onnxprune mlflow prune` command that runs this job."""
    args = ["onnxprune", "mlflow", "prune", source]
    defaults = Recipe().to_dict()
    for option, value in recipe.to_dict().items():
        if value == defaults[option] or value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            args += [f"--{option}", f"{v:g}" if isinstance(v, float) else str(v)]
    args += ["--register-as", register_as] if register_as else []
    args += ["--alias", alias] if alias else []
    return shlex.join(args)


def prune_version(
    source: Union[str, VersionRef],
    recipe: Recipe = Recipe(),
    *,
    register_as: Optional[str] = None,
    alias: Optional[str] = None,
    tracking_uri: Optional[str] = None,
    registry_uri: Optional[str] = None,
    experiment: Optional[str] = None,
    progress=None,
) -> JobResult:
    """Prune one registry version and register the result as a new version of `register_as` (default: the
    source's registered model); see the module's docstring. Raises OnnxPruneError on bad input.

    `progress(message)` receives one line per step.
    """
    say = progress or (lambda message: None)
    if alias is not None and recipe.policy is None:
        raise OptionError("--alias is set only when the gate passes: give the gate with --policy")
    registry = Registry(tracking_uri, registry_uri)
    ref = source if isinstance(source, VersionRef) else registry.resolve(source)
    target = register_as or ref.name
    recipe_sha = recipe.sha256()
    made = registry.find_produced(target, ref, recipe_sha)
    if made is not None:
        gate = made.tags.get(GATE)
        set_alias = _finish_alias(registry, target, made, alias, gate)
        say(f"{ref.uri}: already pruned with this recipe as {target} version {made.version}")
        return JobResult(ref.uri, "exists", target, str(made.version), made.tags.get(RUN_ID), gate, set_alias)
    with tempfile.TemporaryDirectory(prefix="onnxprune-mlflow-") as tmp:
        folder = Path(tmp)
        say(f"{ref.uri}: downloading")
        source_path, signature = registry.download(ref, folder / "source")
        (folder / "out").mkdir()
        say(f"{ref.uri}: pruning")
        evidence = _prune_and_measure(ref, source_path, folder / "out", recipe,
                                      command_line(ref.uri, recipe, register_as, alias), say)
        say(f"{ref.uri}: logging the run and registering {target}")
        return _log_and_register(registry, ref, target, alias, recipe, recipe_sha, signature, evidence, experiment)


def _finish_alias(registry: Registry, target: str, version, alias: Optional[str], gate: Optional[str]):
    """Set `alias` on a version whose gate passed (a job that stopped before its alias is finished here)."""
    if alias is None or gate != "pass":
        return None
    if alias not in (getattr(version, "aliases", None) or []):
        registry.call(f"alias {alias!r}", registry.client.set_registered_model_alias, target, alias, str(version.version))
    return alias


@dataclass
class _Evidence:
    model: Path
    plan: Path
    card_dir: Path
    files: list  # JSON files logged beside the card
    gate: str  # pass | fail | none
    gate_detail: str  # the thresholds that failed
    metrics: dict
    params_extra: dict
    gate_notes: list  # the gate's warnings and notes


def _prune_and_measure(ref: VersionRef, source: Path, out: Path, recipe: Recipe, command: str, say) -> _Evidence:
    from .. import api
    from ..bench import BenchConfig, bench
    from ..card import PruneFacts, model_card
    from ..gate import CheckPolicy, check, load_policy
    from ..validate import check_io, check_runnable

    policy = load_policy(recipe.policy) if recipe.policy else None
    result = api.prune(str(source), **recipe.prune_kwargs())
    check_io(result.dense_io, result.model)
    plan = api.pruning_plan(result)
    facts = PruneFacts.of(result)
    model_path = out / "model.onnx"
    result.save(model_path)
    del result
    check_runnable(source, model_path, recipe.shapes or None, label=f"the pruned {ref.uri}")
    plan_path = plan.save(out / "plan.json")
    files = []
    gate_report = None
    if policy is not None:
        say(f"{ref.uri}: gate ({recipe.policy})")
        gate_report = check(source, model_path, policy)
        files.append(_write_json(out / "gate.json", gate_report.to_dict()))
    bench_report = gate_report.bench if gate_report is not None and gate_report.bench is not None else None
    if bench_report is None:
        say(f"{ref.uri}: benchmark")
        p = policy or CheckPolicy(shapes=dict(recipe.shapes))
        bench_report = bench([str(source), str(model_path)], BenchConfig(
            providers=(p.provider,), batches=(p.batch,) if p.batch else None, threads=(p.threads,), warmup=p.warmup,
            runs=p.runs, rounds=p.rounds, shapes=dict(p.shapes or recipe.shapes), seed=p.seed))
    files.append(_write_json(out / "bench.json", bench_report.to_dict()))
    card = model_card(facts, model_path, plan=plan_path, command=command, bench=bench_report)
    card.source.path, card.output.path = ref.uri, "model.onnx"
    card.plan.path = "plan.json"
    card.write(out / "card")
    data = card.to_dict()
    gate = "none" if gate_report is None else "pass" if gate_report.passed else "fail"
    metrics = _metrics(data, gate_report, bench_report)
    detail = "" if gate_report is None else "; ".join(f"{c.name} {c.status}: {c.detail}" for c in gate_report.failed)
    return _Evidence(model_path, plan_path, out / "card", files, gate, detail, metrics,
                     {"source": ref.uri, "source_sha256": data["source"]["sha256"]},
                     [] if gate_report is None else list(gate_report.notes))


def _write_json(path: Path, data: dict) -> Path:
    from ..io import write_text

    return write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def _metrics(card: dict, gate_report, bench_report) -> dict:
    """Numbers for the run: cost ratios, fidelity (the gate's when there is one, else the card's), speed."""
    totals = card["totals"]
    m = {"params_ratio": totals["params_ratio"], "macs_ratio": totals["macs_ratio"], "size_ratio": totals["size_ratio"]}
    fidelity = gate_report.fidelity.to_dict() if gate_report is not None else card["fidelity"]
    if fidelity:
        outputs = fidelity["outputs"]
        for key, name, pick in (("rel_error", "fidelity_max_rel_error", max), ("cosine", "fidelity_min_cosine", min),
                                ("max_abs", "fidelity_max_abs", max), ("top1", "fidelity_min_top1", min)):
            values = [o[key] for o in outputs if isinstance(o.get(key), (int, float))]
            if values:
                m[name] = pick(values)
        acc = fidelity.get("accuracy")
        if acc:
            m.update(accuracy_dense=acc["dense"], accuracy_pruned=acc["pruned"],
                     accuracy_drop=acc["dense"] - acc["pruned"])
    rows = [r for r in bench_report.rows if not r.control and r.status == "ok"]
    if len(rows) >= 2:
        dense, pruned = rows[0], rows[1]
        m.update(speedup=pruned.speedup, speedup_low=pruned.speedup_low, speedup_high=pruned.speedup_high,
                 latency_ms_dense=dense.median_ms, latency_ms_pruned=pruned.median_ms)
        noise = bench_report.noise([r for r in bench_report.rows if (r.provider, r.threads, r.batch)
                                    == (pruned.provider, pruned.threads, pruned.batch)])
        if noise is not None:
            m["speedup_noise"] = noise
    if gate_report is not None:
        m["gate_passed"] = 1.0 if gate_report.passed else 0.0
    return {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and v == v}


def _log_and_register(registry: Registry, ref: VersionRef, target: str, alias: Optional[str], recipe: Recipe,
                      recipe_sha: str, signature, ev: _Evidence, experiment: Optional[str]) -> JobResult:
    import mlflow
    import mlflow.onnx
    import onnx

    from ..provenance import file_sha256, model_disk_bytes, versions

    mlflow.set_tracking_uri(registry.tracking_uri)
    if registry.registry_uri:
        mlflow.set_registry_uri(registry.registry_uri)
    if experiment:
        registry.call(f"experiment {experiment!r}", mlflow.set_experiment, experiment)
    params = {k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in recipe.to_dict().items()}
    params = {k: v for k, v in params.items() if v not in (None, "")}
    params.update(ev.params_extra, recipe_sha256=recipe_sha)
    lineage = {PARENT_NAME: ref.name, PARENT_VERSION: ref.version, PLAN_SHA256: file_sha256(ev.plan),
               RECIPE_SHA256: recipe_sha, TOOL_VERSION: versions()["onnxprune"], GATE: ev.gate}
    nested = mlflow.active_run() is not None  # a caller's run holds this one
    with mlflow.start_run(run_name=f"onnxprune {ref.name} v{ref.version}", nested=nested) as run:
        run_id = run.info.run_id
        mlflow.set_tags({**lineage, RUN_ID: run_id})
        if ev.gate_notes:  # beside the verdict, where the run is read
            mlflow.set_tag(GATE_NOTES, "\n".join(ev.gate_notes))
        mlflow.log_params(params)
        mlflow.log_metrics(ev.metrics)
        mlflow.log_artifacts(str(ev.card_dir), f"{ARTIFACTS}/card")
        for path in [ev.plan, *ev.files]:
            mlflow.log_artifact(str(path), ARTIFACTS)
        # One file, as onnxprune wrote it, where protobuf allows (under 2 GB): the registered model.onnx then has
        # the same bytes as `apply-plan` gives, which is how a user checks it (MLflow's default splits the weights).
        single = model_disk_bytes(ev.model) < SINGLE_FILE_LIMIT
        info = mlflow.onnx.log_model(onnx.load(str(ev.model)), name="model", signature=signature,
                                     pip_requirements=mlflow.onnx.get_default_pip_requirements(),
                                     save_as_external_data=not single)
        mv = registry.call(f"register {target}", mlflow.register_model, info.model_uri, target,
                           tags={**lineage, RUN_ID: run_id})
    set_alias = None
    if alias is not None and ev.gate == "pass":
        registry.call(f"alias {alias!r}", registry.client.set_registered_model_alias, target, alias, str(mv.version))
        set_alias = alias
    return JobResult(ref.uri, "registered", target, str(mv.version), run_id, ev.gate, set_alias, ev.metrics,
                     ev.gate_detail, ev.gate_notes)
