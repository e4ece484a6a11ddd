"""The sweep's folders: the storage root, the sweep's name in it, and its identity file
(the MLflow sweep id and store, held to at ``--resume``)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from ray_jobs.sweep._errors import LaunchError
from ray_jobs.tracking.store import resolve_tracking_uri


def storage_root(storage: str | None) -> str:
    if storage is not None and "://" in storage:
        return storage
    path = Path(storage or "runs").expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LaunchError(f"--storage {path}: cannot create ({err.strerror})") from None
    if not os.access(path, os.W_OK):
        raise LaunchError(f"--storage {path}: not writable")
    return str(path)


SWEEP_FILE = "adprune-sweep.json"


def sweep_home(storage: str, name: str) -> Path:
    """A local folder for the sweep's own files (its MLflow identity and write queue)."""
    if "://" in storage:
        return Path.cwd() / ".adprune-sweep" / name
    return Path(storage) / name


def sweep_identity(home: Path, resume: bool, tracking_option: str | None) -> dict[str, Any]:
    """The sweep id and store: new at launch, read back (and held to) at ``--resume``."""
    path = home / SWEEP_FILE
    if resume and path.exists():
        identity = json.loads(path.read_text())
        if tracking_option and resolve_tracking_uri(tracking_option) != identity["tracking_uri"]:
            raise LaunchError(
                f"--tracking-uri {tracking_option}: this sweep records to "
                f"{identity['tracking_uri']}; resume it with that store"
            )
        return identity
    return {"sweep_id": uuid.uuid4().hex, "tracking_uri": resolve_tracking_uri(tracking_option)}


def save_identity(home: Path, identity: dict[str, Any]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / SWEEP_FILE).write_text(json.dumps(identity, indent=2) + "\n")


def check_name(storage: str, name: str, resume: bool) -> None:
    if "://" in storage:
        return
    exists = (Path(storage) / name).exists()
    if resume and not exists:
        raise LaunchError(f"--resume: no sweep named {name!r} under {storage}")
    if not resume and exists:
        raise LaunchError(
            f"--name {name}: a sweep of that name exists under {storage}; "
            "use --resume to continue it or --name to start another"
        )
