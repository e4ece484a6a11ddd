"""The writer: from the journal to the store, batched per run, never wedged by one record.

Tune's event loop only appends to the journal (``_journal``); this writer reads it back on
threads of its own, so training never waits on MLflow. Each flush takes what the journal
holds (up to :attr:`WriterConfig.max_records`) and:

1. resolves every record's run on one thread, in journal order (runs are created there, each
   once, parents before children);
2. writes each run's records as one ``log_batch`` (``Recorder.write_run``), different runs at
   once on a thread pool, each run's records in their order;
3. hands artifact records (figures, logged models, the sweep's end) to threads of their own
   (``artifact_threads``) once every record before them is written, so a slow figure never
   delays a metric; the figures themselves are drawn in child processes (``_renderer``), one
   per artifact thread, so matplotlib never holds the interpreter lock that the metrics
   thread and Tune's event loop need. The sweep's end waits for every artifact before it.

A flush waits until its oldest record is ``linger_s`` old, so that the records a run gets
meanwhile join its one ``log_batch``.

Errors are sorted by what retrying can fix (``_errors``). A transient one leaves the run's
records queued: when nothing at all gets through, the store is down, which is said once, and
the flush is retried every ``retry_interval_s``. Any other error sets the one record aside in
the dead-letter file, with one line naming it, and the records behind it flow on. A record
that keeps failing "transiently" while the store takes every other write (an HTTP 500 for one
bad request) is set aside too, after ``max_strikes`` flushes.

Longer than 300 lines because the flush's three stages (resolve, write per run, artifacts)
share the writer's queue, its lag figures and one error-sorting path; split apart, each stage
would need the others' state passed in.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ray_jobs.tracking._errors import describe, error_line, is_transient
from ray_jobs.tracking._journal import COMPACT_BYTES, DeadLetters, Journal, Operation
from ray_jobs.tracking._recorder import Recorder, is_artifact, is_barrier, is_sweep_end
from ray_jobs.tracking.store import sqlite_path


@dataclass
class WriterConfig:
    """How the writer paces itself; the defaults suit a sweep, the tests shorten them."""

    retry_interval_s: float = 15.0
    # Runs written at once. An sqlite store takes one writer at a time, so more threads
    # there only queue on its lock (see writer_config); a server's workers take several.
    workers: int = 8
    # Records held in memory per flush; the rest waits in the journal on disk.
    max_records: int = 5000
    # Flushes a record may fail "transiently" while other writes succeed, before it is set
    # aside as a dead letter.
    max_strikes: int = 3
    # Say so when the oldest unwritten record is older than this, at most every report_s.
    behind_s: float = 10.0
    report_s: float = 30.0
    # How long the oldest queued record may wait for others to join its flush. MLflow's
    # log_batch costs about the same for one epoch of a run as for three (7.2 against
    # 5.7 ms a record on sqlite), so at a sweep's pace a short wait saves writer CPU.
    linger_s: float = 1.0
    # Artifact records written at once, each thread with a figure process of its own. One
    # thread fell 12 s behind a 36-trial sweep of the quickstart (benchmarks/sharing.py),
    # waiting on figures and models while both cores had time to spare.
    artifact_threads: int = 2


def writer_config(tracking_uri: str, retry_interval_s: float = 15.0) -> WriterConfig:
    workers = 1 if sqlite_path(tracking_uri) is not None else 8
    return WriterConfig(retry_interval_s=retry_interval_s, workers=workers)


@dataclass
class Item:
    """A record taken from the journal and not yet written or set aside."""

    op: Operation
    strikes: int = 0

    @property
    def queued_at(self) -> float:
        return float(self.op.get("queued_at", time.time()))


@dataclass
class LaneResult:
    """What writing one run's records gave: the items done, and a transient error if the
    rest of them must wait."""

    done: list[Item] = field(default_factory=list)  # written or set aside
    written: int = 0
    transient: BaseException | None = None


@dataclass
class WriterStats:
    """For the progress lines and the sweep's closing line."""

    written: int = 0
    cpu_s: float = 0.0  # CPU time of every writer thread, summed
    busy_s: float = 0.0  # wall time of the flushes
    worst_lag_records: int = 0
    worst_lag_s: float = 0.0
    last_ok: float = 0.0  # monotonic time of the last successful write
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_cpu(self, seconds: float) -> None:
        with self.lock:
            self.cpu_s += seconds

    def add_written(self, count: int) -> None:
        with self.lock:
            self.written += count
            if count:
                self.last_ok = time.monotonic()


