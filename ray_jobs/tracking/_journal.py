"""Getting operations into the store: the on-disk journal, delivery with retry, and the
writer thread.

Every operation is appended to the journal (a JSON-lines file in the sweep's folder) before
anything else happens to it, and the journal is emptied only once every operation has been
applied. A driver killed with operations in memory therefore loses none: the next
``--resume`` replays the journal, and every operation is idempotent (see ``_recorder``).

While the store does not answer, operations stay pending, in order, and are retried every
``retry_interval_s``; training goes on meanwhile, because the writer has a thread of its own
and Tune's event loop (and with it every trial waiting on ``tune.report``) never waits for it.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray_jobs.tracking.store import first_line

Operation = dict[str, Any]

QUEUE_FILE = "mlflow-queue.jsonl"

# Errors that retrying cannot fix: the operation is reported and dropped, not queued forever.
PERMANENT_ERROR_CODES = (
    "INVALID_PARAMETER_VALUE",
    "BAD_REQUEST",
    "RESOURCE_DOES_NOT_EXIST",
    "INVALID_STATE",
    "PERMISSION_DENIED",
)


def is_permanent(err: BaseException) -> bool:
    return getattr(err, "error_code", None) in PERMANENT_ERROR_CODES


class Journal:
    """The JSON-lines file of operations not yet known to be in the store."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / QUEUE_FILE

    def append(self, op: Operation) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(op) + "\n")

    def read(self) -> list[Operation]:
        if not self.path.exists():
            return []
        ops = []
        for line in self.path.read_text().splitlines():
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a killed driver; its epoch is re-reported
        return ops

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class RetryingDelivery:
    """Applies operations in order with ``apply``; while the store is down, keeps them
    pending and tries again at most every ``retry_interval_s``."""

    def __init__(
        self,
        apply: Callable[[Operation], None],
        store_uri: str,
        journal_path: Path,
        echo: Callable[[str], None],
        retry_interval_s: float = 15.0,
    ) -> None:
        self.apply = apply
        self.store_uri = store_uri
        self.journal_path = journal_path
        self.echo = echo
        self.retry_interval_s = retry_interval_s
        self.pending: list[Operation] = []
        self._down_since: float | None = None
        self._last_attempt = 0.0
        self.writes = 0  # operations applied, for the closing line
        self.busy_s = 0.0  # wall time spent writing to the store
        # CPU time of those writes: on cores shared with trials the wall time mostly
        # measures waiting for a core, the CPU time what logging takes from the trials.
        self.busy_cpu_s = 0.0

    def submit(self, op: Operation) -> None:
        self.pending.append(op)
        if self._down_since is not None and not self._retry_due():
            return
        self.flush()

    def _retry_due(self) -> bool:
        return time.monotonic() - self._last_attempt >= self.retry_interval_s

    def flush(self) -> bool:
        """Write every pending operation in order; False if the store is (still) down."""
        started, started_cpu = time.perf_counter(), time.thread_time()
        try:
            return self._flush()
        finally:
            self.busy_s += time.perf_counter() - started
            self.busy_cpu_s += time.thread_time() - started_cpu

    def _flush(self) -> bool:
        self._last_attempt = time.monotonic()
        while self.pending:
            op = self.pending[0]
            try:
                self.apply(op)
            except Exception as err:
                if not is_permanent(err):
                    self._went_down(err)
                    return False
                self.echo(f"mlflow: dropped {op['op']} record: {first_line(err)}")
            else:
                self.writes += 1
            self.pending.pop(0)
        self._came_back()
        return True

    def _went_down(self, err: BaseException) -> None:
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        self.echo(
            f"mlflow: store {self.store_uri} not answering ({first_line(err)}); "
            f"training goes on, records are queued in {self.journal_path} "
            f"and retried every {self.retry_interval_s:g}s"
        )

    def _came_back(self) -> None:
        if self._down_since is None:
            return
        self.echo(
            f"mlflow: store answering again after "
            f"{time.monotonic() - self._down_since:.0f}s; queued records written"
        )
        self._down_since = None


_STOP: Operation = {"op": "_stop"}


class BackgroundWriter:
    """Journals each operation on the caller's thread, and delivers it on a thread of its own.

    ``state_lock`` is held while an operation is applied, so the caller can read or replace
    the recorder's run map (Tune's callback state) between two writes.
    """

    def __init__(self, delivery: RetryingDelivery, journal: Journal) -> None:
        self.delivery = delivery
        self.journal = journal
        self.state_lock = threading.Lock()
        self._journal_lock = threading.Lock()
        self._queue: queue.Queue[Operation] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="mlflow-writer", daemon=True)

    def start(self, replay: list[Operation]) -> None:
        """Start writing, first the operations ``replay`` (already in the journal)."""
        for op in replay:
            self._queue.put(op)
        self._thread.start()

    def put(self, op: Operation) -> None:
        with self._journal_lock:
            self.journal.append(op)
            self._queue.put(op)

    def _run(self) -> None:
        while True:
            try:
                op = self._queue.get(timeout=self.delivery.retry_interval_s)
            except queue.Empty:
                if self.delivery.pending:
                    with self.state_lock:
                        self.delivery.flush()
                    self._clear_journal_if_idle()
                continue
            if op is _STOP:
                return
            with self.state_lock:
                self.delivery.submit(op)
            self._clear_journal_if_idle()

    def _clear_journal_if_idle(self) -> None:
        with self._journal_lock:
            if self._queue.empty() and not self.delivery.pending:
                self.journal.clear()

    def stop(self, timeout_s: float) -> bool:
        """Write what is queued (up to ``timeout_s``); False if some of it is still unwritten."""
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            return False
        if self.delivery.pending:
            self.delivery.flush()  # one last try before the driver exits
        self._clear_journal_if_idle()
        return not self.delivery.pending
