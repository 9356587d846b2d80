"""MLflow's webhook deliveries: the signature check and the "model version created" event (no MLflow import).

MLflow's server (mlflow/webhooks/delivery.py) POSTs a JSON body
    {"entity": "model_version", "action": "created", "timestamp": ISO-8601, "data": {"name", "version", ...}}
with the headers X-MLflow-Delivery-Id (a UUID), X-MLflow-Timestamp (Unix seconds) and, when the webhook has a
secret, X-MLflow-Signature: "v1," + base64(HMAC-SHA256(secret, f"{delivery_id}.{timestamp}.{body}")).
`verify` accepts a request only when all three headers are there, the timestamp lies within `max_age` seconds of
now, and the signature matches (compared in constant time); anything else is `Rejected` with an HTTP status.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from typing import Mapping, Optional

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
EVENT = ("model_version", "created")
MAX_BODY = 64 * 1024  # MLflow's model-version payloads are a few hundred bytes
DEFAULT_MAX_AGE = 300  # seconds a delivery's timestamp may lie from now (either way)
DELIVERY_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
VERSION = re.compile(r"[0-9]{1,18}")
MAX_NAME = 256


class Rejected(Exception):
    """A request the receiver refuses: `status` is its HTTP status, the message says why (one line)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The X-MLflow-Signature value MLflow sends for `body`."""
    message = f"{delivery_id}.{timestamp}.".encode("utf-8") + body
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify(headers: Mapping[str, str], body: bytes, secret: str, *, max_age: float = DEFAULT_MAX_AGE,
           now: Optional[float] = None) -> str:
    """Check a delivery's signature and timestamp; returns its delivery id, or raises Rejected."""
    if not secret:
        raise ValueError("a webhook secret is required")
    signature, timestamp, delivery_id = (headers.get(h) for h in (SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_HEADER))
    if not signature:
        raise Rejected(401, f"unsigned: no {SIGNATURE_HEADER} header")
    if not timestamp or not delivery_id:
        raise Rejected(401, f"no {TIMESTAMP_HEADER} or {DELIVERY_HEADER} header")
    if not DELIVERY_ID.fullmatch(delivery_id):
        raise Rejected(400, f"malformed {DELIVERY_HEADER}")
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise Rejected(400, f"malformed {TIMESTAMP_HEADER}: expected Unix seconds")
    skew = (time.time() if now is None else now) - int(timestamp)
    if abs(skew) > max_age:
        raise Rejected(401, f"stale: the timestamp is {abs(skew):.0f} s {'old' if skew > 0 else 'ahead'} "
                            f"(at most {max_age:.0f} s)")
    expected = sign(secret, delivery_id, timestamp, body)
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace")):
        raise Rejected(401, "bad signature")
    return delivery_id


@dataclass(frozen=True)
class VersionCreated:
    """A "model version created" event: the registered model's name and the new version (a number)."""

    name: str
    version: str
    tags: tuple  # (key, value) pairs the version was created with


def parse_event(body: bytes) -> Optional[VersionCreated]:
    """The event in a verified body: a VersionCreated, None for another event, Rejected(400) when malformed."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Rejected(400, "malformed: the body is not UTF-8 JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("entity"), str) or not isinstance(doc.get("action"), str):
        raise Rejected(400, "malformed: no 'entity' and 'action'")
    if (doc["entity"], doc["action"]) != EVENT:
        return None
    data = doc.get("data")
    if not isinstance(data, dict):
        raise Rejected(400, "malformed: no 'data' object")
    name, version, tags = data.get("name"), data.get("version"), data.get("tags") or {}
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or not name.isprintable():
        raise Rejected(400, "malformed: 'data.name' is not a registered model name")
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise Rejected(400, "malformed: 'data.version' is not a version number")
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise Rejected(400, "malformed: 'data.tags' is not a string map")
    return VersionCreated(name, version, tuple(sorted(tags.items())))
