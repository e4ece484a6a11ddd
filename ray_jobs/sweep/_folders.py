"""The sweep's folder: the storage root, a checked name in it, and the claim on it.

A launch claims its sweep's folder before anything else touches it: a new sweep by creating
the folder (an exclusive ``mkdir``, so of two launches of one name exactly one gets it), and
every launch, new or resumed, by an exclusive lock on a file inside it, held for the life of
the process and released by the OS when the process dies however it dies.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ray_jobs.sweep._errors import LaunchError

LOCK_FILE = ".adprune-sweep.lock"
NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,100}")
NAME_RULE = "one path segment of letters, digits, '.', '_' and '-', at most 100 characters"


def check_sweep_name(name: str, option: str = "--name") -> None:
    if not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise LaunchError(f"{option} {shown!r}: a sweep name is {NAME_RULE}")


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


def sweep_home(storage: str, name: str) -> Path:
    """A local folder for the sweep's own files (identity, lock, MLflow journal); with local
    storage it is the folder Tune keeps the sweep in."""
    if "://" in storage:
        return Path.cwd() / ".adprune-sweep" / name
    return Path(storage) / name


@dataclass
class SweepClaim:
    """This process's hold on a sweep's folder."""

    home: Path
    created: bool  # this launch made the folder (a new sweep)
    lock: IO[str]

    def abandon(self) -> None:
        """Give the folder back after a launch failed before training: a new sweep's folder
        is removed, so the name can be launched again once the problem is fixed."""
        self.lock.close()
        if self.created:
            shutil.rmtree(self.home, ignore_errors=True)


def claim_sweep(storage: str, name: str, resume: bool) -> SweepClaim:
    home = sweep_home(storage, name)
    created = False
    if resume:
        if "://" not in storage and not home.is_dir():
            raise LaunchError(f"--resume: no sweep named {name!r} under {storage}")
        home.mkdir(parents=True, exist_ok=True)
    else:
        home.parent.mkdir(parents=True, exist_ok=True)
        try:
            home.mkdir()
        except FileExistsError:
            raise LaunchError(
                f"--name {name}: a sweep of that name exists under {home.parent}; "
                "use --resume to continue it or --name to start another"
            ) from None
        created = True
    return SweepClaim(home, created, lock_sweep(home, name))


def lock_sweep(home: Path, name: str) -> IO[str]:
    lock = (home / LOCK_FILE).open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise LaunchError(
            f"--name {name}: the sweep is in use by another launch ({holder}); "
            "wait for it to end, or stop it"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    lock.flush()
    return lock
