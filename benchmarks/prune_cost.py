"""What does `onnxprune prune` cost, against a bare `onnx.load` + `onnx.save` round trip of the same file?

Every measurement is a whole, fresh process: the wall time from spawn to exit, and that process's peak
resident memory (``ru_maxrss`` from ``os.wait4`` on that one child, so no other child's peak leaks in),
forked from a small launcher process so that this script's own memory is not counted (see LAUNCHER).
Three commands per model:

- ``bare``:      ``python -c "onnx.save(onnx.load(IN), OUT)"``
- ``no-check``:  ``onnxprune prune IN -o OUT --ratio R --no-check``
- ``check``:     ``onnxprune prune IN -o OUT --ratio R`` (adds the full checker and an onnxruntime run)

They run in rounds (each round visits every command once, in a rotated order, after the input file was
read once so that it is in the page cache); medians of ``--repeat`` rounds are reported with the ratios
prune / bare against the targets: time <= 2x and peak memory <= 1.5x the bare round trip. ``startup`` (an
interpreter that imports onnxprune's CLI and exits) is printed as well: the fixed cost inside every prune run.

``--stages`` additionally runs the prune command once more per model with each stage of onnxprune's
pipeline wrapped (by name, in the namespaces where onnxprune's modules look them up, see STAGES; a stage
that no longer exists is skipped): its calls, time, the RSS after it and its own peak RSS (the kernel's
high-water mark, reset at each stage's start through /proc/self/clear_refs). Nested stages are indented;
"(not in a wrapped stage)" is the part of a stage's time that none of its wrapped callees account for.

Models (generated once, cached under --cache): ResNet-50 (models.zoo.resnet50, 25.5M params) and BERT-base
(models.transformers.bert_base, 109M params, one 0.44 GB file).

    .venv/bin/python benchmarks/prune_cost.py [--repeat 3] [--stages] [--models resnet50,bert_base]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
TARGET_TIME = 2.0
TARGET_MEMORY = 1.5
CASES = ("bare", "no-check", "check")
ROUND_TRIP = "import sys, onnx; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])"
STARTUP = "import onnxprune.cli"


# ------------------------------------------------------------------------------------------ models
def _build_resnet50():
    from models import zoo

    return zoo.resnet50()


def _build_bert_base():
    from models import transformers

    return transformers.bert_base()


MODELS: dict[str, Callable] = {"resnet50": _build_resnet50, "bert_base": _build_bert_base}


def cached_model(name: str, cache: Path) -> Path:
    """The model file, built and saved with onnx.save the first time (atomically: a partial file never stays)."""
    path = cache / f"{name}.onnx"
    if path.exists():
        return path
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import onnx

    cache.mkdir(parents=True, exist_ok=True)
    print(f"building {name} -> {path}", file=sys.stderr, flush=True)
    model = MODELS[name]()
    tmp = path.with_suffix(".onnx.tmp")
    onnx.save(model, str(tmp))
    del model
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------ measuring
# A tiny launcher between this process and the measured command. A child's ru_maxrss starts from the RSS of
# the process it was forked from (the kernel carries the forked address space's high-water mark over exec), so
# spawning from this process - which may hold a model it just built - would inflate every measurement. The
# launcher imports nothing heavy: its own RSS (a few MB) is the floor. It reports wait4's rusage of that one child.
LAUNCHER = r"""
import json, os, sys, time
devnull = os.open(os.devnull, os.O_WRONLY)
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(devnull, 1)
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "maxrss_kb": ru.ru_maxrss, "cpu_s": ru.ru_utime + ru.ru_stime,
                  "rc": os.waitstatus_to_exitcode(status)}))
