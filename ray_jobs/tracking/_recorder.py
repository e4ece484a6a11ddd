"""Applying a sweep's operations to MLflow runs, each exactly once.

Every write is an *operation*: a JSON-able dict naming the run it belongs to by a logical key
(see :mod:`ray_jobs.tracking.keys`), never by an MLflow run id; :class:`RunResolver` turns the
key into a run. Each operation may be applied more than once (a retried trial re-reports, a
resumed driver replays its journal) and leaves the store as if applied once: epochs at or
below the run's last logged step are skipped, and a closed run is not written again.
"""

from __future__ import annotations

import json
import posixpath
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray_jobs.tracking._figures import plot_activation_maps, plot_net_ad, plot_trial_ad
from ray_jobs.tracking._models import log_network_model, logged_model_id
from ray_jobs.tracking._runs import RunResolver, log_metrics, set_tags
from ray_jobs.tracking.keys import CLOSED_TAG, MODEL_TAG, net_key, sweep_key, trial_key

Operation = dict[str, Any]


def is_net0(op: Operation) -> bool:
    return op["phase"] == "search" and op["round"] == 0


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
TrialEndReport = Callable[[Any, str, str], dict[str, float]]


class Recorder:
    """Turns operations into sweep, trial and net[i] runs."""

    def __init__(
        self,
        runs: RunResolver,
        sweep_end_report: SweepEndReport | None = None,
        trial_end_report: TrialEndReport | None = None,
    ) -> None:
        self.runs = runs
        self.sweep_end_report = sweep_end_report
        self.trial_end_report = trial_end_report

    @property
    def sweep(self) -> Any:
        return self.runs.sweep

    @property
    def client(self) -> Any:
        return self.runs.client

    def apply(self, op: Operation) -> None:
        handler = getattr(self, f"_apply_{op['op']}")
        try:
            handler(op)
        except Exception:
            self.runs.write_failed()
            raise

    def _apply_sweep_start(self, op: Operation) -> None:
        self.runs.sweep_run()

    def _apply_trial_start(self, op: Operation) -> None:
        self.runs.trial_run(op["trial"], op)

    def _apply_trial_status(self, op: Operation) -> None:
        set_tags(self.client, self.runs.trial_run(op["trial"]), {"status": op["status"]})

    def _apply_epoch(self, op: Operation) -> None:
        state = self.runs.state
        run_id = self.runs.net_run(op)
        key = net_key(self.sweep.sweep_id, op["trial"], op["net"])
        if op["epoch"] <= state.last_step.get(key, 0):
            return  # already logged before a retry or restore re-reported it
        node = op.get("node_ip")
        # The node tag rides in the metrics' batch: one commit per epoch, not two.
        moved = bool(node) and state.node_ip.get(key) != node
        tags = {"node_ip": node} if moved else None
        log_metrics(self.client, run_id, op["metrics"], op["epoch"], op.get("time_ms"), tags)
        state.last_step[key] = op["epoch"]
        if moved:
            state.node_ip[key] = node
            self._tag_trial_node(op["trial"], node)

    def _tag_trial_node(self, trial_id: str, node: str) -> None:
        """The trial run's ``node_ip``, written only when the trial moved to another node."""
        key = trial_key(self.sweep.sweep_id, trial_id)
        if self.runs.state.node_ip.get(key) != node:
            set_tags(self.client, self.runs.trial_run(trial_id), {"node_ip": node})
            self.runs.state.node_ip[key] = node

    def _apply_net_end(self, op: Operation) -> None:
        run_id = self.runs.net_run(op)
        key = net_key(self.sweep.sweep_id, op["trial"], op["net"])
        if key in self.runs.state.closed:
            return
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
        tags = {"profile": op["profile"], "end_reason": op["end_reason"]}
        self._close(run_id, key, op["metrics"], op["epoch"], tags, "FINISHED")

    def _log_layer_ad_plot(self, run_id: str, op: Operation) -> None:
        """The paper's Fig. 2 (every layer's AD against the epoch), for net0 only.

        Later networks get no PNG: MLflow charts their per-epoch ``ad/layer_NN`` metrics
        natively, and drawing one figure per network was half the writer's CPU, taken from
        the cores the trials train on (BENCHMARKS.md, sweep overhead).
        """
        with tempfile.TemporaryDirectory(prefix="adprune-mlflow-") as folder:
            plot = plot_net_ad(
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

    def _close(
        self,
        run_id: str,
        key: str,
        metrics: dict[str, Any],
        step: int,
        tags: dict[str, str],
        status: str,
    ) -> None:
        """Final metrics, tags and the closed mark in one batch: a crash leaves all or none."""
        from mlflow.entities import Metric, RunTag

        stamp = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), stamp, step) for k, v in metrics.items() if v is not None],
            tags=[RunTag(k, v) for k, v in {**tags, CLOSED_TAG: "true"}.items()],
        )
        self.client.set_terminated(run_id, status)
        self.runs.state.closed.add(key)

    def _apply_trial_end(self, op: Operation) -> None:
        run_id = self.runs.trial_run(op["trial"])
        key = trial_key(self.sweep.sweep_id, op["trial"])
        if key in self.runs.state.closed:
            return
        done = op["status"] == "done"
        if done:
            self._log_trial_plot(run_id, op["trial"])
            if op.get("fig3"):
                self._log_fig3(run_id, op["trial"], op["fig3"])
        else:
            self._fail_open_nets(op["trial"], op.get("reason", ""))
        tags = {
            "status": op["status"],
            "delta_reason" if done else "error": op.get("reason", ""),
        }
        if op.get("final_widths") is not None:
            tags["final_widths"] = json.dumps(op["final_widths"])
        self._close(run_id, key, op["metrics"], 0, tags, "FINISHED" if done else "FAILED")
        self._log_trial_end_report()

    def _log_trial_end_report(self) -> None:
        """The sweep run's progress metrics, at step = trials completed so far."""
        if self.trial_end_report is None:
            return
        s = self.sweep
        prefix = trial_key(s.sweep_id, "")
        completed = sum(
            1
            for k in self.runs.state.closed
            if k.startswith(prefix) and "/" not in k[len(prefix) :]
        )
        metrics = self.trial_end_report(self.client, s.experiment, s.sweep_id)
        log_metrics(self.client, self.runs.sweep_run(), metrics, completed)

    def _log_trial_plot(self, run_id: str, trial_id: str) -> None:
        curves = []
        for run in self.runs.trial_net_runs(trial_id):
            history = self.client.get_metric_history(run.info.run_id, "ad_total")
            curve = [m.value for m in sorted(history, key=lambda m: m.step)]
            curves.append((run.info.run_name, curve))
        with tempfile.TemporaryDirectory(prefix="adprune-mlflow-") as folder:
            plot = plot_trial_ad(
                Path(folder) / "ad_all_rounds.png", f"{trial_id}: total AD, every round", curves
            )
            self.client.log_artifact(run_id, str(plot))

    def _log_fig3(self, run_id: str, trial_id: str, maps: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory(prefix="adprune-mlflow-") as folder:
            plot = plot_activation_maps(
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
        metrics: dict[str, float] = {"trials": op["trials"]}
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
