"""The on-disk journal of records not yet known to be in the store, and the dead letters.

Every record is appended to the journal (a JSON-lines file in the sweep's folder) before
anything else happens to it, and each append is flushed and fsynced before it counts as
written (as Optuna's journal storage does): a power loss cannot take a record the journal
claims to hold. The writer reads the journal back from an offset instead of keeping a list,
so a writer that falls behind holds at most one flush in memory and the rest waits on disk.
A driver killed with records unwritten loses none: the next ``--resume`` replays the journal,
and every record is idempotent (see ``_recorder``).

A record that the store refused for a reason retrying cannot fix goes to the dead-letter file
beside the journal, with its error; ``--resume`` moves it back into the journal.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Operation = dict[str, Any]

QUEUE_FILE = "mlflow-queue.jsonl"
DEAD_LETTER_FILE = "mlflow-dead-letters.jsonl"
# The journal is rewritten without its written head once that head is this large, so a
# writer that never quite catches up does not grow it for the whole sweep.
COMPACT_BYTES = 16 * 1024 * 1024


def encode(ops: list[Operation]) -> bytes:
    return "".join(json.dumps(op, separators=(",", ":")) + "\n" for op in ops).encode()


def append_synced(path: Path, data: bytes) -> None:
    """Append ``data`` and fsync it: only then does it count as written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_lines(data: bytes) -> list[Operation]:
    ops = []
    for line in data.splitlines():
        try:
            ops.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a killed driver; its epoch is re-reported
    return ops


@dataclass
class Chunk:
    """Records read from the journal, and the offset just past them."""

    ops: list[Operation]
    end: int


class Journal:
    """The JSON-lines file of records not yet known to be in the store."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / QUEUE_FILE
        self.lock = threading.Lock()  # appends, reads past the end, and rewrites
        self.sync_s = 0.0  # time spent in fsync'd appends, for the benchmark

    def append(self, ops: list[Operation]) -> None:
        """One fsynced append for ``ops`` (the records of one Tune event)."""
        stamp = time.time()
        for op in ops:
            op.setdefault("queued_at", stamp)  # for the writer's lag in seconds
        data = encode(ops)
        started = time.perf_counter()
        with self.lock:
            append_synced(self.path, data)
        self.sync_s += time.perf_counter() - started

    def read(self) -> list[Operation]:
        return self.read_from(0, 1 << 62).ops

    def read_from(self, offset: int, max_records: int) -> Chunk:
        """Up to ``max_records`` whole lines from ``offset`` on."""
        with self.lock:
            if not self.path.exists():
                return Chunk([], offset)
            with self.path.open("rb") as handle:
                handle.seek(offset)
                lines = []
                for line in handle:
                    if not line.endswith(b"\n") or len(lines) >= max_records:
                        break  # a line still being written, or enough for one flush
                    lines.append(line)
        end = offset + sum(len(line) for line in lines)
        return Chunk(parse_lines(b"".join(lines)), end)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def compact(self, offset: int, keep: list[Operation]) -> int:
        """Drop the head before ``offset`` except ``keep`` (records taken but not yet
        written); the new offset of the unread tail."""
        with self.lock:
            tail = b""
            if self.path.exists():
                with self.path.open("rb") as handle:
                    handle.seek(offset)
                    tail = handle.read()
            head = encode(keep)
            partial = self.path.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            append_synced(partial, head + tail)
            os.replace(partial, self.path)
            return len(head)

    def clear_if_read(self, offset: int) -> bool:
        """Remove the journal if nothing was appended past ``offset``."""
        with self.lock:
            if self.size() != offset:
                return False
            self.path.unlink(missing_ok=True)
            return True

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class DeadLetters:
    """Records the store refused for good, each with its error, beside the journal."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / DEAD_LETTER_FILE
        self._lock = threading.Lock()
        self.count = 0  # added by this driver

    def add(self, op: Operation, error: str) -> None:
        entry = {"error": error, "at": time.time(), "record": op}
        with self._lock:
            append_synced(self.path, encode([entry]))
            self.count += 1

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return parse_lines(self.path.read_bytes())

    def take(self, journal: Journal) -> int:
        """Move every dead letter back into ``journal`` (to be retried); how many."""
        records = [entry["record"] for entry in self.entries()]
        if records:
            journal.append(records)
        self.path.unlink(missing_ok=True)
        return len(records)