"""


def measure(cmd: Sequence[str]) -> dict:
    """Run `cmd` as a fresh process (through LAUNCHER): wall time, peak RSS (ru_maxrss of that process), CPU."""
    proc = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"launcher failed: {proc.stderr.strip()[-500:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "wall_s": res["wall_s"],
        "peak_rss_mb": res["maxrss_kb"] / 1024.0,  # Linux reports kilobytes
        "cpu_s": res["cpu_s"],
        "rc": res["rc"],
        "stderr_tail": proc.stderr.strip().splitlines()[-3:] if res["rc"] else [],
    }


def onnxprune_cmd() -> list[str]:
    script = Path(sys.executable).with_name("onnxprune")
    return [str(script)] if script.exists() else [sys.executable, "-m", "onnxprune.cli"]


def commands(case: str, model: Path, out: Path, ratio: float) -> list[str]:
    if case == "bare":
        return [sys.executable, "-c", ROUND_TRIP, str(model), str(out)]
    cmd = onnxprune_cmd() + ["prune", str(model), "-o", str(out), "--ratio", str(ratio)]
    return cmd + (["--no-check"] if case == "no-check" else [])


def _warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def _clean(folder: Path) -> None:
    for p in folder.iterdir():
        p.unlink() if p.is_file() else shutil.rmtree(p)


def bench_model(name: str, path: Path, repeat: int, ratio: float, scratch: Path) -> dict:
    runs: dict[str, list[dict]] = {c: [] for c in CASES}
    _warm(path)
    for r in range(repeat):
        order = CASES[r % len(CASES):] + CASES[: r % len(CASES)]
        for case in order:
            out = scratch / f"{name}.{case}.onnx"
            res = measure(commands(case, path, out, ratio))
            res["output_bytes"] = out.stat().st_size if out.exists() else None
            runs[case].append(res)
            print(f"  {name:10s} round {r + 1}/{repeat} {case:9s} {res['wall_s']:7.2f} s "
                  f"{res['peak_rss_mb']:8.0f} MB rc={res['rc']}", file=sys.stderr, flush=True)
            _clean(scratch)
    summary = {}
    for case, rs in runs.items():
        ok = [x for x in rs if x["rc"] == 0]
        summary[case] = {
            "ok_runs": len(ok),
            "wall_s": statistics.median(x["wall_s"] for x in ok) if ok else None,
            "wall_s_range": [min(x["wall_s"] for x in ok), max(x["wall_s"] for x in ok)] if ok else None,
            "peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in ok) if ok else None,
            "cpu_s": statistics.median(x["cpu_s"] for x in ok) if ok else None,
            "output_bytes": ok[0]["output_bytes"] if ok else None,
        }
    bare = summary["bare"]
    for case in ("no-check", "check"):
        s = summary[case]
        if s["wall_s"] is None or bare["wall_s"] is None:
            s.update(time_ratio=None, memory_ratio=None, meets_targets=False)
            continue
        s["time_ratio"] = s["wall_s"] / bare["wall_s"]
        s["memory_ratio"] = s["peak_rss_mb"] / bare["peak_rss_mb"]
        s["meets_time_target"] = s["time_ratio"] <= TARGET_TIME
        s["meets_memory_target"] = s["memory_ratio"] <= TARGET_MEMORY
        s["meets_targets"] = s["meets_time_target"] and s["meets_memory_target"]
    return {"file": str(path), "file_bytes": path.stat().st_size, "runs": runs, "summary": summary}


# ------------------------------------------------------------------------------------------ stages
STAGE_CHILD_FLAG = "--_stages-child"
STAGES = {  # module -> names wrapped there (the name a caller looks up at call time); missing names are skipped
    "onnxprune.cli": ["_refuse_overwrite", "api.prune", "save_model", "stage_model", "_write_checked", "_size_on_disk",
                      "check_runnable"],
    "onnxprune.api": ["load_model", "_serializable", "fold_constants", "Graph", "count_cost", "_analyze",
                      "channel_scores", "make_plan", "removed_reads", "rewrite", "drop_unused", "_group_reports"],
    "onnxprune.io": ["stage_model", "model_nbytes", "load_external_data_for_model"],
    "onnxprune.cost": ["infer_shapes", "symbolic_shapes"],
    "onnxprune.graph": ["infer_shapes"],
    "onnxprune.shapes": ["skeleton"],
    "onnxprune.validate": ["_checker_failure", "_run_failure"],
    "onnxprune.inputs": ["make_inputs"],
    "onnxprune.session": ["open_session", "run_session"],
    "onnx.checker": ["check_model"],
    "onnx.shape_inference": ["infer_shapes"],
    "onnx": ["load", "load_model", "save", "save_model"],
}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _stages_child(argv: list[str]) -> int:
    """Run `onnxprune prune` in this process with the pipeline's stages timed; write the records as JSON."""
    t_start = time.perf_counter()
    out_json, prune_args = argv[0], argv[1:]
    import importlib

    records: list[dict] = []
    stack: list[dict] = []
    resettable = _reset_hwm()

    def wrap(label: str, fn):
        def timed(*args, **kwargs):
            hwm = _status_kb("VmHWM")
            for frame in stack:
                frame["peak_kb"] = max(frame["peak_kb"], hwm)
            _reset_hwm()
            rec = {"stage": label, "depth": len(stack), "rss_before_mb": _status_kb("VmRSS") / 1024.0,
                   "peak_kb": _status_kb("VmRSS")}
            records.append(rec)
            stack.append(rec)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                rec["seconds"] = time.perf_counter() - t0
                stack.pop()
                rec["peak_kb"] = max(rec["peak_kb"], _status_kb("VmHWM"))
                if stack:
                    stack[-1]["peak_kb"] = max(stack[-1]["peak_kb"], rec["peak_kb"])
                rec["rss_after_mb"] = _status_kb("VmRSS") / 1024.0
                rec["peak_mb"] = rec.pop("peak_kb") / 1024.0
                _reset_hwm()

        timed.__wrapped__ = fn
        timed._stage_wrapped = True
        return timed

    t0 = time.perf_counter()
    import onnxprune.cli as cli

    imports = {"stage": "import onnxprune.cli", "depth": 0, "seconds": time.perf_counter() - t0,
               "rss_after_mb": _status_kb("VmRSS") / 1024.0, "peak_mb": _status_kb("VmHWM") / 1024.0}
    records.append(imports)
    for module_name, names in STAGES.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        prefix = "" if module_name.startswith("onnxprune") else module_name + "."
        for n in names:
            owner, attr = module, n
            if "." in n:  # e.g. cli's `api.prune`: patch the attribute of the module cli imported
                head, attr = n.rsplit(".", 1)
                owner = getattr(module, head, None)
            fn = getattr(owner, attr, None)
            if callable(fn) and not getattr(fn, "_stage_wrapped", False):
                setattr(owner, attr, wrap(prefix + attr if owner is module else n, fn))  # a class: its construction
    _reset_hwm()
    code = 0
    try:
        cli.main(prune_args)
    except SystemExit as exc:
        code = exc.code or 0
    total = time.perf_counter() - t_start
    top = sum(r["seconds"] for r in records if r["depth"] == 0)
    with open(out_json, "w") as f:
        json.dump({"records": records, "total_s": total, "unattributed_s": total - top,
                   "hwm_resettable": resettable, "rc": code}, f, indent=1)
    return int(code)


