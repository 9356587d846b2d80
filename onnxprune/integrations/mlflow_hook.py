"""The webhook receiver: prunes each new version of the watched registered models (`onnxprune mlflow serve-hook`).

- Requests: only POSTs to the configured path, with a body of at most webhook.MAX_BODY bytes, signed with the
  webhook's secret and timestamped within `max-age` seconds (webhook.verify). Anything else gets a 4xx and one
  log line. Events other than "model version created", models not watched, and versions onnxprune produced
  (their creation tags name a parent) are answered 200 and ignored.
- Jobs: an accepted event becomes a job in a SQLite file (the state file); a worker thread runs the jobs one at a
  time, in order. The state file keeps every delivery id (a redelivery is answered 200 and ignored) and one job
  per (model, version, recipe) (the same event delivered twice queues one job).
- Crashes: a job is marked running before it starts and done or failed after. A receiver that restarts runs the
  jobs left queued or running again; a job that had registered its version before the crash finds it in the
  registry by its lineage tags (mlflow_registry.prune_version) and registers nothing twice.
- Paths: the payload gives a model name and a version number, used only as registry identifiers; the model is
  downloaded through the registry client into a temporary folder the job makes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

from ..errors import OnnxPruneError, OptionError
from .mlflow_registry import PARENT_NAME, Registry, VersionRef, is_produced, prune_version
from .recipe import Recipe
from .webhook import DEFAULT_MAX_AGE, MAX_BODY, Rejected, parse_event, verify

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

log = logging.getLogger("onnxprune.hook")

DEFAULT_SECRET_ENV = "ONNXPRUNE_HOOK_SECRET"
TOP_KEYS = ("tracking-uri", "registry-uri", "secret-env", "host", "port", "path", "state", "max-age", "experiment",
            "watch")
WATCH_KEYS = ("model", "register-as", "alias")


# ---------------------------------------------------------------------------------------------------------------
# The config


@dataclass(frozen=True)
class Watch:
    model: str  # a registered model name
    recipe: Recipe
    recipe_sha256: str
    register_as: Optional[str] = None
    alias: Optional[str] = None


@dataclass
class HookConfig:
    path: Path  # the config file
    secret: str
    watches: dict = field(default_factory=dict)  # model name -> Watch
    tracking_uri: Optional[str] = None
    registry_uri: Optional[str] = None
    host: str = "127.0.0.1"
    port: int = 8900
    url_path: str = "/"
    state: Optional[Path] = None
    max_age: float = DEFAULT_MAX_AGE
    experiment: Optional[str] = None

    @property
    def state_file(self) -> Path:
        return self.state or self.path.with_name(self.path.stem + ".state.sqlite")


def load_config(path, environ=None) -> HookConfig:
    """A HookConfig from a TOML file (see docs/registry.md); one-line OptionError for anything wrong with it."""
    from ..io import read_document

    environ = os.environ if environ is None else environ
    p = Path(path)
    label = f"--config {p}"
    doc = read_document(p, tomllib.loads, (tomllib.TOMLDecodeError,), label)
    unknown = sorted(set(doc) - set(TOP_KEYS))
    if unknown:
        raise OptionError(f"{label}: unknown key {unknown[0]!r}; known: {', '.join(TOP_KEYS)}")

    def text(key, default=None):
        value = doc.get(key, default)
        if value is not None and (not isinstance(value, str) or not value):
            raise OptionError(f"{label}: {key!r} must be a non-empty string, got {value!r}")
        return value

    def number(key, default, kind):
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, kind) or value < 0:
            raise OptionError(f"{label}: {key!r} must be a non-negative number, got {value!r}")
        return value

    secret_env = text("secret-env", DEFAULT_SECRET_ENV)
    secret = environ.get(secret_env, "")
    if not secret:
        raise OptionError(f"{label}: the webhook's secret is read from ${secret_env}, which is not set: set it to "
                          "the secret the MLflow webhook was created with (unsigned deliveries are refused)")
    port = number("port", 8900, int)
    if port > 65535:
        raise OptionError(f"{label}: 'port' must be at most 65535, got {port}")
    url_path = text("path", "/")
    if not url_path.startswith("/"):
        raise OptionError(f"{label}: 'path' must start with '/', got {url_path!r}")
    state = text("state")
    watches = doc.get("watch")
    if not isinstance(watches, list) or not watches or not all(isinstance(w, dict) for w in watches):
        raise OptionError(f"{label}: no [[watch]] table: name the models to prune, e.g. [[watch]] model = \"NAME\"")
    config = HookConfig(
        path=p, secret=secret, tracking_uri=text("tracking-uri"), registry_uri=text("registry-uri"),
        host=text("host", "127.0.0.1"), port=port, url_path=url_path,
        state=None if state is None else (p.parent / state), max_age=number("max-age", DEFAULT_MAX_AGE, (int, float)),
        experiment=text("experiment"),
    )
    for i, entry in enumerate(watches, 1):
        where = f"{label}: [[watch]] #{i}"
        model = entry.get("model")
        if not isinstance(model, str) or not model:
            raise OptionError(f"{where}: 'model' must name a registered model")
        if model in config.watches:
            raise OptionError(f"{where}: model {model!r} is watched twice")
        for key in ("register-as", "alias"):
            if entry.get(key) is not None and (not isinstance(entry[key], str) or not entry[key]):
                raise OptionError(f"{where}: {key!r} must be a non-empty string")
        recipe = Recipe.from_options({k: v for k, v in entry.items() if k not in WATCH_KEYS}, where, base=p.parent)
        if entry.get("alias") and recipe.policy is None:
            raise OptionError(f"{where}: 'alias' is set only when the gate passes: give the gate with 'policy'")
        config.watches[model] = Watch(model, recipe, recipe.sha256(), entry.get("register-as"), entry.get("alias"))
    return config


# ---------------------------------------------------------------------------------------------------------------
# The state file


class JobStore:
    """Deliveries and jobs in a SQLite file; every method is one transaction on its own connection."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS deliveries (id TEXT PRIMARY KEY, received REAL, job INTEGER)")
            db.execute("CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, "
                       "version TEXT NOT NULL, recipe TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL "
                       "DEFAULT 0, result TEXT, updated REAL, UNIQUE (name, version, recipe))")

    @contextlib.contextmanager
    def _db(self):
        """One transaction (BEGIN IMMEDIATE: one writer at a time) on a connection of its own."""
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise OptionError(f"state file {self.path}: {exc}") from None
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def accept(self, delivery_id: str, name: str, version: str, recipe: str) -> tuple[str, int]:
        """Record a delivery and its job: ("duplicate", job) for a delivery id seen before, ("exists", job) for a
        job queued before, ("queued", job) for a new job."""
        with self._db() as db:
            row = db.execute("SELECT job FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is not None:
                return "duplicate", row[0]
            row = db.execute("SELECT id FROM jobs WHERE name = ? AND version = ? AND recipe = ?",
                             (name, version, recipe)).fetchone()
            status = "exists" if row is not None else "queued"
            job = row[0] if row is not None else db.execute(
                "INSERT INTO jobs (name, version, recipe, state, updated) VALUES (?, ?, ?, 'queued', ?)",
                (name, version, recipe, time.time())).lastrowid
            db.execute("INSERT INTO deliveries (id, received, job) VALUES (?, ?, ?)", (delivery_id, time.time(), job))
            return status, job

    def seen(self, delivery_id: str) -> None:
        """Record a delivery that queued nothing (another event, a model not watched)."""
        with self._db() as db:
            db.execute("INSERT OR IGNORE INTO deliveries (id, received, job) VALUES (?, ?, NULL)",
                       (delivery_id, time.time()))

    def is_seen(self, delivery_id: str) -> bool:
        with self._db() as db:
            return db.execute("SELECT 1 FROM deliveries WHERE id = ?", (delivery_id,)).fetchone() is not None

    def next_job(self) -> Optional[tuple]:
        """The oldest job left queued, or running when a receiver stopped in the middle of it: marked running.
        Returns (id, name, version, recipe, attempts) or None."""
        with self._db() as db:
            row = db.execute("SELECT id, name, version, recipe, attempts FROM jobs WHERE state IN ('queued', 'running') "
                             "ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = 'running', attempts = attempts + 1, updated = ? WHERE id = ?",
                       (time.time(), row[0]))
            return row[0], row[1], row[2], row[3], row[4] + 1

    def finish(self, job: int, state: str, result: dict) -> None:
        with self._db() as db:
            db.execute("UPDATE jobs SET state = ?, result = ?, updated = ? WHERE id = ?",
                       (state, json.dumps(result), time.time(), job))

    def jobs(self) -> list[dict]:
        with self._db() as db:
            rows = db.execute("SELECT id, name, version, recipe, state, attempts, result FROM jobs ORDER BY id").fetchall()
        return [{"id": r[0], "name": r[1], "version": r[2], "recipe": r[3], "state": r[4], "attempts": r[5],
                 "result": json.loads(r[6]) if r[6] else None} for r in rows]


# ---------------------------------------------------------------------------------------------------------------
# The receiver


class HookServer:
    """The HTTP receiver and its worker thread. `start()` returns once it listens; `stop()` ends both (a job in
    progress is left running in the state file and redone by the next receiver)."""

    def __init__(self, config: HookConfig):
        self.config = config
        self.store = JobStore(config.state_file)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.idle = threading.Event()
        self.httpd = ThreadingHTTPServer((config.host, config.port), _handler(self))
        self.httpd.daemon_threads = True
        self.threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{self.config.url_path}"

    def start(self) -> "HookServer":
        self.threads = [threading.Thread(target=self.httpd.serve_forever, name="hook-http", daemon=True),
                        threading.Thread(target=self._work, name="hook-worker", daemon=True)]
        for t in self.threads:
            t.start()
        return self

    def stop(self, wait: float = 600) -> None:
        """Stop listening, and wait up to `wait` seconds for a job in progress (one cut short is redone by the
        next receiver)."""
        self.stopping.set()
        self.wake.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in self.threads:
            t.join(timeout=wait)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is queued or running (for tests and scripted use)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle.is_set() and not any(j["state"] in ("queued", "running") for j in self.store.jobs()):
                return True
            time.sleep(0.1)
        return False

    # -- requests

    def receive(self, path: str, headers, body: Optional[bytes]) -> tuple[int, dict]:
        """(status, answer) for one POST; `body` None when it was not read (no or too large Content-Length)."""
        if path != self.config.url_path:
            raise Rejected(404, f"no receiver at {path[:100]!r}")
        if body is None:
            raise Rejected(413, f"a body of at most {MAX_BODY} bytes, with a Content-Length, is expected")
        delivery = verify(headers, body, self.config.secret, max_age=self.config.max_age)
        event = parse_event(body)
        if self.store.is_seen(delivery):
            return 200, {"ignored": "delivery already received", "delivery": delivery}
        if event is None:
            self.store.seen(delivery)
            return 200, {"ignored": "not a model_version.created event"}
        watch = self.config.watches.get(event.name)
        if watch is None:
            self.store.seen(delivery)
            return 200, {"ignored": f"model {event.name!r} is not watched"}
        if PARENT_NAME in dict(event.tags):
            self.store.seen(delivery)
            return 200, {"ignored": "a version onnxprune produced"}
        status, job = self.store.accept(delivery, event.name, event.version, watch.recipe_sha256)
        if status == "queued":
            log.info("queued job %d: %s version %s", job, event.name, event.version)
            self.wake.set()
            return 202, {"queued": job}
        return 200, {"ignored": "delivery already received" if status == "duplicate" else "job already queued",
                     "job": job}

    # -- jobs

    def _work(self) -> None:
        while not self.stopping.is_set():
            self.idle.clear()
            job = self.store.next_job()
            if job is None:
                self.idle.set()
                self.wake.wait(timeout=1.0)
                self.wake.clear()
                continue
            self._run(*job)
        self.idle.set()

    def _run(self, job: int, name: str, version: str, recipe_sha: str, attempts: int) -> None:
        watch = self.config.watches.get(name)
        ref = VersionRef(name, version)
        if watch is None or watch.recipe_sha256 != recipe_sha:
            self.store.finish(job, "failed", {"message": "the config no longer has this recipe for the model"})
            log.warning("job %d: %s: the config no longer has its recipe: not run", job, ref.uri)
            return
        log.info("job %d: %s%s", job, ref.uri, f" (attempt {attempts}: the last one was interrupted)"
                 if attempts > 1 else "")
        try:
            registry = Registry(self.config.tracking_uri, self.config.registry_uri)
            if is_produced(registry.tags(ref)):
                self.store.finish(job, "skipped", {"message": "a version onnxprune produced"})
                log.info("job %d: %s is a version onnxprune produced: skipped", job, ref.uri)
                return
            result = prune_version(ref, watch.recipe, register_as=watch.register_as, alias=watch.alias,
                                   tracking_uri=self.config.tracking_uri, registry_uri=self.config.registry_uri,
                                   experiment=self.config.experiment,
                                   progress=lambda message: log.info("job %d: %s", job, message))
        except OnnxPruneError as exc:
            self.store.finish(job, "failed", {"message": str(exc)})
            log.error("job %d: %s: failed: %s", job, ref.uri, exc)
            return
        except Exception as exc:  # a bug: the job fails, the receiver goes on
            self.store.finish(job, "failed", {"message": f"internal error: {type(exc).__name__}: {exc}"})
            log.exception("job %d: %s: internal error", job, ref.uri)
            return
        self.store.finish(job, "done", result.to_dict())
        log.info("job %d: %s", job, result.line())


def _handler(server: HookServer):
    class Handler(BaseHTTPRequestHandler):
        server_version = "onnxprune-hook"
        sys_version = ""
        timeout = 10  # seconds a client may take to send its request (a stalled one is dropped)

        def do_POST(self):  # noqa: N802 - http.server's name
            body = None
            length = self.headers.get("Content-Length", "")
            if length.isdigit() and int(length) <= MAX_BODY:
                body = self.rfile.read(int(length))
            try:
                status, answer = server.receive(self.path, self.headers, body)
            except Rejected as exc:
                log.warning("rejected %d from %s: %s", exc.status, self.client_address[0], exc)
                status, answer = exc.status, {"error": str(exc)}
            else:
                if "ignored" in answer:
                    log.info("ignored a delivery from %s: %s", self.client_address[0], answer["ignored"])
            self._answer(status, answer)

        def do_GET(self):  # noqa: N802
            log.warning("rejected 405 from %s: GET %s", self.client_address[0], self.path[:100])
            self._answer(405, {"error": "POST webhook deliveries here"})

        def _answer(self, status: int, answer: dict) -> None:
            data = (json.dumps(answer) + "\n").encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status >= 400:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):  # requests are logged by the receiver, once each
            pass

    return Handler


def serve(config: HookConfig) -> None:
    """Run the receiver until interrupted."""
    hook = HookServer(config).start()
    log.info("listening on %s; watching %s; state in %s", hook.url, ", ".join(config.watches), config.state_file)
    if threading.current_thread() is threading.main_thread():  # SIGTERM (systemd, docker stop) ends it as Ctrl-C does
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    finally:  # Ctrl-C: a job in progress stays marked running in the state file and is redone on restart
        hook.stop(wait=1)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
