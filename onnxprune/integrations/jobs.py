"""Many registry jobs: one per model version, run in this process (default) or as Ray tasks (`onnxprune[ray]`).

A job that fails is reported as a failed JobResult and leaves the others alone: a user error (OnnxPruneError)
with its one-line message, anything else (a bug, a worker that died) as an internal error naming its type.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..errors import OnnxPruneError, OptionError
from . import require
from .mlflow_registry import JobResult, VersionRef, prune_version
from .recipe import Recipe

EXECUTORS = ("inprocess", "ray")


@dataclass(frozen=True)
class Job:
    ref: VersionRef
    recipe: Recipe
    register_as: Optional[str] = None
    alias: Optional[str] = None
    tracking_uri: Optional[str] = None
    registry_uri: Optional[str] = None
    experiment: Optional[str] = None


def run_job(job: Job, progress: Optional[Callable[[str], None]] = None) -> JobResult:
    """Run one job; never raises for the job's own failure."""
    try:
        return prune_version(job.ref, job.recipe, register_as=job.register_as, alias=job.alias,
                             tracking_uri=job.tracking_uri, registry_uri=job.registry_uri,
                             experiment=job.experiment, progress=progress)
    except OnnxPruneError as exc:
        return JobResult(job.ref.uri, "failed", message=str(exc))
    except Exception as exc:  # a bug: reported with its type, the traceback kept for --debug readers
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return JobResult(job.ref.uri, "failed", message=f"internal error: {last}")


def run_jobs(jobs: Sequence[Job], executor: str = "inprocess", *, ray_address: Optional[str] = None,
             progress: Optional[Callable[[str], None]] = None) -> list[JobResult]:
    """Run `jobs`, one at a time in this process or as Ray tasks; results in the order of `jobs`."""
    if executor not in EXECUTORS:
        raise OptionError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "inprocess":
        if ray_address is not None:
            raise OptionError("--ray-address is for --executor ray")
        results = []
        for job in jobs:
            results.append(run_job(job, progress))
            if progress is not None:
                progress(results[-1].line())
        return results
    return _run_ray(list(jobs), ray_address, progress)


def _run_ray(jobs: list[Job], address: Optional[str], progress) -> list[JobResult]:
    ray = require("ray", "ray")
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f"--ray-address {address}: cannot connect" if address else "cannot start a local Ray"
            raise OptionError(f"{where}: {' '.join(str(exc).split())[:200]}") from None
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_job)
        refs = {task.remote(job): i for i, job in enumerate(jobs)}
        results: list[Optional[JobResult]] = [None] * len(jobs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = refs[done[0]]
            try:
                results[i] = ray.get(done[0])
            except ray.exceptions.RayError as exc:  # the worker died, or the task could not be run
                text = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                results[i] = JobResult(jobs[i].ref.uri, "failed", message=f"ray task failed: {text[:300]}")
            if progress is not None:
                progress(results[i].line())
        return results
    finally:
        if started:
            ray.shutdown()
