"""Train each shared network once: a content-addressed store of trained epochs.

A network's epochs are a pure function of its sharing key (:func:`network_key`: the spec's
training keys, phase, round, widths, the device kind and, where results depend on it, the
thread count). So when a schedule is about to train epoch ``e`` of a network whose epoch
``e`` some schedule has already trained, it loads that epoch's end state instead: weights,
optimizer, lr schedule and batch generator, with the epoch's measures. From there it goes
on exactly as if it had trained the epoch itself, and its own decisions (rho, delta) are
taken on the same curves. Where two schedules reach an epoch at once, one claims it and
trains; the other waits for the result. In a sweep a trial does not wait in its slot: after
each report it looks whether another trial is training its next epoch
(:meth:`EpochSharing.trained_elsewhere`), and the sweep's scheduler pauses it until it can go
on.

The store (:mod:`adprune_core.schedule.epoch_store`) is a folder, in a sweep
``<storage>/<sweep>/shared-epochs``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

import torch

from adprune_core.config import ScheduleSpec, spec_to_dict
from adprune_core.config.sharing import training_fields
from adprune_core.schedule.epoch_store import EpochStore, ShareSettings


@cache
def code_fingerprint() -> str:
    """The library's own source and torch's version: an entry trained by other code must
    never be loaded (a resumed sweep after an upgrade trains again instead)."""
    digest = hashlib.blake2b(torch.__version__.encode(), digest_size=16)
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def schedule_part(spec: ScheduleSpec) -> dict[str, Any]:
    # A sweep spec adds sections a schedule never reads (search, resources, ...): key only
    # the schedule's own.
    names = {f.name for f in fields(ScheduleSpec)}
    return {k: v for k, v in spec_to_dict(spec).items() if k in names}


def thread_key(spec: ScheduleSpec, device: torch.device) -> int | None:
    """The thread count where results depend on it: CPU training without
    ``train.deterministic`` on more than one thread splits its sums differently."""
    if device.type != "cpu" or spec.train.deterministic:
        return None
    threads = torch.get_num_threads()
    return None if threads == 1 else threads


def network_key(
    spec: ScheduleSpec,
    phase: str,
    round_index: int,
    widths: list[int],
    device: torch.device,
    parent: str | None = None,
) -> str:
    """The sharing key of one network: equal keys train identical epochs."""
    identity = {
        "spec": training_fields(schedule_part(spec), phase),
        "phase": phase,
        "round": round_index,
        "widths": list(widths),
        "device": device.type,
        "threads": thread_key(spec, device),
        "parent": parent,
        "code": code_fingerprint(),
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


def inherited_key(parent_key: str | None, parent_epochs: int) -> str | None:
    """The parent part of a key under ``prune.init: inherit``: the parent network and how
    long it trained. None (no sharing) where the parent's key is unknown."""
    return None if parent_key is None else f"{parent_key}@{parent_epochs}"


def shared_epoch(
    store: EpochStore,
    key: str,
    epoch: int,
    device: torch.device,
    train: Callable[[], dict[str, Any]],
) -> tuple[dict[str, Any], bool]:
    """Epoch ``epoch`` of network ``key``: loaded from the store, or trained by ``train``
    (which returns the entry to store). The entry, and whether it was loaded."""
    entry = store.obtain(key, epoch, device)
    if entry is not None:
        return entry, True
    try:
        entry = train()
    except BaseException:
        store.release(key, epoch)  # a waiting schedule trains it instead
        raise
    store.save(key, epoch, entry)
    return entry, False


@dataclass
class SharingTally:
    """A schedule's epochs in net0-epoch units (an epoch of net[i] costs 1 / its MAC
    reduction): all of them, the part it trained itself, and how many it loaded."""

    shared_epochs: int = 0
    net0_epochs: float = 0.0
    net0_epochs_trained: float = 0.0


