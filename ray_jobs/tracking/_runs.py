"""Resolving a sweep's logical run keys to MLflow runs: sweep -> trial -> net[i].

A key becomes a run id by the in-memory map, else by the :data:`KEY_TAG` tag in the store,
else by creating the run. That lookup is what makes every write exactly-once across trial
retries and ``--resume``: a retried trial re-reports epochs into the run that already exists.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from adprune_core.config import net_label
from ray_jobs.tracking._trial_ends import TrialEnds, ended_through, stored_end_times
from ray_jobs.tracking.keys import (
    CLOSED_TAG,
    KEY_TAG,
    KIND_TAG,
    NET_KIND,
    PARENT_TAG,
    SWEEP_KIND,
    TRIAL_KIND,
    net_key,
    sweep_key,
    trial_key,
)
from ray_jobs.tracking.store import ensure_experiment, make_client

# MLflow refuses batches above these sizes (REST API limits).
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000


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
class RunState:
    """The run-id map and progress marks; saved with Tune's callback state."""

    run_ids: dict[str, str] = field(default_factory=dict)
    last_step: dict[str, int] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    node_ip: dict[str, str] = field(default_factory=dict)

    def snapshot(self) -> RunState:
        """A copy taken while the writer may be changing it: copying a dict or a set of
        strings is one step under CPython's GIL, iterating over it (asdict) is not."""
        return RunState(
            dict(self.run_ids), dict(self.last_step), set(self.closed), dict(self.node_ip)
        )


def param_value(value: Any) -> str:
    if isinstance(value, list | dict | tuple) or value is None:
        return json.dumps(value)
    return str(value)


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, param_value(v)) for k, v in params.items()]
    for batch in chunks(items, MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=batch)


def log_metrics(
    client: Any,
    run_id: str,
    metrics: dict[str, float],
    step: int,
    timestamp_ms: int | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """``metrics`` at ``step``, and ``tags`` with the first batch (one commit for both)."""
    from mlflow.entities import Metric, RunTag

    stamp = timestamp_ms or int(time.time() * 1000)
    items = [Metric(k, float(v), stamp, step) for k, v in metrics.items() if v is not None]
    pending_tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    for batch in chunks(items, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch, tags=pending_tags)
        pending_tags = []
    if pending_tags:
        client.log_batch(run_id, tags=pending_tags)


def set_tags(client: Any, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


class RunResolver:
    """The run of each key of one sweep: known, found by tag, or created with its params."""

    def __init__(self, sweep: SweepInfo, state: RunState | None = None) -> None:
        self.sweep = sweep
        self.state = state or RunState()
        self._client: Any = None
        self._experiment_id: str | None = None
        # True once this resolver created the sweep run itself, with no failed write since:
        # then no run of this sweep can exist that is not in the map, and new trial and
        # net runs skip the store search (~50 ms each on sqlite). A resumed driver, or one
        # whose write failed after the store may have applied it, searches as before.
        self._owns_every_run = False
        # Known runs re-read from the store in this process. A killed driver's saved state
        # lags the store (it is saved every few seconds, writes go on in between), so a
        # resumed driver takes each known run's last step from the store before writing to it.
        self._checked: set[str] = set()
        self.trial_ends = TrialEnds(sweep.sweep_id)

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

    def write_failed(self) -> None:
        """A write failed, and may still have reached the store: search from now on, and
        reconnect from scratch for the next write."""
        self._owns_every_run = False
        self._client = None

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
            run_id = self.state.run_ids[key]
            if not self._owns_every_run and key not in self._checked:
                self._adopt(key, self.client.get_run(run_id))
                self._checked.add(key)
            return run_id
        run = None if self._owns_every_run else self.find_run(key)
        if run is None:
            all_tags = {**tags, KEY_TAG: key, KIND_TAG: kind}
            if parent_key is not None:
                all_tags[PARENT_TAG] = self.state.run_ids[parent_key]
            run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
            self.state.last_step[key] = 0
            if kind == SWEEP_KIND:
                self._owns_every_run = True
        else:
            self._adopt(key, run)
        run_id = run.info.run_id
        log_params(self.client, run_id, params)  # re-logging an identical param is a no-op
        self.state.run_ids[key] = run_id
        self._checked.add(key)
        return run_id

    def _adopt(self, key: str, run: Any) -> None:
        """Pick up a run an earlier driver (or attempt) created: its last step and state."""
        # The closed tag rides in a close's last batch, before set_terminated: a driver
        # killed between the two left it on a RUNNING run, whose close is done again.
        if run.data.tags.get(CLOSED_TAG) == "true" and run.info.status != "RUNNING":
            self.state.closed.add(key)
        if run.data.tags.get(KIND_TAG) == NET_KIND:
            history = self.client.get_metric_history(run.info.run_id, "ad_total")
            self.state.last_step[key] = max((m.step for m in history), default=0)
        if run.info.status != "RUNNING" and key not in self.state.closed:
            self.client.update_run(run.info.run_id, status="RUNNING")

    # ------------------------------------------------------------------ the three levels

    def sweep_run(self) -> str:
        s = self.sweep
        return self.resolve(
            sweep_key(s.sweep_id),
            SWEEP_KIND,
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
        self.sweep_run()
        searched = (op or {}).get("searched", {})
        label = " ".join(f"{k.split('.')[-1]}={v}" for k, v in searched.items())
        return self.resolve(
            trial_key(s.sweep_id, trial_id),
            TRIAL_KIND,
            f"{trial_id} {label}".strip(),
            sweep_key(s.sweep_id),
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
            NET_KIND,
            net_label(op["phase"], op["round"], sep=" "),
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
            {
                "round": op["round"],
                "phase": op["phase"],
                "widths": op["widths"],
                **op.get("resources", {}),
            },
        )

    def trials_ended_through(self, trial_id: str) -> list[str]:
        """The sweep's trials ended by the time ``trial_id`` ended, in that order
        (``_trial_ends``), ``trial_id`` last."""
        if self._owns_every_run:
            return ended_through(self.trial_ends.known(), trial_id)
        stored = stored_end_times(self.client, self.experiment_id, self.sweep_run())
        return ended_through(stored, trial_id)

    def trial_net_runs(self, trial_id: str) -> list[Any]:
        """The trial's net runs in the store, search rounds in order, then the final phase."""
        parent = self.state.run_ids[trial_key(self.sweep.sweep_id, trial_id)]
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{KIND_TAG}` = '{NET_KIND}'",
            max_results=1000,
        )
        order = {"search": 0, "final": 1}
        return sorted(
            runs,
            key=lambda r: (order.get(r.data.tags.get("phase", ""), 2), int(r.data.params["round"])),
        )
