"""The Tune callback that records a sweep in MLflow, from the driver.

Logging on the driver means workers on other nodes need no access to the store, and one
process owns the run-id map that keeps every record exactly-once. The callback only turns
Tune's events into records and journals them (one fsynced append per event); the writer
(``_writer``) delivers them and the recorder (``_recorder``) applies them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from ray.tune import Callback

from ray_jobs.tracking._journal import DeadLetters, Journal
from ray_jobs.tracking._models import (
    chosen_model_ops,
    discard_unchosen,
    model_op,
    stage_network,
    staged_path,
)
from ray_jobs.tracking._operations import (
    epoch_op,
    last_error_line,
    net_end_op,
    net_figures_op,
    sweep_sharing_metrics,
    trial_end_op,
    trial_error_op,
    trial_figures_op,
    trial_start_op,
)
from ray_jobs.tracking._recorder import Recorder, SweepEndReport, TrialEndReport
from ray_jobs.tracking._runs import RunResolver, RunState, SweepInfo
from ray_jobs.tracking._writer import BackgroundWriter, writer_config
from ray_jobs.tracking.keys import TRIAL_ERROR, net_name

# What travels when Tune pickles the callback into its experiment state; the live parts
# (client, thread, locks) are rebuilt from these.
_CONFIG_FIELDS = (
    "sweep",
    "journal_dir",
    "retry_interval_s",
    "sweep_end_report",
    "drain_timeout_s",
    "trial_end_report",
)


def models_mode(trial: Any) -> str:
    """The trial's record.models: which of its networks become MLflow models."""
    return trial.config.get("spec", {}).get("record", {}).get("models", "chosen")


def import_model_flavor() -> None:
    # A warm-up only: if it fails (an import race between threads), the first model imports.
    with contextlib.suppress(Exception):
        import mlflow.models
        import mlflow.pytorch  # noqa: F401


def result_net(result: dict[str, Any]) -> str:
    return net_name(result["phase"], result["round"])


