"""MLflow records of a sweep, written from the Tune driver: sweep -> trial -> net[i] runs.

Every write is an *operation*: a JSON-able dict naming the run it belongs to by a logical key
(``sweep_id``, ``sweep_id/trial``, ``sweep_id/trial/net1``), never by an MLflow run id. A key
becomes a run id at write time, by the in-memory map, else by the ``adprune.key`` tag in the
store, else by creating the run. That lookup is what makes every write exactly-once across
trial retries and ``--resume``: a retried trial re-reports epochs into the run that already
exists, and epochs at or below the run's last logged step are skipped.

When the store does not answer, operations are queued in a JSON-lines file in the sweep's
folder and written, in order, once it answers again (or by the next ``--resume``).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ray_jobs.tracking import ensure_experiment, first_line, make_client

KIND_TAG = "adprune.kind"
KEY_TAG = "adprune.key"
CLOSED_TAG = "adprune.closed"
PARENT_TAG = "mlflow.parentRunId"
QUEUE_FILE = "mlflow-queue.jsonl"

# MLflow refuses batches above these sizes (REST API limits).
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

# Errors that retrying cannot fix: the operation is reported and dropped, not queued forever.
PERMANENT_ERROR_CODES = (
    "INVALID_PARAMETER_VALUE",
    "BAD_REQUEST",
    "RESOURCE_DOES_NOT_EXIST",
    "INVALID_STATE",
    "PERMISSION_DENIED",
)


def sweep_key(sweep_id: str) -> str:
    return sweep_id


def trial_key(sweep_id: str, trial_id: str) -> str:
    return f"{sweep_id}/{trial_id}"


def net_key(sweep_id: str, trial_id: str, net: str) -> str:
    return f"{sweep_id}/{trial_id}/{net}"


def net_name(phase: str, round_index: int) -> str:
    return "final" if phase == "final" else f"net{round_index}"


def layer_metric(index: int) -> str:
    return f"ad/layer_{index:02d}"


def param_value(value: Any) -> str:
    if isinstance(value, list | dict | tuple) or value is None:
        return json.dumps(value)
    return str(value)


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def is_permanent(err: BaseException) -> bool:
    return getattr(err, "error_code", None) in PERMANENT_ERROR_CODES


@dataclass
class SweepInfo:
    """What the sweep run records; fixed at launch and kept across ``--resume``."""

    sweep_id: str
    name: str
    experiment: str
    tracking_uri: str
    params: dict[str, Any]
    search_keys: list[str]
    arch: str
    dataset: str
    storage: str = ""


@dataclass
class RecorderState:
    """The run-id map and progress marks; saved with Tune's callback state."""

    run_ids: dict[str, str] = field(default_factory=dict)
    last_step: dict[str, int] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    node_ip: dict[str, str] = field(default_factory=dict)


