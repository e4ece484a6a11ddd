"""A sweep's identity file: its MLflow sweep id and store, and the spec it was launched with.

``--resume`` reads it back and holds the sweep to it: the same store, and the same spec in
everything that changes what a trial computes. Resources and concurrency may change (a user
resuming on a bigger cluster wants that); so may the sweep's name, which is the folder's.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from adprune_core.config import flatten, spec_to_dict
from ray_jobs.sweep._errors import LaunchError
from ray_jobs.sweep._spec import SweepSpec
from ray_jobs.sweep._spec_checks import sweep_spec_from_dict
from ray_jobs.tracking.store import resolve_tracking_uri

SWEEP_FILE = "adprune-sweep.json"
# Spec keys a resume may change: they decide where and how many trials run, not what any
# trial computes.
RESUMABLE_CHANGES = ("name", "resources", "max_concurrent")
_ABSENT = "(absent)"


def canonical_spec(spec: SweepSpec) -> dict[str, Any]:
    """The spec as JSON would give it back: comparable with a stored copy."""
    return json.loads(json.dumps(spec_to_dict(spec)))


def read_identity(home: Path) -> dict[str, Any] | None:
    path = home / SWEEP_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise LaunchError(f"--resume: cannot read {path} ({err})") from None


def sweep_identity(
    home: Path, resume: bool, tracking_option: str | None, spec: SweepSpec
) -> dict[str, Any]:
    """The sweep id, store and spec: new at launch, read back (and held to) at ``--resume``."""
    identity = read_identity(home) if resume else None
    if identity is None:
        return {
            "sweep_id": uuid.uuid4().hex,
            "tracking_uri": resolve_tracking_uri(tracking_option),
            "spec": canonical_spec(spec),
        }
    if tracking_option and resolve_tracking_uri(tracking_option) != identity["tracking_uri"]:
        raise LaunchError(
            f"--tracking-uri {tracking_option}: this sweep records to "
            f"{identity['tracking_uri']}; resume it with that store"
        )
    if "spec" in identity:  # sweeps launched before the spec was kept have no copy
        check_same_spec(identity["spec"], canonical_spec(spec), home.name)
    return identity


def save_identity(home: Path, identity: dict[str, Any]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / (SWEEP_FILE + ".tmp")
    tmp.write_text(json.dumps(identity, indent=2) + "\n")
    tmp.replace(home / SWEEP_FILE)  # atomic: a killed launch leaves the old file or the new


def first_difference(launched: dict[str, Any], now: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first key, in spec order, whose value differs (ignoring :data:`RESUMABLE_CHANGES`)."""
    before, after = flatten(launched), flatten(now)
    for key in [*before, *(k for k in after if k not in before)]:
        if key.split(".")[0] in RESUMABLE_CHANGES:
            continue
        old, new = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if old != new:
            return key, old, new
    return None


def check_same_spec(launched: dict[str, Any], now: dict[str, Any], name: str) -> None:
    difference = first_difference(launched, now)
    if difference is None:
        return
    key, old, new = difference
    raise LaunchError(
        f"--resume: {key} is {json.dumps(new)} in this spec but sweep {name!r} was launched "
        f"with {json.dumps(old)}; resume with the spec it was launched with (or with no "
        "SPEC.yaml), or launch a new sweep with another --name"
    )


def stored_spec(home: Path, name: str) -> SweepSpec:
    """The spec a sweep was launched with, for ``--resume`` without a SPEC.yaml."""
    identity = read_identity(home)
    if identity is None or "spec" not in identity:
        raise LaunchError(f"--resume: sweep {name!r} keeps no copy of its spec; give its SPEC.yaml")
    return sweep_spec_from_dict(identity["spec"])
