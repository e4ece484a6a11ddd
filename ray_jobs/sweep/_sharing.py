"""Sharing in a sweep: the classes of the sweep-only keys, and where a trial's epoch store is.

Trials whose networks have the same sharing key (:func:`adprune_core.schedule.sharing.network_key`)
train each epoch once: the first to reach it trains it, the others load its end state from
the epoch store and go on with their own decisions. The sweep-only sections decide nothing
about an epoch: the resources only through the thread count, which the key takes from the
worker itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adprune_core.config.sharing import NEITHER, KeyClass
from ray_jobs.sweep._errors import LaunchError

SWEEP_KEY_CLASSES: dict[str, KeyClass] = {
    "search": NEITHER,
    "search_alg": NEITHER,
    "num_samples": NEITHER,
    "max_concurrent": NEITHER,
    "resources": NEITHER,
    "pareto": NEITHER,
    "share": NEITHER,
}

SHARE_FOLDER = "shared-epochs"
# The trial's config carries the store's settings beside its spec.
SHARE_CONFIG_KEY = "share_store"


def share_config(spec: Any, storage: str, name: str) -> dict[str, Any] | None:
    """The epoch store's settings for the trials of a sweep, None when sharing is off or the
    storage is not a file system (a cloud URI)."""
    if not spec.share.enabled:
        return None
    if spec.share.root is not None:
        root = str(Path(spec.share.root).expanduser().resolve())
    elif "://" in storage:
        return None
    else:
        root = str(Path(storage) / name / SHARE_FOLDER)
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
    except OSError as err:  # here, not as a traceback in every trial
        raise LaunchError(f"share.root: cannot create {root}: {err.strerror}") from None
    return {"root": root, "max_bytes": int(spec.share.max_gib * 2**30)}


def with_share_store(
    space: dict[str, Any], spec: Any, storage: str, name: str, enabled: bool = True
) -> dict[str, Any]:
    """Tune's search space with the epoch store's settings beside the spec (unless sharing
    is off: ``enabled`` False is ``launch --no-share``)."""
    share = share_config(spec, storage, name) if enabled else None
    return space if share is None else {**space, SHARE_CONFIG_KEY: share}
