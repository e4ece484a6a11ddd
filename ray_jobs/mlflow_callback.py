"""The Tune callback that turns trial results into MLflow operations, on the driver.

Logging on the driver means workers on other nodes need no access to the store, and one
process owns the run-id map that keeps every record exactly-once.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import threading
from typing import Any

from ray.tune import Callback

from ray_jobs.mlflow_log import Recorder, RecorderState, layer_metric, net_name

EPOCH_METRICS = ("ad_total", "loss", "accuracy", "train_accuracy")
NET_SUMMARY_METRICS = (
    "params",
    "macs",
    "energy_j",
    "param_reduction",
    "mac_reduction",
    "training_complexity",
)
TRIAL_METRICS = {
    "final_accuracy": "accuracy",
    "final_param_reduction": "param_reduction",
    "final_mac_reduction": "mac_reduction",
    "final_training_complexity": "training_complexity",
    "final_baseline_complexity": "baseline_complexity",
    "final_rounds": "rounds",
    "final_chosen_round": "chosen_round",
}


def epoch_op(trial_id: str, result: dict[str, Any]) -> dict[str, Any]:
    metrics = {key: result[key] for key in EPOCH_METRICS}
    metrics.update({layer_metric(i): ad for i, ad in enumerate(result["layer_ad"])})
    return {
        "op": "epoch",
        "trial": trial_id,
        "net": net_name(result["phase"], result["round"]),
        "phase": result["phase"],
        "round": result["round"],
        "widths": result["widths"],
        "epoch": result["epoch"],
        "metrics": metrics,
        "node_ip": result.get("node_ip", ""),
        "time_ms": int(1000 * result.get("timestamp", 0)) or None,
    }


def net_end_op(trial_id: str, result: dict[str, Any]) -> dict[str, Any]:
    metrics: dict[str, Any] = {key: result[key] for key in NET_SUMMARY_METRICS}
    metrics["epochs"] = result["epoch"]
    if result.get("epochs_to_rho") is not None:
        metrics["epochs_to_rho"] = result["epochs_to_rho"]
    return {
        "op": "net_end",
        "trial": trial_id,
        "net": net_name(result["phase"], result["round"]),
        "phase": result["phase"],
        "round": result["round"],
        "widths": result["widths"],
        "net0_widths": result["net0_widths"],
        "epoch": result["epoch"],
        "metrics": metrics,
        "profile": result.get("net_profile", result.get("profile", "")),
        "end_reason": result["decision_reason"],
        "ad_history": result["ad_history"],
        "layer_ad_history": result.get("net_layer_ad_history", []),
    }


def searched_values(config: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    values = {}
    for key in keys:
        node: Any = config["spec"]
        for part in key.split("."):
            node = node[part]
        values[key] = node
    return values


def last_error_line(trial: Any) -> str:
    """The exception line of the trial's traceback (e.g. ``TrainingDiverged: ...``)."""
    try:
        text = trial.get_error() or ""
    except Exception:  # the error file may be on storage that is gone
        text = ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1][:500] if lines else "trial failed"


_STOP = {"op": "_stop"}


class BackgroundWriter:
    """Applies operations on a thread of its own, so Tune's event loop (and with it every
    trial waiting on ``tune.report``) never waits for the store.

    Every operation is first appended to the journal file (the recorder's queue file); the
    journal is emptied only when the writer has applied everything. A driver killed with
    operations in memory therefore loses none: the next ``--resume`` re-applies the journal,
    and every operation is idempotent.
    """

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.state_lock = threading.Lock()
        self._journal_lock = threading.Lock()
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="mlflow-writer", daemon=True)

    def start(self, replay: list[dict[str, Any]]) -> None:
        for op in replay:
            self._queue.put(op)
        self._thread.start()

    def put(self, op: dict[str, Any]) -> None:
        with self._journal_lock:
            path = self.recorder.queue_path
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as journal:
                journal.write(json.dumps(op) + "\n")
            self._queue.put(op)

    def _run(self) -> None:
        while True:
            try:
                op = self._queue.get(timeout=self.recorder.retry_interval_s)
            except queue.Empty:
                if self.recorder.pending:
                    with self.state_lock:
                        self.recorder.flush()
                    self._clear_journal_if_idle()
                continue
            if op is _STOP:
                return
            with self.state_lock:
                self.recorder.submit(op)
            self._clear_journal_if_idle()

    def _clear_journal_if_idle(self) -> None:
        with self._journal_lock:
            if self._queue.empty() and not self.recorder.pending:
                self.recorder.queue_path.unlink(missing_ok=True)

    def stop(self, timeout_s: float) -> bool:
        """Write what is queued (up to ``timeout_s``); False if some of it is still unwritten."""
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            return False
        if self.recorder.pending:
            self.recorder.flush()  # one last try before the driver exits
        self._clear_journal_if_idle()
        return not self.recorder.pending


