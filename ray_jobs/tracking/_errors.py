"""Sorting the writer's errors by what retrying can fix.

A *transient* error says the store could not be reached or could not take the request now: a
refused or reset connection, a timeout, HTTP 429 or 5xx, sqlite's "database is locked". The
record waits and is retried; the rest of the sweep's records wait behind it, because the store
would refuse them too. Every other error is *permanent* for that record: a bug in one
operation (``TypeError``), a full disk under the artifact root (``OSError`` ENOSPC), a plugin
that cannot be imported. Retrying would fail the same way, so the record is set aside (a dead
letter) and the records behind it flow on.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

from ray_jobs.tracking.keys import net_key, trial_key

# MLflow's codes for "try again later". The sqlalchemy store wraps every OperationalError
# (locked database, lost or refused connection) in TEMPORARILY_UNAVAILABLE.
TRANSIENT_ERROR_CODES = frozenset(
    {
        "TEMPORARILY_UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "REQUEST_LIMIT_EXCEEDED",
        "RESOURCE_EXHAUSTED",
    }
)
# The REST client reports a non-JSON error body with this prefix and the HTTP status.
_HTTP_FAILURE = "API request to "

# Transport failures below the REST client (requests, urllib3) and the database drivers.
_TRANSIENT_NAMES = frozenset(
    {
        "ConnectionError",  # requests and builtins
        "ConnectTimeout",
        "ReadTimeout",
        "Timeout",
        "NewConnectionError",
        "MaxRetryError",
        "ProtocolError",
        "ReadTimeoutError",
        "RemoteDisconnected",
        "ChunkedEncodingError",
        "InterfaceError",  # psycopg2: the connection is closed
    }
)
_TRANSIENT_DB_WORDS = (
    "database is locked",
    "could not connect",
    "connection refused",
    "server closed the connection",
    "terminating connection",
    "connection reset",
    "timeout expired",
    "the database system is",  # ... starting up / shutting down
)


def causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and what it wraps; MLflow's REST client raises without ``from``, so the
    transport error is often only the implicit ``__context__``."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def http_status(err: BaseException) -> int | None:
    """The HTTP status of an MLflow REST failure, None for anything else."""
    if getattr(err, "json", None) is not None or _HTTP_FAILURE in str(err):
        getter = getattr(err, "get_http_status_code", None)
        return int(getter()) if getter else None
    return None


def _transient_one(err: BaseException) -> bool:
    if isinstance(err, ConnectionError | TimeoutError | socket.timeout):
        return True
    if type(err).__name__ in _TRANSIENT_NAMES:
        return True
    if type(err).__name__ == "OperationalError":  # sqlite3, sqlalchemy, psycopg2
        text = str(err).lower()
        return any(word in text for word in _TRANSIENT_DB_WORDS)
    code = getattr(err, "error_code", None)
    if code in TRANSIENT_ERROR_CODES:
        return True
    status = http_status(err)
    if status is not None and (status == 429 or status >= 500):
        return True
    # The REST client turns a refused connection into a bare "failed with exception" line.
    return "failed with exception" in str(err) and _HTTP_FAILURE in str(err)


def is_transient(err: BaseException) -> bool:
    """True when the store did not take the request now and a retry may succeed."""
    return any(_transient_one(e) for e in causes(err))


def error_line(err: BaseException) -> str:
    """``TypeError: message`` on one line, at most 300 characters."""
    text = str(err).strip()
    line = text.splitlines()[0][:300] if text else ""
    return f"{type(err).__name__}: {line}" if line else type(err).__name__


def record_run(op: dict[str, Any], sweep_id: str) -> str:
    """The logical key of the run a record writes to (``sweep/trial/net``)."""
    if "net" in op and "trial" in op:
        return net_key(sweep_id, op["trial"], op["net"])
    if "trial" in op:
        return trial_key(sweep_id, op["trial"])
    return sweep_id


def describe(op: dict[str, Any], sweep_id: str) -> str:
    """``the epoch record of s1/t0/net1 (epoch 3)``: what a one-line message names."""
    text = f"the {op.get('op', '?')} record of {record_run(op, sweep_id)}"
    if "epoch" in op and op.get("op") == "epoch":
        text += f" (epoch {op['epoch']})"
    return text
