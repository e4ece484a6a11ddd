"""The epoch store: trained epochs by (network key, epoch), in a folder that trials in other
processes (and, on shared storage, other nodes) read and write.

Entries are written whole (temp file, then rename), so a worker killed mid-write leaves
nothing half-read. An epoch being trained is claimed first, so each is trained once; a
claim whose holder died (same host) or that outlived ``claim_timeout_s`` is taken over. The
least recently used entries are evicted past ``max_bytes``: a trial that needed one then
trains the epoch itself, with the same result, only slower.

Beside each epoch's entry lie its measures alone (``*.measures``, written first). A schedule
that loads a run of stored epochs reports each from its measures and reads a network state
only when it needs one (:class:`StoredState`): to train on, to checkpoint, or to close the
network. Most of a shared sweep's epochs are loaded, and reading each one's whole state was
most of their cost.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

DEFAULT_MAX_GIB = 2.0
ENTRY_SUFFIX = ".pt"
CLAIM_SUFFIX = ".claim"
MEASURES_SUFFIX = ".measures"
# Beside a trained epoch: its trainer goes on to the next epoch of the network.
CONTINUES_SUFFIX = ".next"


class DamagedEntry(RuntimeError):
    """A stored epoch's state could not be read after its measures were reported. Its files
    are deleted, so the trial's retry (from its last checkpoint) trains the epoch instead."""


class StoredState:
    """A stored epoch's network state, read when first needed. The entry's file is held open
    from the look on, so an eviction meanwhile cannot take it away."""

    def __init__(self, handle: IO[bytes], device: torch.device, paths: list[Path]) -> None:
        self._handle, self._device, self._paths = handle, device, paths

    def read(self) -> dict[str, Any]:
        try:
            self._handle.seek(0)
            entry = torch.load(self._handle, map_location=self._device, weights_only=True)
            return entry["network"]
        except Exception as err:  # torch.load raises many types for a damaged file
            for path in self._paths:
                path.unlink(missing_ok=True)
            raise DamagedEntry(f"stored epoch {self._paths[0]}: {err}") from err
        finally:
            self.close()

    def close(self) -> None:
        self._handle.close()


@dataclass(frozen=True)
class ShareSettings:
    """Where a schedule shares its epochs, and who it is in the records."""

    root: Path
    max_bytes: int = int(DEFAULT_MAX_GIB * 2**30)
    # Names the trainer of an epoch in the records of those who load it.
    trainer: str = ""
    # A claim older than this with no entry is taken over (its holder may be gone).
    claim_timeout_s: float = 600.0
    poll_s: float = 0.05


# Claims this process holds: a claim naming this process that is not here was left by a trial
# that Tune ended mid-epoch in a worker it then reused for another trial.
_HELD: set[Path] = set()


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
        """The stored epoch: its measures, and under ``"network"`` its state to read when
        needed (:class:`StoredState`); the whole entry where it has no measures file."""
        path = self._path(key, epoch, ENTRY_SUFFIX)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # eviction goes by last use
        measures_path = self._path(key, epoch, MEASURES_SUFFIX)
        measures = read_entry(measures_path, device)
        if measures is not None:
            return {**measures, "network": StoredState(handle, device, [path, measures_path])}
        with handle:
            entry = read_entry(handle, device)
        if entry is None:  # a damaged entry: train instead
            path.unlink(missing_ok=True)
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
        holder = json.dumps(
            {"host": self.host, "pid": os.getpid(), "trainer": self.settings.trainer}
        )
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not self._stale(path):
                return False
            path.unlink(missing_ok=True)  # its holder is gone: take it over
            return self._claim(key, epoch)
        with os.fdopen(fd, "w") as claim:
            claim.write(holder)
        _HELD.add(path)
        return True

    def mark_continues(self, key: str, epoch: int) -> None:
        with contextlib.suppress(OSError):  # a hint only: without it a trial waits in place
            self._path(key, epoch, CONTINUES_SUFFIX).touch()

    def continues(self, key: str, epoch: int) -> bool:
        return self._path(key, epoch, CONTINUES_SUFFIX).exists()

    def holds(self, key: str, epoch: int) -> bool:
        """Whether the epoch is stored (it may be evicted at once)."""
        return self._path(key, epoch, ENTRY_SUFFIX).exists()

    def trained_elsewhere(self, key: str, epoch: int) -> str | None:
        """The trainer (a trial id, or "" if it gave none) that is training this epoch in
        another process right now, or None: the epoch is stored, unclaimed, or its claim is
        stale or this process's own. A look, not a claim: the answer may be stale at once."""
        path = self._path(key, epoch, CLAIM_SUFFIX)
        if path in _HELD or self._path(key, epoch, ENTRY_SUFFIX).exists():
            return None
        try:
            holder = json.loads(path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return ""  # being written: held
        # A claim naming this process that it does not hold is stale too (see _stale).
        return None if self._stale(path) else str(holder.get("trainer", ""))

    def _stale(self, path: Path) -> bool:
        try:
            holder = json.loads(path.read_text() or "{}")
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return False  # being written, or just released
        if holder.get("host") == self.host:
            pid = int(holder.get("pid", 0))
            left_here = pid == os.getpid() and path not in _HELD
            if left_here or not pid_alive(pid):
                return True
        return age > self.settings.claim_timeout_s

    def release(self, key: str, epoch: int) -> None:
        path = self._path(key, epoch, CLAIM_SUFFIX)
        _HELD.discard(path)
        path.unlink(missing_ok=True)

    def save(self, key: str, epoch: int, entry: Mapping[str, Any]) -> None:
        """Store a trained epoch (whole, or not at all) and release its claim."""
        path = self._path(key, epoch, ENTRY_SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if "network" in entry:  # first, so that every stored state has its measures
                measures = {k: v for k, v in entry.items() if k != "network"}
                write_whole(self._path(key, epoch, MEASURES_SUFFIX), measures)
            # HOST SYNC: once per trained epoch (and only with sharing on): the network's
            # state is copied off the device to be written.
            write_whole(path, dict(entry))
        except OSError as err:
            # A full disk costs sharing, not the trial: the epoch is trained all the same.
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
            path.with_suffix(MEASURES_SUFFIX).unlink(missing_ok=True)
            path.with_suffix(CONTINUES_SUFFIX).unlink(missing_ok=True)
            total -= size


def write_whole(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to a temp file, then rename it: readers see all of it or nothing."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(data, partial)
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)
        raise


def read_entry(source: Path | IO[bytes], device: torch.device) -> dict[str, Any] | None:
    """A stored dict, or None where it is missing or damaged."""
    try:
        # weights_only: the store sits on shared storage, and a full unpickle runs code.
        return torch.load(source, map_location=device, weights_only=True)
    except FileNotFoundError:
        return None
    except Exception:  # a damaged file (torch.load raises many types)
        return None


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
