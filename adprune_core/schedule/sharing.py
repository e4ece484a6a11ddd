"""Train each shared network once: a content-addressed store of trained epochs.

A network's epochs are a pure function of its sharing key (:func:`network_key`: the spec's
training keys, phase, round, widths, the device kind and, where results depend on it, the
thread count). So when a schedule is about to train epoch ``e`` of a network whose epoch
``e`` some schedule has already trained, it loads that epoch's end state instead: weights,
optimizer, lr schedule and batch generator, with the epoch's measures. From there it goes
on exactly as if it had trained the epoch itself, and its own decisions (rho, delta) are
taken on the same curves. Where two schedules reach an epoch at once, one claims it and
trains; the other waits for the result.

The store is a folder (``<storage>/<sweep>/shared-epochs`` in a sweep), so it works for
trials in other processes and, on shared storage, on other nodes. Entries are written
whole (temp file, then rename), so a worker killed mid-write leaves nothing half-read.
The oldest entries are evicted past ``max_bytes``: a trial that needed one then trains the
epoch itself, with the same result, only slower.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

import torch

from adprune_core.config import ScheduleSpec, spec_to_dict
from adprune_core.config.sharing import training_fields

DEFAULT_MAX_GIB = 2.0
ENTRY_SUFFIX = ".pt"
CLAIM_SUFFIX = ".claim"


@dataclass(frozen=True)
class ShareSettings:
    """Where a schedule shares its epochs, and who it is in the records."""

    root: Path
    max_bytes: int = int(DEFAULT_MAX_GIB * 2**30)
    # Names the trainer of an epoch in the records of those who load it.
    trainer: str = ""
    # A claim older than this with no entry is taken over (its holder may be gone).
    claim_timeout_s: float = 600.0
    poll_s: float = 0.2


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


class EpochStore:
    """Trained epochs by (network key, epoch), with claims so each is trained once."""

    def __init__(self, settings: ShareSettings) -> None:
        self.settings = settings
        self.root = Path(settings.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.host = socket.gethostname()

    def _path(self, key: str, epoch: int, suffix: str) -> Path:
        return self.root / key[:2] / key / f"{epoch:04d}{suffix}"

    def load(self, key: str, epoch: int, device: torch.device) -> dict[str, Any] | None:
        path = self._path(key, epoch, ENTRY_SUFFIX)
        try:
            # weights_only: the store sits on shared storage, and a full unpickle runs code.
            entry = torch.load(path, map_location=device, weights_only=True)
        except FileNotFoundError:
            return None
        except Exception:  # a damaged entry (torch.load raises many types): train instead
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # eviction goes by last use
        return entry

    def obtain(self, key: str, epoch: int, device: torch.device) -> dict[str, Any] | None:
        """The stored epoch, waiting for it while another schedule trains it; None when the
        caller is to train it (it then holds the claim, released by :meth:`save`)."""
        while True:
            entry = self.load(key, epoch, device)
            if entry is not None:
                return entry
            if self._claim(key, epoch):
                # Trained and stored between our look and our claim: use it.
                entry = self.load(key, epoch, device)
                if entry is not None:
                    self.release(key, epoch)
                return entry
            time.sleep(self.settings.poll_s)

    def _claim(self, key: str, epoch: int) -> bool:
        path = self._path(key, epoch, CLAIM_SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        holder = json.dumps({"host": self.host, "pid": os.getpid()})
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not self._stale(path):
                return False
            path.unlink(missing_ok=True)  # its holder is gone: take it over
            return self._claim(key, epoch)
        with os.fdopen(fd, "w") as claim:
            claim.write(holder)
        return True

    def _stale(self, path: Path) -> bool:
        try:
            holder = json.loads(path.read_text() or "{}")
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return False  # being written, or just released
        if holder.get("host") == self.host and not pid_alive(int(holder.get("pid", 0))):
            return True
        return age > self.settings.claim_timeout_s

    def release(self, key: str, epoch: int) -> None:
        self._path(key, epoch, CLAIM_SUFFIX).unlink(missing_ok=True)

    def save(self, key: str, epoch: int, entry: Mapping[str, Any]) -> None:
        """Store a trained epoch (whole, or not at all) and release its claim."""
        path = self._path(key, epoch, ENTRY_SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save(dict(entry), partial)
            os.replace(partial, path)
        except OSError as err:
            # A full disk costs sharing, not the trial: the epoch is trained all the same.
            partial.unlink(missing_ok=True)
            if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise
        finally:
            self.release(key, epoch)
        self.evict()

    def evict(self) -> None:
        """Delete the least recently used entries until the store fits ``max_bytes``."""
        entries = []
        for path in self.root.glob(f"*/*/*{ENTRY_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.settings.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
