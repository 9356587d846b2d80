"""Progress of long work on stderr, one mechanism for every command (prune's calibration loading, scores and
recovery; bench; sweep; verify's images and batches).

On a terminal: a bar. Anywhere else (a CI log, a pipe), where a bar shows only its label until it ends: one line
per step, "label: 3/12 text". Steps that only count (samples, batches) print at most LINES lines per stage, so
a long pass shows steady progress without flooding the log. Work whose length is unknown prints one line per step
on a terminal too.
"""

from __future__ import annotations

import sys
from typing import Optional, TextIO

import click

LINES = 20  # most lines a counted stage prints where stderr is not a terminal


class Progress:
    """`update(done, text)` or `step(text)` as the work goes; `close()` (or a `with` block) at the end."""

    def __init__(self, label: str, total: Optional[int] = None, *, unit: str = "", stream: Optional[TextIO] = None,
                 tty: Optional[bool] = None):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.done, self.printed = 0, -1
        self.bar = None
        if self.tty and total:
            self.bar = click.progressbar(length=total, label=label, file=self.stream)
            self.bar.__enter__()

    def step(self, text: str = "") -> None:
        """One more step done; `text` says which."""
        self.update(self.done + 1, text)

    def update(self, done: int, text: str = "") -> None:
        """`done` steps of `total` are done (a step may be a sample: see LINES)."""
        advanced, self.done = done - self.done, done
        if self.bar is not None:
            self.bar.update(advanced)
            return
        if not text and self.total and done < self.total and self.printed >= 0 \
                and (done - self.printed) * LINES < self.total:
            return  # a counted stage: wait for the next 1/LINES of it
        self.printed = done
        count = f"{done}/{self.total}{' ' + self.unit if self.unit else ''}" if self.total else ""
        click.echo(f"{self.label}: " + " ".join(x for x in (count, text) if x), file=self.stream)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Stages:
    """A Progress per stage of a `(stage, done, total)` callback (api.prune's `progress`)."""

    def __init__(self, labels: dict[str, tuple[str, str]], stream: Optional[TextIO] = None):
        self.labels = labels  # stage -> (label, unit)
        self.stream = stream
        self.stage: Optional[str] = None
        self.current: Optional[Progress] = None

    def update(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            label, unit = self.labels.get(stage, (stage, ""))
            self.stage, self.current = stage, Progress(label, total, unit=unit, stream=self.stream)
        self.current.update(done)

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def __enter__(self) -> "Stages":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
