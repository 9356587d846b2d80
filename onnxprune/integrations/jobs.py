"""Many registry jobs: one per model version, run in this process (default) or as Ray tasks (`onnxprune[ray]`).

A job that fails is reported as a failed JobResult and leaves the others alone: a user error (OnnxPruneError)
with its one-line message, anything else (a bug, a worker that died) as an internal error naming its type.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..errors import OnnxPruneError
from ..executors import make_executor
from .mlflow_registry import JobResult, VersionRef, prune_version
from .recipe import Recipe

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
    """Run `jobs`, one at a time in this process or as Ray tasks (executors.py); results in the order of `jobs`.
    In this process `progress` also follows each job's steps; from Ray it gets each job's result line."""
    runner = make_executor(executor, ray_address)
    results: list[Optional[JobResult]] = [None] * len(jobs)
    try:
        for (i, _), result in runner.map(_run_indexed, list(enumerate(jobs)),
                                         progress if executor == "inprocess" else None,
                                         on_failure=lambda ij, message: JobResult(ij[1].ref.uri, "failed",
                                                                                  message=message)):
            results[i] = result
            if progress is not None:
                progress(result.line())
    finally:
        runner.close()
    return results


def _run_indexed(progress, indexed: tuple[int, Job]) -> JobResult:
    return run_job(indexed[1], progress)
