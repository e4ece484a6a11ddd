"""The epoch store: trained epochs by (network key, epoch), in a folder that trials in other
processes (and, on shared storage, other nodes) read and write.

Entries are written whole (temp file, then rename), so a worker killed mid-write leaves
nothing half-read. An epoch being trained is claimed first, so each is trained once; a
claim whose holder died (same host) or that outlived ``claim_timeout_s`` is taken over. The
least recently used entries are evicted past ``max_bytes``: a trial that needed one then
trains the epoch itself, with the same result, only slower.
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
from typing import Any

import torch

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
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            # HOST SYNC: once per trained epoch (and only with sharing on): the network's
            # state is copied off the device to be written.
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