def stage_breakdown(name: str, path: Path, ratio: float, scratch: Path, no_check: bool) -> dict:
    out_json = scratch / f"{name}.stages.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), STAGE_CHILD_FLAG, str(out_json),
           "prune", str(path), "-o", str(scratch / f"{name}.stages.onnx"), "--ratio", str(ratio)]
    res = measure(cmd + (["--no-check"] if no_check else []))
    data = json.loads(out_json.read_text()) if out_json.exists() else {"records": []}
    # Resetting the high-water mark also resets what the kernel reports as the process's ru_maxrss: the
    # process peak is the largest stage peak (the import stage's peak counts from the process start).
    peaks = [r["peak_mb"] for r in data["records"]]
    data.update(wall_s=res["wall_s"], process_peak_rss_mb=max(peaks) if peaks else None, no_check=no_check)
    _clean(scratch)
    return data


def _stage_tree(records: list[dict]) -> list[dict]:
    """Nest the flat records (in call order, with depths) and merge consecutive siblings of the same stage."""
    root: dict = {"children": []}
    stack = [root]
    for r in records:
        node = {**r, "calls": 1, "children": []}
        del stack[r["depth"] + 1:]
        stack[-1]["children"].append(node)
        stack.append(node)

    def merge(nodes: list[dict]) -> list[dict]:
        out: list[dict] = []
        for n in nodes:
            n["children"] = merge(n["children"])
            last = out[-1] if out else None
            if last and last["stage"] == n["stage"] and not last["children"] and not n["children"]:
                last["calls"] += 1
                last["seconds"] += n["seconds"]
                last["peak_mb"] = max(last["peak_mb"], n["peak_mb"])
                last["rss_after_mb"] = n["rss_after_mb"]
            else:
                out.append(n)
        return out

    return merge(root["children"])