class Recorder:
    """Applies operations to an MLflow store, exactly once, queueing them while it is down."""

    def __init__(
        self,
        sweep: SweepInfo,
        queue_dir: Path,
        echo: Callable[[str], None] = click.echo,
        retry_interval_s: float = 15.0,
        keep_queue_file: bool = True,
    ) -> None:
        self.sweep = sweep
        # False when a journal owned by the caller already holds every unwritten operation.
        self.keep_queue_file = keep_queue_file
        self.queue_path = Path(queue_dir) / QUEUE_FILE
        self.echo = echo
        self.retry_interval_s = retry_interval_s
        self.state = RecorderState()
        self.pending: list[dict[str, Any]] = []
        self._client: Any = None
        self._experiment_id: str | None = None
        self._down_since: float | None = None
        self._last_attempt = 0.0
        # True once this recorder created the sweep run itself, with no failed write since:
        # then no run of this sweep can exist that is not in the map, and new trial and
        # net runs skip the store search (~50 ms each on sqlite). A resumed driver, or one
        # whose write failed after the store may have applied it, searches as before.
        self._owns_every_run = False
        self.writes = 0  # operations applied, for the closing line
        self.busy_s = 0.0  # wall time spent writing to the store
        # CPU time of those writes: on cores shared with trials the wall time mostly
        # measures waiting for a core, the CPU time what logging takes from the trials.
        self.busy_cpu_s = 0.0

    # ------------------------------------------------------------------ pickling

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with the experiment; a live client and its pool do not travel.
        state = dict(self.__dict__)
        state.update(
            _client=None, _experiment_id=None, pending=[], echo=None, _owns_every_run=False
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Absent from sweeps pickled by earlier versions.
        self.busy_cpu_s, self._owns_every_run = 0.0, False
        self.__dict__.update(state)
        self.echo = click.echo

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.sweep.tracking_uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = ensure_experiment(
                self.client, self.sweep.experiment, self.sweep.tracking_uri
            )
        return self._experiment_id

    # ------------------------------------------------------------------ queue

    def load_queue(self) -> int:
        """Operations a previous driver could not write; they go first."""
        if not self.queue_path.exists():
            return 0
        queued = []
        for line in self.queue_path.read_text().splitlines():
            try:
                queued.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a killed driver; its epoch is re-reported
        self.pending = queued + self.pending
        return len(queued)

    def submit(self, op: dict[str, Any]) -> None:
        self.pending.append(op)
        if self._down_since is not None:
            if self.keep_queue_file:
                self._append_to_queue(op)
            if time.monotonic() - self._last_attempt < self.retry_interval_s:
                return
        self.flush()

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
                if is_permanent(err):
                    self._owns_every_run = False
                    self.echo(f"mlflow: dropped {op['op']} record: {first_line(err)}")
                    self.pending.pop(0)
                    continue
                self._went_down(err)
                return False
            self.pending.pop(0)
            self.writes += 1
        self._came_back()
        return True

    def _append_to_queue(self, op: dict[str, Any]) -> None:
        with self.queue_path.open("a") as handle:
            handle.write(json.dumps(op) + "\n")

    def _rewrite_queue(self) -> None:
        self.queue_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.queue_path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(op) + "\n" for op in self.pending))
        tmp.replace(self.queue_path)  # atomic: a killed driver leaves the old or the new queue

    def _went_down(self, err: BaseException) -> None:
        self._owns_every_run = False  # the failed write may have reached the store
        if self.keep_queue_file:
            self._rewrite_queue()
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._client = None  # reconnect from scratch when it answers again
            self.echo(
                f"mlflow: store {self.sweep.tracking_uri} not answering ({first_line(err)}); "
                f"training goes on, records are queued in {self.queue_path} "
                f"and retried every {self.retry_interval_s:g}s"
            )

    def _came_back(self) -> None:
        if self.keep_queue_file and self.queue_path.exists():
            self.queue_path.unlink()
        if self._down_since is not None:
            self.echo(
                f"mlflow: store answering again after "
                f"{time.monotonic() - self._down_since:.0f}s; queued records written"
            )
            self._down_since = None

    # ------------------------------------------------------------------ runs

    def find_run(self, key: str) -> Any:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{KEY_TAG}` = '{key}'",
            max_results=10,
            order_by=["attributes.start_time ASC"],
        )
        return runs[0] if runs else None

    def resolve(
        self,
        key: str,
        kind: str,
        name: str,
        parent_key: str | None,
        tags: dict[str, str],
        params: dict[str, Any],
    ) -> str:
        """The run for ``key``: known, found by tag, or created (with its params) now."""
        if key in self.state.run_ids:
            return self.state.run_ids[key]
        run = None if self._owns_every_run else self.find_run(key)
        if run is None:
            all_tags = {**tags, KEY_TAG: key, KIND_TAG: kind}
            if parent_key is not None:
                all_tags[PARENT_TAG] = self.state.run_ids[parent_key]
            run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
            self.state.last_step[key] = 0
            if kind == "sweep":
                self._owns_every_run = True
        else:
            self._adopt(key, run)
        run_id = run.info.run_id
        self.log_params(run_id, params)  # re-logging an identical param is a no-op
        self.state.run_ids[key] = run_id
        return run_id

    def _adopt(self, key: str, run: Any) -> None:
        """Pick up a run an earlier driver (or attempt) created: its last step and state."""
        if run.data.tags.get(CLOSED_TAG) == "true":
            self.state.closed.add(key)
        if run.data.tags.get(KIND_TAG) == "net":
            history = self.client.get_metric_history(run.info.run_id, "ad_total")
            self.state.last_step[key] = max((m.step for m in history), default=0)
        if run.info.status != "RUNNING" and key not in self.state.closed:
            self.client.update_run(run.info.run_id, status="RUNNING")

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, param_value(v)) for k, v in params.items()]
        for batch in chunks(items, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=batch)

    def log_metrics(
        self, run_id: str, metrics: dict[str, float], step: int, timestamp_ms: int | None = None
    ) -> None:
        from mlflow.entities import Metric

        stamp = timestamp_ms or int(time.time() * 1000)
        items = [Metric(k, float(v), stamp, step) for k, v in metrics.items() if v is not None]
        for batch in chunks(items, MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=batch)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    # ------------------------------------------------------------------ the three levels

    def sweep_run(self) -> str:
        s = self.sweep
        return self.resolve(
            sweep_key(s.sweep_id),
            "sweep",
            s.name,
            None,
            {
                "sweep": s.name,
                "sweep_id": s.sweep_id,
                "arch": s.arch,
                "dataset": s.dataset,
                "search_keys": json.dumps(s.search_keys),
                "storage": s.storage,
            },
            s.params,
        )

    def trial_run(self, trial_id: str, op: dict[str, Any] | None = None) -> str:
        s = self.sweep
        parent = sweep_key(s.sweep_id)
        self.sweep_run()
        searched = (op or {}).get("searched", {})
        label = " ".join(f"{k.split('.')[-1]}={v}" for k, v in searched.items())
        return self.resolve(
            trial_key(s.sweep_id, trial_id),
            "trial",
            f"{trial_id} {label}".strip(),
            parent,
            {
                "sweep": s.name,
                "sweep_id": s.sweep_id,
                "trial_id": trial_id,
                "arch": s.arch,
                "dataset": s.dataset,
                "search_keys": json.dumps(s.search_keys),
                "status": "running",
            },
            (op or {}).get("params", {}),
        )

    def net_run(self, op: dict[str, Any]) -> str:
        s = self.sweep
        trial_id, net = op["trial"], op["net"]
        self.trial_run(trial_id)
        return self.resolve(
            net_key(s.sweep_id, trial_id, net),
            "net",
            net if op["phase"] == "search" else f"final (net{op['round']})",
            trial_key(s.sweep_id, trial_id),
            {
                "sweep": s.name,
                "sweep_id": s.sweep_id,
                "trial_id": trial_id,
                "net": net,
                "phase": op["phase"],
                "arch": s.arch,
                "dataset": s.dataset,
            },
            {"round": op["round"], "phase": op["phase"], "widths": op["widths"]},
        )

    # ------------------------------------------------------------------ operations

    def apply(self, op: dict[str, Any]) -> None:
        handler = getattr(self, f"_apply_{op['op']}")
        handler(op)

    def _apply_sweep_start(self, op: dict[str, Any]) -> None:
        self.sweep_run()

    def _apply_trial_start(self, op: dict[str, Any]) -> None:
        self.trial_run(op["trial"], op)

    def _apply_trial_status(self, op: dict[str, Any]) -> None:
        self.set_tags(self.trial_run(op["trial"]), {"status": op["status"]})

    def _apply_epoch(self, op: dict[str, Any]) -> None:
        run_id = self.net_run(op)
        key = net_key(self.sweep.sweep_id, op["trial"], op["net"])
        if op["epoch"] <= self.state.last_step.get(key, 0):
            return  # already logged before a retry or restore re-reported it
        self.log_metrics(run_id, op["metrics"], op["epoch"], op.get("time_ms"))
        self.state.last_step[key] = op["epoch"]
        node = op.get("node_ip")
        if node and self.state.node_ip.get(key) != node:
            self.set_tags(run_id, {"node_ip": node})
            self.set_tags(self.trial_run(op["trial"]), {"node_ip": node})
            self.state.node_ip[key] = node

    def _apply_net_end(self, op: dict[str, Any]) -> None:
        from ray_jobs.plots import plot_net_ad

        run_id = self.net_run(op)
        key = net_key(self.sweep.sweep_id, op["trial"], op["net"])
        if key in self.state.closed:
            return
        label = op["net"] if op["phase"] == "search" else f"final (net{op['round']})"
        with tempfile.TemporaryDirectory(prefix="adprune-mlflow-") as folder:
            plot = plot_net_ad(
                Path(folder) / "ad_vs_epoch.png",
                f"{op['trial']} {label}",
                op["ad_history"],
                op["layer_ad_history"],
            )
            self.client.log_artifact(run_id, str(plot))
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
        # Metrics and the closed mark in one batch: a crash leaves both or neither.
        from mlflow.entities import Metric, RunTag

        stamp = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), stamp, op["epoch"])
            for k, v in op["metrics"].items()
            if v is not None
        ]
        tags = [
            RunTag("profile", op["profile"]),
            RunTag("end_reason", op["end_reason"]),
            RunTag(CLOSED_TAG, "true"),
        ]
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        self.client.set_terminated(run_id, "FINISHED")
        self.state.closed.add(key)

    def _apply_trial_end(self, op: dict[str, Any]) -> None:
        run_id = self.trial_run(op["trial"])
        key = trial_key(self.sweep.sweep_id, op["trial"])
        if key in self.state.closed:
            return
        if op["status"] == "done":
            self._log_trial_plot(run_id, op["trial"])
        else:
            self._fail_open_nets(op["trial"], op.get("reason", ""))
        from mlflow.entities import Metric, RunTag

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, float(v), stamp, 0) for k, v in op["metrics"].items()]
        tags = [
            RunTag("status", op["status"]),
            RunTag("delta_reason" if op["status"] == "done" else "error", op.get("reason", "")),
            RunTag(CLOSED_TAG, "true"),
        ]
        if op.get("final_widths") is not None:
            tags.append(RunTag("final_widths", json.dumps(op["final_widths"])))
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        self.client.set_terminated(run_id, "FINISHED" if op["status"] == "done" else "FAILED")
        self.state.closed.add(key)

    def _trial_net_runs(self, trial_id: str) -> list[Any]:
        parent = self.state.run_ids[trial_key(self.sweep.sweep_id, trial_id)]
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{KIND_TAG}` = 'net'",
            max_results=1000,
        )
        order = {"search": 0, "final": 1}
        return sorted(
            runs,
            key=lambda r: (order.get(r.data.tags.get("phase", ""), 2), int(r.data.params["round"])),
        )

    def _log_trial_plot(self, run_id: str, trial_id: str) -> None:
        from ray_jobs.plots import plot_trial_ad

        curves = []
        for run in self._trial_net_runs(trial_id):
            history = self.client.get_metric_history(run.info.run_id, "ad_total")
            curve = [m.value for m in sorted(history, key=lambda m: m.step)]
            curves.append((run.info.run_name, curve))
        with tempfile.TemporaryDirectory(prefix="adprune-mlflow-") as folder:
            plot = plot_trial_ad(
                Path(folder) / "ad_all_rounds.png", f"{trial_id}: total AD, every round", curves
            )
            self.client.log_artifact(run_id, str(plot))

    def _fail_open_nets(self, trial_id: str, reason: str) -> None:
        for run in self._trial_net_runs(trial_id):
            if run.data.tags.get(CLOSED_TAG) != "true" and run.info.status == "RUNNING":
                self.set_tags(run.info.run_id, {"error": reason})
                self.client.set_terminated(run.info.run_id, "FAILED")

    def _apply_sweep_end(self, op: dict[str, Any]) -> None:
        """Trial count, best accuracy and MAC reduction, and the sweep's own front."""
        from ray_jobs.pareto import DEFAULT_OBJECTIVES, front_mask, parse_objectives
        from ray_jobs.records import load_networks

        run_id = self.sweep_run()
        key = sweep_key(self.sweep.sweep_id)
        if key in self.state.closed:
            return  # a finished sweep resumed again: its summary is already there
        networks = load_networks(self.client, [self.sweep.experiment], sweep_id=self.sweep.sweep_id)
        objectives = parse_objectives(DEFAULT_OBJECTIVES)
        mask = front_mask(networks, objectives)
        front = [n for n, on in zip(networks, mask) if on]
        metrics = {"trials": op["trials"], "networks": len(networks), "front_size": len(front)}
        if front:
            metrics["best_accuracy"] = max(n.accuracy for n in front)
            metrics["best_mac_reduction"] = max(n.mac_reduction for n in front)
        if networks:
            self._log_front(run_id, networks, objectives)
        done = op["status"] == "done"
        tags = {"status": op["status"], **({CLOSED_TAG: "true"} if done else {})}
        self.log_metrics(run_id, metrics, 0)
        self.set_tags(run_id, tags)
        self.client.set_terminated(run_id, "FINISHED" if done else "FAILED")
        if done:
            self.state.closed.add(key)

    def _log_front(self, run_id: str, networks: list[Any], objectives: list[Any]) -> None:
        from ray_jobs.pareto import front_mask, front_table, plot_front, write_parquet

        source = {
            "tracking_uri": self.sweep.tracking_uri,
            "experiments": [self.sweep.experiment],
            "sweeps": [self.sweep.sweep_id],
        }
        with tempfile.TemporaryDirectory(prefix="adprune-front-") as folder:
            table = front_table(networks, objectives, source)
            parquet = write_parquet(table, Path(folder) / "pareto.parquet")
            png = plot_front(
                networks, front_mask(networks, objectives), objectives, Path(folder) / "pareto.png"
            )
            self.client.log_artifact(run_id, str(parquet), "pareto")
            self.client.log_artifact(run_id, str(png), "pareto")
