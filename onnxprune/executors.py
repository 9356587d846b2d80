"""Where independent tasks run: in this process (the default) or as Ray tasks (onnxprune[ray]).

The interface is one method:

    executor.map(fn, jobs, context=None) -> iterator of (job, result), in the order the tasks finish

`fn(context, job)` must be a module-level function (Ray pickles it by reference); `context` is what every task
reads (a model's bytes, calibration arrays): the Ray executor puts it in the object store once instead of
shipping it with every task. Results arrive as tasks finish, so a caller that records each one as it comes keeps
the finished tasks when the run is interrupted. An exception in a task is raised by the iterator, unless the
caller gives `on_failure(job, message)`: then a Ray task that could not run or whose worker died yields
`(job, on_failure(job, message))` and the other tasks go on (one registry job per model version: a failed one
must leave the others alone).

The core package never imports ray: `RayExecutor` imports it when it is created.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional, Protocol

from .errors import OptionError

EXECUTORS = ("inprocess", "ray")  # the names `--executor` takes, as in `mlflow prune`


class Executor(Protocol):
    def map(self, fn: Callable[[Any, Any], Any], jobs: Iterable[Any], context: Any = None,
            on_failure: Optional[Callable[[Any, str], Any]] = None) -> Iterator[tuple[Any, Any]]:
        ...


class InProcessExecutor:
    """Runs the tasks one after another in this process."""

    def map(self, fn, jobs, context=None, on_failure=None):
        for job in jobs:
            yield job, fn(context, job)

    def close(self) -> None:
        pass


class RayExecutor:
    """Runs every task as a Ray task: on a local Ray started here (`address` None, `num_cpus` CPUs), or on the
    cluster at `address` ("auto" or "ray://host:10001"). `close()` shuts down a Ray this executor started."""

    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None):
        try:
            import ray
        except ImportError:
            raise OptionError("--executor ray needs Ray: pip install 'onnxprune[ray]'") from None
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            kwargs = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
            if address is None:
                kwargs["num_cpus"] = num_cpus
            else:
                kwargs["address"] = address
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise OptionError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {first}") from None

    def map(self, fn, jobs, context=None, on_failure=None):
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        shared = ray.put(context)
        pending = {remote.remote(shared, job): job for job in jobs}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    job = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the task could not run, or its worker died
                        if on_failure is None:
                            raise
                        text = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                        result = on_failure(job, f"ray task failed: {text[:300]}")
                    yield job, result
        finally:
            for ref in pending:  # interrupted or failed: stop what has not finished
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(name: str, address: Optional[str] = None, num_cpus: Optional[int] = None):
    """The executor called `name` ("inprocess" or "ray")."""
    if name == "inprocess":
        if address is not None:
            raise OptionError("--ray-address is for --executor ray")
        return InProcessExecutor()
    if name == "ray":
        return RayExecutor(address, num_cpus)
    raise OptionError(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