class Health:
    """The down and up lines: printed once per outage, naming the store and the journal."""

    def __init__(self, store_uri: str, journal: Journal, echo: Callable[[str], None]) -> None:
        self.store_uri = store_uri
        self.journal = journal
        self.echo = echo
        self.down_since: float | None = None
        self.retry_interval_s = 15.0

    def down(self, err: BaseException) -> None:
        if self.down_since is not None:
            return
        self.down_since = time.monotonic()
        self.echo(
            f"mlflow: store {self.store_uri} not answering ({error_line(err)}); "
            f"training goes on, records are queued in {self.journal.path} "
            f"and retried every {self.retry_interval_s:g}s"
        )

    def up(self) -> None:
        if self.down_since is None:
            return
        self.echo(
            f"mlflow: store answering again after "
            f"{time.monotonic() - self.down_since:.0f}s; queued records written"
        )
        self.down_since = None


class ArtifactLane:
    """Artifact records on threads of their own, ``threads`` at a time: figures, logged
    models and progress metrics of different trials do not wait for one another, and the
    sweep's end waits for every record before it (its front reads them all)."""

    def __init__(self, writer: BackgroundWriter, threads: int = 1) -> None:
        self.writer = writer
        self.queue: queue.Queue[Item | None] = queue.Queue()
        self.outstanding: list[Item] = []  # handed over, not yet written or set aside
        self.lock = threading.Lock()
        self.finished = threading.Condition(self.lock)
        self.threads = [
            threading.Thread(target=self._run, name=f"mlflow-artifacts-{n}", daemon=True)
            for n in range(max(threads, 1))
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self, deadline: float) -> bool:
        """Let the threads finish what is queued, up to ``deadline`` (monotonic); True when
        they all did."""
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join(max(deadline - time.monotonic(), 0))
        return not any(thread.is_alive() for thread in self.threads)

    def put(self, item: Item) -> None:
        with self.lock:
            self.outstanding.append(item)
        self.queue.put(item)

    def idle(self) -> bool:
        with self.lock:
            return not self.outstanding

    def snapshot(self) -> list[Item]:
        with self.lock:
            return list(self.outstanding)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if is_sweep_end(item.op):
                self._wait_for_earlier(item)
            self._write(item)
            with self.finished:
                self.outstanding.remove(item)
                self.finished.notify_all()

    def _wait_for_earlier(self, item: Item) -> None:
        with self.finished:
            while self.outstanding[0] is not item and not self.writer.past_deadline():
                self.finished.wait(1.0)

    def _write(self, item: Item) -> None:
        writer = self.writer
        while not writer.past_deadline():
            failed_at = time.monotonic()
            if writer.attempt(item, writer.recorder.apply, force=False):
                return
            if writer.stop_event.is_set() and writer.health.down_since is not None:
                return  # the driver ends with the store down: the journal keeps it
            # Transient: the store is down, or only this record fails while others get
            # through (a server's 500 on a full artifact disk): count that against it.
            writer.stop_event.wait(writer.config.retry_interval_s)
            if writer.stop_event.is_set():
                time.sleep(min(writer.config.retry_interval_s, 1.0))  # no busy retries
            if writer.stats.last_ok > failed_at:
                item.strikes += 1
                if item.strikes >= writer.config.max_strikes:
                    writer.attempt(item, writer.recorder.apply, force=True)
                    return