class MlflowCallback(Callback):
    """Sweep, trial and net[i] runs from Tune's driver-side events."""

    def __init__(self, recorder: Recorder, drain_timeout_s: float = 600.0) -> None:
        recorder.keep_queue_file = False  # the writer's journal is the queue
        self.recorder = recorder
        self.drain_timeout_s = drain_timeout_s
        self._started: set[str] = set()
        self._writer: BackgroundWriter | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks into its experiment state; a thread and locks do not travel.
        return {**self.__dict__, "_writer": None}

    # ------------------------------------------------------------------ state for --resume

    def get_state(self) -> dict[str, Any] | None:
        lock = self._writer.state_lock if self._writer else threading.Lock()
        with lock:
            return {"recorder": dataclasses.asdict(self.recorder.state)}

    def set_state(self, state: dict[str, Any]) -> None:
        saved = dict(state["recorder"])
        saved["closed"] = set(saved["closed"])
        lock = self._writer.state_lock if self._writer else threading.Lock()
        with lock:
            self.recorder.state = RecorderState(**saved)

    # ------------------------------------------------------------------ events

    def setup(self, **info: Any) -> None:
        self.recorder.keep_queue_file = False
        queued = self.recorder.load_queue()
        replay, self.recorder.pending = self.recorder.pending, []
        if queued:
            self.recorder.echo(f"mlflow: writing {queued} records queued by an earlier run")
        self._started = set()
        self._writer = BackgroundWriter(self.recorder)
        self._writer.start(replay)
        self._submit({"op": "sweep_start"})

    def _submit(self, op: dict[str, Any]) -> None:
        if self._writer is None:  # events before setup: write in this thread
            self.recorder.submit(op)
        else:
            self._writer.put(op)

    def _ensure_trial(self, trial: Any) -> None:
        if trial.trial_id in self._started:
            return
        from adprune_core.spec import flatten

        config = trial.config
        keys = self.recorder.sweep.search_keys
        params = flatten({"spec": config["spec"]})
        self._submit(
            {
                "op": "trial_start",
                "trial": trial.trial_id,
                "params": {k.removeprefix("spec."): v for k, v in params.items()},
                "searched": searched_values(config, keys),
            }
        )
        self._started.add(trial.trial_id)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_trial(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict) -> None:
        self._ensure_trial(trial)
        if result.get("diverged"):
            return  # no epoch to record; on_trial_complete records the failure
        self._submit(epoch_op(trial.trial_id, result))
        if result["decision"] != "continue":
            self._submit(net_end_op(trial.trial_id, result))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_trial(trial)
        self._submit({"op": "trial_status", "trial": trial.trial_id, "status": "retrying"})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_trial(trial)
        result = trial.last_result or {}
        done = bool(result.get("schedule_done"))
        status = "done" if done else ("diverged" if result.get("diverged") else "stopped")
        self._submit(
            {
                "op": "trial_end",
                "trial": trial.trial_id,
                "status": status,
                "reason": result.get("final_stop_reason") or result.get("diverged", ""),
                "metrics": {v: result[k] for k, v in TRIAL_METRICS.items() if k in result},
                "final_widths": result.get("final_widths"),
            }
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_trial(trial)
        self._submit(
            {
                "op": "trial_end",
                "trial": trial.trial_id,
                "status": "error",
                "reason": last_error_line(trial),
                "metrics": {},
            }
        )

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        finished = all(t.status == "TERMINATED" for t in trials)
        self._submit(
            {
                "op": "sweep_end",
                "status": "done" if finished else "incomplete",
                "trials": len(trials),
            }
        )
        complete = self._writer.stop(self.drain_timeout_s) if self._writer else True
        self.recorder.echo(
            f"mlflow: {self.recorder.writes} records written in "
            f"{self.recorder.busy_cpu_s:.1f}s of writer CPU time "
            f"({self.recorder.busy_s:.1f}s wall)"
        )
        if not complete:
            self.recorder.echo(
                f"mlflow: records are still queued in {self.recorder.queue_path}; "
                f"`adprune-sweep launch SPEC.yaml --name {self.recorder.sweep.name} --resume` "
                "writes them once the store answers"
            )