class EpochSharing:
    """One schedule's side of sharing: the live network's key, its shared epochs so far and
    who trained them, and the tally over the whole schedule. Without settings, every epoch
    is trained here and only the tally is kept."""

    def __init__(self, settings: ShareSettings | None) -> None:
        self.store = EpochStore(settings) if settings is not None else None
        self.trainer = settings.trainer if settings is not None else ""
        self.key: str | None = None
        self.network_shared = 0
        self.trained_by = ""
        self.last_loaded = False
        self.tally = SharingTally()
        self.latency: Any = None

    def start_network(
        self,
        spec: ScheduleSpec,
        state: Any,
        device: torch.device,
        parent: str | None = None,
        inherits: bool = False,
    ) -> None:
        """Key the network ``state`` is on; an inheriting one whose parent's key is unknown
        trains alone."""
        self.network_shared, self.trained_by = 0, ""
        self.latency = spec.record.latency
        if self.store is None or (inherits and parent is None):
            self.key = None
            return
        self.key = network_key(spec, state.phase, state.round, state.widths, device, parent)

    def parent_part(self, epochs: int) -> str | None:
        return inherited_key(self.key, epochs)

    def epoch(
        self,
        number: int,
        device: torch.device,
        train: Callable[[], dict[str, Any]],
        load: Callable[[dict[str, Any]], None],
    ) -> dict[str, Any]:
        """Epoch ``number`` of the live network: trained by ``train`` (which returns its
        measures and, under ``"network"``, its end state) or loaded into it by ``load``."""
        self.last_loaded = False
        if self.store is None or self.key is None:
            return train()
        entry, loaded = shared_epoch(self.store, self.key, number, device, train)
        if loaded:
            load(entry)
            self.last_loaded = True
            self.network_shared += 1
            self.trained_by = str(entry.get("trainer", ""))
        return entry

    def probes(
        self, epochs: int, device: torch.device, measure: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """The closing probes (latency, Fig. 3's maps) of the live network after ``epochs``:
        measured by ``measure``, or taken from the trial that measured the same network."""
        if self.store is None or self.key is None:
            return measure()
        settings = json.dumps(asdict(self.latency), sort_keys=True) if self.latency else ""
        text = f"{self.key}:closing:{epochs}:{settings}"
        key = hashlib.blake2b(text.encode(), digest_size=20).hexdigest()
        entry, _ = shared_epoch(self.store, key, 0, device, measure)
        return entry

    def count(self, mac_reduction: float) -> None:
        """Add the epoch just taken, of a network ``mac_reduction`` x smaller than net0."""
        units = 1.0 / mac_reduction
        self.tally.net0_epochs += units
        if self.last_loaded:
            self.tally.shared_epochs += 1
        else:
            self.tally.net0_epochs_trained += units

    def decided(self, epoch: int, continues: bool) -> None:
        """After the decision on epoch ``epoch``: a schedule that trained it and goes on
        with this network says so in the store (see :meth:`trained_elsewhere`)."""
        if self.store is not None and self.key is not None and continues and not self.last_loaded:
            self.store.mark_continues(self.key, epoch)

    def trained_elsewhere(self, epoch: int, grace_s: float = 0.0) -> str | None:
        """The trial training epoch ``epoch`` of the live network in another process now
        (its id, or "" if unknown), or None when this schedule would not wait for it.

        The trainer of the epoch before, where it said it goes on with this network, claims
        ``epoch`` only once its sweep has taken its report. Up to ``grace_s`` is given for
        that claim to appear, so that the trainer keeps training and this schedule waits,
        rather than both racing for the epoch and one waiting where it stands.
        """
        if self.store is None or self.key is None:
            return None
        expected = self.last_loaded and self.store.continues(self.key, epoch - 1)
        deadline = time.monotonic() + (grace_s if expected else 0.0)
        while True:
            trainer = self.store.trained_elsewhere(self.key, epoch)
            if trainer is not None or time.monotonic() >= deadline:
                return trainer
            if self.store.holds(self.key, epoch):
                return None
            time.sleep(self.store.settings.poll_s)

    def report_fields(self) -> dict[str, Any]:
        return {
            "share_key": self.key or "",
            "shared": self.last_loaded,
            "shared_epochs": self.network_shared,
            "trained_by": self.trained_by,
            "trial_shared_epochs": self.tally.shared_epochs,
            "net0_epochs": self.tally.net0_epochs,
            "net0_epochs_trained": self.tally.net0_epochs_trained,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "network_shared": self.network_shared,
            "trained_by": self.trained_by,
            "tally": asdict(self.tally),
        }

    def load_state_dict(self, saved: dict[str, Any] | None, inherited: bool) -> None:
        """As checkpointed. An inheriting network's key chains its parent's, which only the
        checkpoint knows: without it (sharing was off, or an older checkpoint) it trains
        alone."""
        saved = saved or {}
        if inherited:
            # Only the checkpoint knows the parent's part. Any other network keeps the key
            # computed on resume, which takes this worker's thread count (a trial restarts
            # between rounds on its next network's share).
            self.key = saved.get("key") if self.store is not None else None
        self.network_shared = int(saved.get("network_shared", 0))
        self.trained_by = str(saved.get("trained_by", ""))
        self.tally = SharingTally(**saved.get("tally", {}))
