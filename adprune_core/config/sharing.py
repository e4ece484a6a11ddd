"""Which spec keys change what a network's epochs compute, and so which trials may share them.

A network's training is a pure function of the keys classed ``training`` below, its phase,
round and widths (and, with ``prune.init: inherit``, its parent). The ``decision`` keys only
say when a round ends and whether the search stops: two trials that differ only there train
identical epochs up to the point where their decisions part. ``neither`` keys (names,
records, search settings) touch no epoch at all.

Every key is classed here once, by its dotted path or a section above it. A key nobody has
classed counts as ``training``: an unclassed key can cost sharing, never a wrong result.
``tests/test_sharing.py`` fails when a spec key has no class.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

KeyClass = Literal["training", "decision", "neither"]

TRAINING: KeyClass = "training"
DECISION: KeyClass = "decision"
NEITHER: KeyClass = "neither"

# The horizon of each phase's cosine schedule: it changes training in its own phase only.
SEARCH_ONLY_KEYS = ("prune.rho.max_epochs",)
FINAL_ONLY_PREFIX = "final"

KEY_CLASSES: dict[str, KeyClass] = {
    "name": NEITHER,
    "experiment": NEITHER,
    "model": TRAINING,
    # The batch order, augmentation and every image; the path and download flag only say
    # where the same files are.
    "data": TRAINING,
    "data.root": NEITHER,
    "data.download": NEITHER,
    "train": TRAINING,
    # The device is keyed by what it resolves to (cpu, cuda), not by how it was asked for.
    "train.device": NEITHER,
    "prune.rho.max_epochs": TRAINING,
    "prune.rho.threshold": DECISION,
    "prune.rho.patience": DECISION,
    "prune.rho.min_epochs": DECISION,
    "prune.delta": DECISION,
    "prune.min_width": DECISION,
    "prune.max_rounds": DECISION,
    # inherit makes net[i+1] start from net[i]'s filters; the key then chains the parent's.
    "prune.init": TRAINING,
    # What the density monitor counts is part of what an epoch measures.
    "prune.measure": TRAINING,
    # How a group's sites merge is part of the reading an epoch stores, as prune.measure is.
    "prune.group_density": TRAINING,
    # Only the final phase's horizon; its network trains only in that phase.
    "final.epochs": TRAINING,
    "record": NEITHER,
}


def leaf_keys(tree: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Every dotted leaf path of a nested spec dict (a mapping's keys are its children)."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from leaf_keys(value, f"{path}.")
        else:
            yield path


def declared_class(path: str, classes: Mapping[str, KeyClass]) -> KeyClass | None:
    """The class of ``path`` or of its nearest classed section, None when none is classed."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        found = classes.get(".".join(parts[:end]))
        if found is not None:
            return found
    return None


def key_class(path: str, extra: Mapping[str, KeyClass] | None = None) -> KeyClass:
    """How ``path`` bears on training; unclassed keys count as changing it."""
    found = declared_class(path, {**KEY_CLASSES, **(extra or {})})
    return TRAINING if found is None else found


def unclassed_keys(
    spec_dict: Mapping[str, Any], extra: Mapping[str, KeyClass] | None = None
) -> list[str]:
    """The spec's leaf keys that no entry classes (for the test that keeps the table whole)."""
    classes = {**KEY_CLASSES, **(extra or {})}
    return [p for p in leaf_keys(spec_dict) if declared_class(p, classes) is None]


def in_phase(path: str, phase: str) -> bool:
    """Whether a training key bears on a network of ``phase`` ("search" or "final")."""
    if path in SEARCH_ONLY_KEYS:
        return phase == "search"
    if path == FINAL_ONLY_PREFIX or path.startswith(f"{FINAL_ONLY_PREFIX}."):
        return phase == "final"
    return True


def training_fields(
    spec_dict: Mapping[str, Any], phase: str, extra: Mapping[str, KeyClass] | None = None
) -> dict[str, Any]:
    """The values that decide a ``phase`` network's epochs: the sharing key's spec part."""
    values = {}
    for path in leaf_keys(spec_dict):
        if key_class(path, extra) == TRAINING and in_phase(path, phase):
            values[path] = lookup(spec_dict, path)
    return values


def lookup(tree: Mapping[str, Any], path: str) -> Any:
    value: Any = tree
    for part in path.split("."):
        value = value[part]
    return value