class MlflowCallback(Callback):
    """Sweep, trial and net[i] runs from Tune's driver-side events."""

    def __init__(
        self,
        sweep: SweepInfo,
        journal_dir: Path,
        retry_interval_s: float = 15.0,
        sweep_end_report: SweepEndReport | None = None,
        drain_timeout_s: float = 600.0,
        echo: Callable[[str], None] = click.echo,
        trial_end_report: TrialEndReport | None = None,
    ) -> None:
        self.sweep = sweep
        self.trial_end_report = trial_end_report
        self.journal_dir = Path(journal_dir)
        self.retry_interval_s = retry_interval_s
        self.sweep_end_report = sweep_end_report
        self.drain_timeout_s = drain_timeout_s
        self.echo = echo
        self._assemble(RunState())

    def _assemble(self, state: RunState) -> None:
        self.runs = RunResolver(self.sweep, state)
        self.recorder = Recorder(self.runs, self.sweep_end_report, self.trial_end_report)
        self.journal = Journal(self.journal_dir)
        self.dead_letters = DeadLetters(self.journal_dir)
        self._started: set[str] = set()
        # Trials whose last result ended a network: its weights come with the checkpoint
        # Tune hands over next (on_checkpoint follows on_trial_result).
        self._closing: dict[str, dict[str, Any]] = {}
        self._writer: BackgroundWriter | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _CONFIG_FIELDS} | {"state": self.runs.state}

    def __setstate__(self, saved: dict[str, Any]) -> None:
        state = saved.pop("state")
        self.trial_end_report = None  # sweeps saved before trial-end reports existed
        self.__dict__.update(saved)
        self.echo = click.echo
        self._assemble(state)

    # ------------------------------------------------------------------ state for --resume

    def _state_lock(self) -> Any:
        return self._writer.state_lock if self._writer else threading.Lock()

    def get_state(self) -> dict[str, Any] | None:
        # A snapshot, not the writer's lock: Tune saves state from its event loop, which
        # must not wait for a flush (or a logged model) to finish.
        return {"recorder": dataclasses.asdict(self.runs.state.snapshot())}

    def set_state(self, state: dict[str, Any]) -> None:
        saved = dict(state["recorder"])
        saved["closed"] = set(saved["closed"])
        with self._state_lock():
            self.runs.state = RunState(**saved)

    # ------------------------------------------------------------------ events

    def setup(self, **info: Any) -> None:
        replay = len(self.journal.read())
        if replay:
            self.echo(f"mlflow: writing {replay} records queued by an earlier run")
        retried = self.dead_letters.take(self.journal)
        if retried:
            self.echo(f"mlflow: retrying {retried} records that the store refused before")
        self._started = set()
        config = writer_config(self.sweep.tracking_uri, self.retry_interval_s)
        self._writer = BackgroundWriter(
            self.recorder,
            self.journal,
            self.dead_letters,
            self.sweep.tracking_uri,
            self.echo,
            config,
        )
        self._writer.start()
        # The first logged model would otherwise wait seconds for these imports, and the last
        # trial's models are written after its training ends, while the sweep waits for them.
        threading.Thread(target=import_model_flavor, name="mlflow-import", daemon=True).start()
        self._submit({"op": "sweep_start"})

    def _submit(self, *ops: dict[str, Any]) -> None:
        """One event's records, in one fsynced append."""
        if self._writer is None:  # events before setup: the writer replays them at setup
            self.journal.append(list(ops))
        else:
            self._writer.put(list(ops))

    def _ensure_trial(self, trial: Any) -> None:
        if trial.trial_id in self._started:
            return
        self._submit(trial_start_op(trial.trial_id, trial.config, self.sweep.search_keys))
        self._started.add(trial.trial_id)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_trial(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict) -> None:
        self._ensure_trial(trial)
        if result.get("diverged") or result.get(TRIAL_ERROR):
            return  # no epoch to record; on_trial_complete records the failure
        ops = [epoch_op(trial.trial_id, result)]
        if result["decision"] != "continue":
            ops += [net_end_op(trial.trial_id, result), net_figures_op(trial.trial_id, result)]
            self._closing[trial.trial_id] = result
        self._submit(*ops)

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        result = self._closing.pop(trial.trial_id, None)
        mode = models_mode(trial)
        if result is None or mode == "none":
            return
        path = staged_path(self.journal_dir, trial.trial_id, result_net(result))
        if stage_network(checkpoint, path) and mode == "all":
            op = model_op(trial.trial_id, result["phase"], result["round"], result["widths"], path)
            self._submit(op)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_trial(trial)
        self._submit({"op": "trial_status", "trial": trial.trial_id, "status": "retrying"})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_trial(trial)
        ops = []
        if models_mode(trial) == "chosen":
            ops = chosen_model_ops(self.journal_dir, trial.trial_id, trial.last_result or {})
            discard_unchosen(self.journal_dir, trial.trial_id, ops)
        ops += [
            trial_end_op(trial.trial_id, trial.last_result or {}),
            trial_figures_op(trial.trial_id, trial.last_result),
        ]
        self._submit(*ops)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_trial(trial)
        if models_mode(trial) == "chosen":  # a failed trial chose nothing to log
            discard_unchosen(self.journal_dir, trial.trial_id, [])
        self._submit(
            trial_error_op(trial.trial_id, last_error_line(trial)),
            trial_figures_op(trial.trial_id, None),
        )

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        finished = all(t.status == "TERMINATED" for t in trials)
        self._submit(
            {
                "op": "sweep_end",
                "status": "done" if finished else "incomplete",
                "trials": len(trials),
                "metrics": sweep_sharing_metrics([t.last_result or {} for t in trials]),
            }
        )
        complete = self._writer.stop(self.drain_timeout_s) if self._writer else True
        self.echo(self.closing_line())
        if not complete:
            self.echo(
                f"mlflow: records are still queued in {self.journal.path}; "
                f"`adprune-sweep launch SPEC.yaml --name {self.sweep.name} --resume` "
                "writes them once the store answers"
            )

    def closing_line(self) -> str:
        """Records, the writer's CPU, the worst lag, and the records set aside."""
        if self._writer is None:
            return "mlflow: no records written"
        stats = self._writer.stats
        line = (
            f"mlflow: {stats.written} records written in {stats.cpu_s:.1f}s of writer CPU "
            f"time ({stats.busy_s:.1f}s wall); worst lag {stats.worst_lag_records} records, "
            f"{stats.worst_lag_s:.1f}s"
        )
        dead = self.dead_letters.count
        if dead:
            line += (
                f"; {dead} records set aside in {self.dead_letters.path} (`--resume` retries them)"
            )
        return line