def format_stages(name: str, data: dict) -> str:
    mode = "--no-check" if data["no_check"] else "with check"
    lines = [f"{name} prune ({mode}), one instrumented run: process {data['wall_s']:.2f} s, "
             f"peak RSS {data['process_peak_rss_mb']:.0f} MB",
             f"  {'stage':46s} {'calls':>5s} {'s':>7s} {'RSS after':>10s} {'own peak':>9s}  (MB)"]

    def emit(nodes: list[dict], depth: int) -> None:
        for n in nodes:
            label = "  " * depth + n["stage"]
            lines.append(f"  {label:46s} {n['calls']:5d} {n['seconds']:7.2f} {n['rss_after_mb']:10.0f} "
                         f"{n['peak_mb']:9.0f}")
            if n["children"]:
                emit(n["children"], depth + 1)
                rest = n["seconds"] - sum(c["seconds"] for c in n["children"])
                if rest >= 0.05:
                    lines.append(f"  {'  ' * (depth + 1) + '(not in a wrapped stage)':46s} {'':5s} {rest:7.2f}")

    emit(_stage_tree(data["records"]), 0)
    rest = data.get("unattributed_s")
    if rest is not None:
        lines.append(f"  {'(click, printing the report, exit)':46s} {'':5s} {rest:7.2f}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ report
def format_table(results: dict) -> str:
    head = (f"{'model':10s} {'command':22s} {'wall s (min-max)':>22s} {'peak RSS MB':>12s} {'CPU s':>7s} "
            f"{'time x':>7s} {'mem x':>6s}  targets (time <= {TARGET_TIME:g}x, mem <= {TARGET_MEMORY:g}x)")
    lines = [head, "-" * len(head)]
    for name, res in results["models"].items():
        s = res["summary"]
        for case in CASES:
            c = s[case]
            label = {"bare": "onnx.load + onnx.save", "no-check": "prune --no-check", "check": "prune (checked)"}[case]
            if c["wall_s"] is None:
                lines.append(f"{name:10s} {label:22s} {'failed':>22s}")
                continue
            rng = f"{c['wall_s']:.2f} ({c['wall_s_range'][0]:.2f}-{c['wall_s_range'][1]:.2f})"
            row = f"{name:10s} {label:22s} {rng:>22s} {c['peak_rss_mb']:12.0f} {c['cpu_s']:7.2f}"
            if case != "bare":
                verdict = []
                if c.get("time_ratio") is not None:
                    verdict.append("time ok" if c["meets_time_target"] else "TIME MISSED")
                    verdict.append("mem ok" if c["meets_memory_target"] else "MEMORY MISSED")
                    row += f" {c['time_ratio']:7.2f} {c['memory_ratio']:6.2f}  " + ", ".join(verdict)
            lines.append(row)
        lines.append(f"{'':10s} file {res['file_bytes'] / 1e6:.0f} MB; pruned output "
                     f"{(s['no-check']['output_bytes'] or 0) / 1e6:.0f} MB")
    st = results.get("startup")
    if st:
        lines.append(f"startup (python -c '{STARTUP}'): {st['wall_s']:.2f} s, {st['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


def _versions() -> dict:
    out = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    for mod in ("onnx", "onnxruntime", "numpy", "onnxprune"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - informative only
            out[mod] = None
    try:
        out["commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "onnxprune"],
                               capture_output=True, text=True).stdout.strip()
        out["onnxprune_dirty"] = bool(dirty)
    except Exception:  # noqa: BLE001
        out["commit"] = None
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == STAGE_CHILD_FLAG:
        return _stages_child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=ROOT / "bench-out" / "models", help="model files (built once)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench-out" / "prune_cost.json", help="results file")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported (default 3)")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--stages", action="store_true", help="also time each stage of the prune pipeline (one extra run)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or args.repeat < 1:
        ap.error(f"unknown model(s) {unknown}" if unknown else "--repeat must be at least 1")

    paths = {n: cached_model(n, args.cache) for n in names}
    results: dict = {"targets": {"time_ratio": TARGET_TIME, "memory_ratio": TARGET_MEMORY}, "ratio": args.ratio,
                     "repeat": args.repeat, "env": _versions(), "models": {}}
    scratch = Path(tempfile.mkdtemp(prefix="prune_cost-", dir=args.cache))
    try:
        results["startup"] = measure([sys.executable, "-c", STARTUP])
        for n in names:
            results["models"][n] = bench_model(n, paths[n], args.repeat, args.ratio, scratch)
        if args.stages:
            results["stages"] = {n: [stage_breakdown(n, paths[n], args.ratio, scratch, nc) for nc in (True, False)]
                                 for n in names}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(format_table(results))
    for n, runs in results.get("stages", {}).items():
        for data in runs:
            print()
            print(format_stages(n, data))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.json}")
    failed = [n for n, r in results["models"].items() for c in CASES if r["summary"][c]["ok_runs"] == 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
