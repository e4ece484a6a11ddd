"""Applying a sweep's records to MLflow runs, each exactly once.

Every write is a *record* (an operation): a JSON-able dict naming the run it belongs to by a
logical key (see :mod:`ray_jobs.tracking.keys`), never by an MLflow run id; :class:`RunResolver`
turns the key into a run. Each record may be applied more than once (a retried trial
re-reports, a resumed driver replays its journal) and leaves the store as if applied once:
epochs at or below the run's last logged step are skipped, and a closed run is not written
again.

Records come in two kinds. *Run records* (run starts, epochs, closes, status tags) only touch
their own run's metrics and tags: :meth:`Recorder.write_run` coalesces a run's queued run
records into one ``log_batch``. *Artifact records* (figures, logged models, the sweep's end
report) write files and read the store; they are applied one at a time by
:meth:`Recorder.apply`, on a thread of their own, so a slow figure never delays a metric.

Longer than 300 lines because it holds one apply method per record kind, and the
exactly-once rules (skipped steps, closed runs, keys) must read the same in all of them.
"""

from __future__ import annotations

import json
import posixpath
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_jobs.tracking._errors import record_run
from ray_jobs.tracking._models import log_network_model, logged_model_id
from ray_jobs.tracking._renderer import FigureRenderers
from ray_jobs.tracking._runs import (
    MAX_METRICS_PER_BATCH,
    RunResolver,
    log_metrics,
    set_tags,
)
from ray_jobs.tracking.keys import (
    CLOSED_TAG,
    MODEL_TAG,
    TRAINED_BY_TAG,
    net_key,
    sweep_key,
    trial_key,
)

Operation = dict[str, Any]

# Written one at a time on the artifact thread: files, logged models, reads of the store.
ARTIFACT_OPS = frozenset({"net_figures", "trial_figures", "net_model", "sweep_end"})
# MLflow refuses a log_batch request above 1 MB; a metric is ~100 bytes of JSON, so this
# keeps well under it without measuring every request.
MAX_BATCH_BYTES = 900_000
MAX_TAGS_PER_BATCH = 100


def is_net0(op: Operation) -> bool:
    return op["phase"] == "search" and op["round"] == 0


def is_artifact(op: Operation) -> bool:
    return op["op"] in ARTIFACT_OPS


def is_sweep_end(op: Operation) -> bool:
    return op["op"] == "sweep_end"


def is_barrier(op: Operation) -> bool:
    """A failed trial's end writes to every open net run of the trial: it waits until the
    records before it are written, and the records after it wait for it."""
    return op["op"] == "trial_end" and op.get("status") != "done"


def op_stamp(op: Operation) -> int:
    """The record's timestamp in ms, the same on every retry (so a retried batch that had
    reached the store adds no second copy: MLflow keeps identical metrics once)."""
    return int(op.get("time_ms") or 1000 * op.get("queued_at", time.time()))


@dataclass
class RunBatch:
    """What one run's queued records add up to: one ``log_batch`` and maybe a close."""

    run_id: str
    key: str
    metrics: list[Any] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    last_step: int = 0
    node: str | None = None
    status: str | None = None  # set_terminated with this, after the batch
    ended_at: int | None = None  # the end time (ms) set_terminated gave the run
    trial_nodes: list[tuple[str, str]] = field(default_factory=list)


def metric_size(metric: Any) -> int:
    return len(metric.key) + 80  # key, value, timestamp, step and JSON punctuation


def batch_requests(metrics: list[Any], tags: list[Any]) -> Iterator[tuple[list, list]]:
    """``log_batch`` requests within MLflow's limits; the tags ride with the last one, so a
    run's closed mark is written only once every metric before it is."""
    current: list[Any] = []
    size = 0
    for metric in metrics:
        if len(current) >= MAX_METRICS_PER_BATCH or size + metric_size(metric) > MAX_BATCH_BYTES:
            yield current, []
            current, size = [], 0
        current.append(metric)
        size += metric_size(metric)
    for start in range(0, max(len(tags), 1), MAX_TAGS_PER_BATCH):
        yield current, tags[start : start + MAX_TAGS_PER_BATCH]
        current = []


# What the sweep run gets when the sweep ends, beside its trial count: given the client, the
# experiment, the sweep id, the store's URI and a scratch folder, metrics, (file, artifact
# folder) pairs to attach, and tables (artifact file -> columns) for ``log_table``. The reader
# side supplies the sweep's front and comparison (``ray_jobs.results.sweep_report``); this
# side only writes what it is handed.
SweepEndReport = Callable[
    [Any, str, str, str, Path],
    tuple[dict[str, float], list[tuple[Path, str]], dict[str, dict[str, list[Any]]]],
]