class BackgroundWriter:
    """Reads the journal and writes it to the store (see the module's docstring).

    ``state_lock`` is held while records are applied, so the callback can replace the
    recorder's run map (Tune's callback state on restore) between two flushes.
    """

    def __init__(
        self,
        recorder: Recorder,
        journal: Journal,
        dead_letters: DeadLetters,
        store_uri: str,
        echo: Callable[[str], None],
        config: WriterConfig | None = None,
    ) -> None:
        self.recorder = recorder
        self.journal = journal
        self.dead_letters = dead_letters
        self.echo = echo
        self.config = config or WriterConfig()
        self.health = Health(store_uri, journal, echo)
        self.health.retry_interval_s = self.config.retry_interval_s
        self.stats = WriterStats()
        recorder.figures.grow(self.config.artifact_threads)
        recorder.figures.on_cpu = self.stats.add_cpu  # the figure processes' CPU is ours
        self.state_lock = threading.Lock()
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._deadline: float | None = None
        self._pending: list[Item] = []
        self._offset = 0
        self._appended = 0
        self._last_report = 0.0
        self._pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="mlflow-run")
        self._artifacts = ArtifactLane(self, self.config.artifact_threads)
        self._thread = threading.Thread(target=self._run, name="mlflow-writer", daemon=True)

    # ------------------------------------------------------------------ the caller's side

    def start(self) -> None:
        """Start writing, first what the journal already holds (an earlier driver's)."""
        self._appended = len(self.journal.read())
        self._artifacts.start()
        self._thread.start()

    def put(self, ops: list[Operation]) -> None:
        """Journal ``ops`` (one fsynced append) and wake the writer."""
        self.journal.append(ops)
        self._appended += len(ops)
        self._wake.set()

    def lag(self) -> tuple[int, float]:
        """Records not yet written or set aside, and the age of the oldest, in seconds."""
        behind = self._appended - self.stats.written - self.dead_letters.count
        oldest = [i.queued_at for i in self._pending[:1] + self._artifacts.snapshot()[:1]]
        return max(behind, 0), (time.time() - min(oldest)) if oldest else 0.0

    def past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

    def stop(self, timeout_s: float) -> bool:
        """Write what is queued (up to ``timeout_s``); False if some of it is unwritten."""
        self._deadline = time.monotonic() + timeout_s
        self.stop_event.set()
        self._wake.set()
        self._thread.join(max(self._deadline - time.monotonic(), 0))
        if self._artifacts.stop(self._deadline):
            self.recorder.close()
        self._pool.shutdown(wait=False)
        complete = not self._pending and self._artifacts.idle() and not self._thread.is_alive()
        if complete and self.journal.clear_if_read(self._offset):
            self._offset = 0
        return complete and self.journal.size() == 0

    # ------------------------------------------------------------------ the writer thread

    def _run(self) -> None:
        while not self.past_deadline():
            self._read_more()
            if not self._pending:
                self._tidy_journal()
                if self.stop_event.is_set():
                    return
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._linger()
            self._watch_lag()  # before the flush too: that is when the backlog is largest
            started, cpu = time.perf_counter(), time.thread_time()
            with self.state_lock:
                progressed = self._flush()
            self.stats.busy_s += time.perf_counter() - started
            self.stats.add_cpu(time.thread_time() - cpu)
            self._watch_lag()
            self._tidy_journal()
            if not progressed:
                if self.stop_event.is_set():
                    # The store is down as the driver ends: that was the last try, the
                    # journal keeps the rest for --resume (no waiting out drain_timeout_s).
                    return
                self.stop_event.wait(self.config.retry_interval_s)

    def _linger(self) -> None:
        """Wait until the oldest pending record is ``linger_s`` old, then read what came."""
        if self.stop_event.is_set() or len(self._pending) >= self.config.max_records:
            return
        remaining = self.config.linger_s - (time.time() - self._pending[0].queued_at)
        if remaining > 0:
            self.stop_event.wait(remaining)
            self._read_more()

    def _read_more(self) -> None:
        room = self.config.max_records - len(self._pending)
        if room <= 0:
            return
        chunk = self.journal.read_from(self._offset, room)
        self._offset = chunk.end
        self._pending += [Item(op) for op in chunk.ops]

    def _flush(self) -> bool:
        """One pass over the pending records; False when nothing could be written."""
        self._dispatch_artifacts()
        if self._pending and is_barrier(self._pending[0].op):
            progressed = self.attempt(self._pending[0], self.recorder.apply, force=False)
            if progressed:
                self._pending.pop(0)
            return progressed
        lanes, resolve_error = self._resolve_lanes()
        results = self._write_lanes(lanes)
        progressed = self._settle(lanes, results, resolve_error)
        self._dispatch_artifacts()
        return progressed

    def _resolve_lanes(self) -> tuple[dict[str, list[Item]], BaseException | None]:
        """The run records up to the first artifact record or barrier, by run, in order;
        a record whose run cannot be made is set aside (and leaves the queue)."""
        lanes: dict[str, list[Item]] = {}
        aside: set[int] = set()
        try:
            return lanes, self._resolve_into(lanes, aside)
        finally:
            self._pending = [i for i in self._pending if id(i) not in aside]

    def _resolve_into(self, lanes: dict[str, list[Item]], aside: set[int]) -> BaseException | None:
        for item in self._pending:
            if is_artifact(item.op) or is_barrier(item.op):
                break
            try:
                run_id = self.recorder.resolve(item.op)
            except Exception as err:
                self.recorder.runs.write_failed()
                if is_transient(err) and item.strikes < self.config.max_strikes:
                    return err  # this and every later record wait for the next flush
                self._set_aside(item, err, item.strikes >= self.config.max_strikes)
                aside.add(id(item))
                continue
            lanes.setdefault(run_id, []).append(item)
        return None

    def _write_lanes(self, lanes: dict[str, list[Item]]) -> dict[str, LaneResult]:
        if len(lanes) <= 1 or self.config.workers == 1:
            return {run_id: self._write_lane(run_id, items) for run_id, items in lanes.items()}
        futures = {
            run_id: self._pool.submit(self._write_lane, run_id, items)
            for run_id, items in lanes.items()
        }
        return {run_id: future.result() for run_id, future in futures.items()}

    def _write_lane(self, run_id: str, items: list[Item]) -> LaneResult:
        cpu = time.thread_time()
        try:
            force = items[0].strikes >= self.config.max_strikes
            if not force:
                try:
                    self.recorder.write_run(run_id, [i.op for i in items])
                    return LaneResult(done=items, written=len(items))
                except Exception as err:
                    if is_transient(err):
                        return LaneResult(transient=err)
            return self._isolate(run_id, items, force)
        finally:
            if threading.current_thread() is not self._thread:
                self.stats.add_cpu(time.thread_time() - cpu)

    def _isolate(self, run_id: str, items: list[Item], force: bool) -> LaneResult:
        """The run's records one by one: the one that fails is set aside, the rest go on."""
        result = LaneResult()
        for item in items:
            try:
                self.recorder.write_run(run_id, [item.op])
                result.written += 1
            except Exception as err:
                if is_transient(err) and not force:
                    result.transient = err
                    return result
                self._set_aside(item, err, force)
            result.done.append(item)
        return result

    def _settle(
        self,
        lanes: dict[str, list[Item]],
        results: dict[str, LaneResult],
        resolve_error: BaseException | None,
    ) -> bool:
        done = {id(i) for r in results.values() for i in r.done}
        self.stats.add_written(sum(r.written for r in results.values()))
        errors = [r.transient for r in results.values() if r.transient is not None]
        if resolve_error is not None:
            errors.append(resolve_error)
        if errors and not done:
            self.health.down(errors[0])
            return False
        self.health.up()
        # Something got through, so the store answers: what failed anyway is on its way to
        # being set aside.
        for run_id, result in results.items():
            if result.transient is not None:
                lanes[run_id][len(result.done)].strikes += 1
        self._pending = [i for i in self._pending if id(i) not in done]
        if resolve_error is not None and self._pending:
            self._pending[0].strikes += 1
        return True

    def _dispatch_artifacts(self) -> None:
        """Artifact records at the head of the queue: every record before them is written."""
        while self._pending and is_artifact(self._pending[0].op):
            item = self._pending[0]
            try:
                self.recorder.resolve(item.op)  # here, so that only this thread makes runs
            except Exception as err:
                self.recorder.runs.write_failed()
                if is_transient(err):
                    return
                self._set_aside(item, err)
            else:
                self._artifacts.put(item)
            self._pending.pop(0)

    def attempt(self, item: Item, action: Callable[[Operation], Any], force: bool) -> bool:
        """``action(item.op)``: True if done or set aside, False if it must wait."""
        cpu = time.thread_time()
        try:
            action(item.op)
        except Exception as err:
            self.recorder.runs.write_failed()
            if is_transient(err) and not force:
                if self.stats.last_ok < time.monotonic() - self.config.retry_interval_s:
                    self.health.down(err)
                return False
            self._set_aside(item, err, force)
            return True
        else:
            self.stats.add_written(1)
            return True
        finally:
            if threading.current_thread() is not self._thread:
                self.stats.add_cpu(time.thread_time() - cpu)

    def _set_aside(self, item: Item, err: BaseException, strikes: bool = False) -> None:
        """One line naming the record and the error; the record goes to the dead letters."""
        line = error_line(err)
        if strikes:
            line += f" (failed {item.strikes} times while the store took other writes)"
        self.dead_letters.add(item.op, line)
        self.echo(
            f"mlflow: could not write {describe(item.op, self.recorder.sweep.sweep_id)}: "
            f"{line}; set aside in {self.dead_letters.path}, retried by --resume"
        )

    # ------------------------------------------------------------------ lag and the journal

    def _watch_lag(self) -> None:
        records, seconds = self.lag()
        self.stats.worst_lag_records = max(self.stats.worst_lag_records, records)
        self.stats.worst_lag_s = max(self.stats.worst_lag_s, seconds)
        now = time.monotonic()
        if seconds >= self.config.behind_s and now - self._last_report >= self.config.report_s:
            self._last_report = now
            self.echo(
                f"mlflow: writer {records} records ({seconds:.0f}s) behind; "
                f"they wait in {self.journal.path}"
            )

    def _tidy_journal(self) -> None:
        """Empty the journal once everything in it is written; rewrite it without its
        written head when that grows large while the writer never quite catches up."""
        if not self._pending and self._artifacts.idle():
            if self.journal.clear_if_read(self._offset):
                self._offset = 0
        elif self._offset >= COMPACT_BYTES:
            keep = [i.op for i in self._artifacts.snapshot() + self._pending]
            self._offset = self.journal.compact(self._offset, keep)