# What the sweep run logs after each completed trial, at step = trials completed so far: given
# the client, the experiment and the sweep id, metrics (the reader side supplies the front's
# hypervolume, ``ray_jobs.results.trial_end_hypervolume``).
TrialEndReport = Callable[[Any, str, str, list[str]], dict[str, float]]


class Recorder:
    """Turns operations into sweep, trial and net[i] runs."""

    def __init__(
        self,
        runs: RunResolver,
        sweep_end_report: SweepEndReport | None = None,
        trial_end_report: TrialEndReport | None = None,
        drawers: int = 1,
    ) -> None:
        self.runs = runs
        self.sweep_end_report = sweep_end_report
        self.trial_end_report = trial_end_report
        self.figures = FigureRenderers(drawers)
        # The sweep run's progress metrics, one trial's end at a time: two of them logged
        # at once could both try to create the same latest-metric row of the sweep run.
        self._sweep_run_lock = threading.Lock()

    def close(self) -> None:
        """Stop the figure process (the writer calls this once its artifact lane is done)."""
        self.figures.close()

    @property
    def sweep(self) -> Any:
        return self.runs.sweep

    @property
    def client(self) -> Any:
        return self.runs.client

    # ------------------------------------------------------------------ routing

    def resolve(self, op: Operation) -> str:
        """The id of the run ``op`` writes to, creating it (and its parents) if new.

        The writer calls this for every record in journal order on one thread, so a trial's
        run exists (with its params) before any of its networks' runs, and no two threads
        ever race to create one run."""
        kind = op["op"]
        if kind == "sweep_start" or kind == "sweep_end":
            return self.runs.sweep_run()
        if "net" in op:
            return self.runs.net_run(op)
        return self.runs.trial_run(op["trial"], op if kind == "trial_start" else None)

    def apply(self, op: Operation) -> None:
        """One record on its own: artifact records, a failed trial's end, and run records
        replayed one by one to find the one a batch failed on."""
        try:
            if is_artifact(op) or is_barrier(op):
                getattr(self, f"_apply_{op['op']}")(op)
            else:
                self.write_run(self.resolve(op), [op])
        except Exception:
            self.runs.write_failed()
            raise

    # ------------------------------------------------------------------ run records

    def write_run(self, run_id: str, ops: list[Operation]) -> None:
        """A run's queued run records, in order, as one ``log_batch`` (more only past
        MLflow's per-request limits) and, if one closes the run, ``set_terminated``."""
        batch = RunBatch(run_id, record_run(ops[0], self.sweep.sweep_id))
        batch.last_step = self.runs.state.last_step.get(batch.key, 0)
        batch.node = self.runs.state.node_ip.get(batch.key)
        for op in ops:
            self._plan(batch, op)
        try:
            self._send(batch)
        except Exception:
            self.runs.write_failed()
            raise
        self._commit(batch)

    def _closed(self, batch: RunBatch) -> bool:
        return batch.key in self.runs.state.closed or batch.status is not None

    def _plan(self, batch: RunBatch, op: Operation) -> None:
        kind = op["op"]
        if kind == "trial_status":
            batch.tags["status"] = op["status"]
        elif kind == "epoch":
            self._plan_epoch(batch, op)
        elif kind == "net_end" and not self._closed(batch):
            tags = {"profile": op["profile"], "end_reason": op["end_reason"]}
            if op.get("trained_by"):
                tags[TRAINED_BY_TAG] = op["trained_by"]
            self._plan_close(batch, op, op["epoch"], tags, "FINISHED")
        elif kind == "trial_end" and not self._closed(batch):
            tags = {"status": op["status"], "delta_reason": op.get("reason", "")}
            if op.get("final_widths") is not None:
                tags["final_widths"] = json.dumps(op["final_widths"])
            self._plan_close(batch, op, 0, tags, "FINISHED")
        # sweep_start and trial_start only make their run exist: resolve() did that.

    def _plan_epoch(self, batch: RunBatch, op: Operation) -> None:
        from mlflow.entities import Metric

        if self._closed(batch) or op["epoch"] <= batch.last_step:
            return  # already logged before a retry or restore re-reported it
        stamp, step = op_stamp(op), op["epoch"]
        batch.metrics += [
            Metric(k, float(v), stamp, step) for k, v in op["metrics"].items() if v is not None
        ]
        batch.last_step = step
        node = op.get("node_ip")
        if node and node != batch.node:  # rides in the metrics' batch: no extra commit
            batch.tags["node_ip"] = batch.node = node
            batch.trial_nodes.append((op["trial"], node))

    def _plan_close(
        self, batch: RunBatch, op: Operation, step: int, tags: dict[str, str], status: str
    ) -> None:
        """Final metrics, tags and the closed mark in the run's last request."""
        from mlflow.entities import Metric

        stamp = op_stamp(op)
        batch.metrics += [
            Metric(k, float(v), stamp, step) for k, v in op["metrics"].items() if v is not None
        ]
        batch.tags.update({**tags, CLOSED_TAG: "true"})
        batch.status = status

    def _send(self, batch: RunBatch) -> None:
        from mlflow.entities import RunTag

        tags = [RunTag(k, str(v)) for k, v in batch.tags.items()]
        if batch.metrics or tags:
            for metrics, some_tags in batch_requests(batch.metrics, tags):
                self.client.log_batch(batch.run_id, metrics=metrics, tags=some_tags)
        if batch.status is not None:
            # The end time is chosen here, not by the client, so that this process knows
            # the exact value the store orders ended trials by (trials_ended_through).
            batch.ended_at = int(time.time() * 1000)
            self.client.set_terminated(batch.run_id, batch.status, end_time=batch.ended_at)
        for trial_id, node in batch.trial_nodes:
            self._tag_trial_node(trial_id, node)

    def _commit(self, batch: RunBatch) -> None:
        state = self.runs.state
        state.last_step[batch.key] = batch.last_step
        if batch.node is not None:
            state.node_ip[batch.key] = batch.node
        if batch.status is not None:
            state.closed.add(batch.key)
            self.runs.trial_ends.note_closed(batch.key, batch.ended_at)

    def _tag_trial_node(self, trial_id: str, node: str) -> None:
        """The trial run's ``node_ip``, written only when the trial moved to another node."""
        key = trial_key(self.sweep.sweep_id, trial_id)
        if self.runs.state.node_ip.get(key) != node:
            trial_run = self.runs.state.run_ids[key]
            set_tags(self.client, trial_run, {"node_ip": node})
            self.runs.state.node_ip[key] = node

    # ------------------------------------------------------------------ artifact records

    def _apply_net_figures(self, op: Operation) -> None:
        """``widths.json`` for every network, and net0's Fig. 2."""
        run_id = self.runs.net_run(op)
        if is_net0(op):
            self._log_layer_ad_plot(run_id, op)
        self.client.log_dict(
            run_id,
            {
                "round": op["round"],
                "phase": op["phase"],
                "widths": op["widths"],
                "net0_widths": op["net0_widths"],
            },
            "widths.json",
        )

    def _apply_trial_figures(self, op: Operation) -> None:
        """The sweep run's progress after a trial ended, and a finished trial's figures."""
        self._log_trial_end_report(op["trial"])
        if op.get("done"):
            run_id = self.runs.trial_run(op["trial"])
            self._log_trial_plot(run_id, op["trial"])
            if op.get("fig3"):
                self._log_fig3(run_id, op["trial"], op["fig3"])

    def _log_layer_ad_plot(self, run_id: str, op: Operation) -> None:
        """The paper's Fig. 2 (every layer's AD against the epoch), for net0 only.

        Later networks get no PNG: MLflow charts their per-epoch ``ad/layer_NN`` metrics
        natively, and drawing one figure per network was half the writer's CPU, taken from
        the cores the trials train on (BENCHMARKS.md, sweep overhead).
        """
        with tempfile.TemporaryDirectory(prefix="adprune-mlflow-") as folder:
            plot = self.figures.draw(
                "plot_net_ad",
                Path(folder) / "ad_vs_epoch.png",
                f"{op['trial']} {op['net']}",
                op["ad_history"],
                op["layer_ad_history"],
            )
            self.client.log_artifact(run_id, str(plot))

    def _apply_net_model(self, op: Operation) -> None:
        """The network's weights as an MLflow model of its run, unless one is there."""
        run_id = self.runs.net_run(op)
        key = net_key(self.sweep.sweep_id, op["trial"], op["net"])
        run = self.client.get_run(run_id)
        experiment_id = self.runs.experiment_id
        model_id = logged_model_id(self.client, experiment_id, run, key)
        if model_id is None:
            model_id = log_network_model(
                self.client, self.sweep.tracking_uri, experiment_id, run_id, key, op
            )
        if not run.data.tags.get(MODEL_TAG):
            set_tags(self.client, run_id, {MODEL_TAG: f"models:/{model_id}"})
        Path(op["path"]).unlink(missing_ok=True)  # logged: the staged copy is not needed

    def _apply_trial_end(self, op: Operation) -> None:
        """A trial that failed: its open networks fail too, then the trial run closes."""
        run_id = self.runs.trial_run(op["trial"])
        key = trial_key(self.sweep.sweep_id, op["trial"])
        if key in self.runs.state.closed:
            return
        self._fail_open_nets(op["trial"], op.get("reason", ""))
        batch = RunBatch(run_id, key)
        tags = {"status": op["status"], "error": op.get("reason", "")}
        self._plan_close(batch, op, 0, tags, "FAILED")
        self._send(batch)
        self._commit(batch)

    def _log_trial_end_report(self, trial_id: str) -> None:
        """The sweep run's progress metrics over the trials ended so far, at step = their
        number."""
        if self.trial_end_report is None:
            return
        s = self.sweep
        with self._sweep_run_lock:
            ended = self.runs.trials_ended_through(trial_id)
            metrics = self.trial_end_report(self.client, s.experiment, s.sweep_id, ended)
            log_metrics(self.client, self.runs.sweep_run(), metrics, len(ended))

    def _log_trial_plot(self, run_id: str, trial_id: str) -> None:
        curves = []
        for run in self.runs.trial_net_runs(trial_id):
            history = self.client.get_metric_history(run.info.run_id, "ad_total")
            curve = [m.value for m in sorted(history, key=lambda m: m.step)]
            curves.append((run.info.run_name, curve))
        with tempfile.TemporaryDirectory(prefix="adprune-mlflow-") as folder:
            plot = self.figures.draw(
                "plot_trial_ad",
                Path(folder) / "ad_all_rounds.png",
                f"{trial_id}: total AD, every round",
                curves,
            )
            self.client.log_artifact(run_id, str(plot))

    def _log_fig3(self, run_id: str, trial_id: str, maps: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory(prefix="adprune-mlflow-") as folder:
            plot = self.figures.draw(
                "plot_activation_maps",
                Path(folder) / "activation_maps.png",
                f"{trial_id}: mean activation per layer, first test image",
                maps,
            )
            self.client.log_artifact(run_id, str(plot))

    def _fail_open_nets(self, trial_id: str, reason: str) -> None:
        for run in self.runs.trial_net_runs(trial_id):
            if run.data.tags.get(CLOSED_TAG) != "true" and run.info.status == "RUNNING":
                set_tags(self.client, run.info.run_id, {"error": reason})
                self.client.set_terminated(run.info.run_id, "FAILED")

    def _log_table_once(self, run_id: str, artifact_file: str, columns: dict[str, list]) -> None:
        # log_table appends to a table already there, so a retried sweep_end (the store failed
        # after the table was written) would double its rows.
        folder = posixpath.dirname(artifact_file) or None
        if any(f.path == artifact_file for f in self.client.list_artifacts(run_id, folder)):
            return
        self.client.log_table(run_id, data=columns, artifact_file=artifact_file)

    def _apply_sweep_end(self, op: Operation) -> None:
        """The trial count and, from the sweep-end report, the front's figures and files."""
        run_id = self.runs.sweep_run()
        key = sweep_key(self.sweep.sweep_id)
        if key in self.runs.state.closed:
            return  # a finished sweep resumed again: its summary is already there
        metrics: dict[str, float] = {"trials": op["trials"], **op.get("metrics", {})}
        with tempfile.TemporaryDirectory(prefix="adprune-front-") as folder:
            if self.sweep_end_report is not None:
                s = self.sweep
                report, files, tables = self.sweep_end_report(
                    self.client, s.experiment, s.sweep_id, s.tracking_uri, Path(folder)
                )
                metrics.update(report)
                for path, artifact_folder in files:
                    self.client.log_artifact(run_id, str(path), artifact_folder)
                for artifact_file, columns in tables.items():
                    self._log_table_once(run_id, artifact_file, columns)
        done = op["status"] == "done"
        log_metrics(self.client, run_id, metrics, 0)
        tags = {"status": op["status"], **({CLOSED_TAG: "true"} if done else {})}
        set_tags(self.client, run_id, tags)
        self.client.set_terminated(run_id, "FINISHED" if done else "FAILED")
        if done:
            self.runs.state.closed.add(key)
