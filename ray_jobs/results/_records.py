"""Reading sweeps back out of MLflow: one row per trained network, one row per trial."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from adprune_core.config import LATENCY_FIELDS
from ray_jobs.tracking.keys import (
    CLOSED_TAG,
    KIND_TAG,
    MODEL_TAG,
    NET_KIND,
    PARENT_TAG,
    TRIAL_KIND,
)
from ray_jobs.tracking.store import (
    TrackingError,
    check_store,
    experiment_ids,
    resolve_tracking_uri,
    sqlite_path,
)

PAGE_SIZE = 1000
LATENCY_COLUMNS = LATENCY_FIELDS


def existing_store(option: str | None) -> tuple[str, Any]:
    """The URI and a client, for a store that already holds sweeps (no empty one is made)."""
    uri = resolve_tracking_uri(option)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise TrackingError(
            f"no MLflow store at {db}; run a sweep first (adprune-sweep launch SPEC.yaml) "
            "or pass --tracking-uri"
        )
    return uri, check_store(uri)


@dataclass
class NetworkRow:
    """One trained network (a closed net[i] run)."""

    experiment: str
    sweep: str
    sweep_id: str
    trial: str
    round: int
    phase: str
    arch: str
    dataset: str
    widths: list[int]
    accuracy: float
    params: int
    macs: int
    param_reduction: float
    mac_reduction: float
    energy_j: float
    training_complexity: float
    epochs: int
    run_id: str
    hyperparams: dict[str, Any] = field(default_factory=dict)
    # NaN where no latency was recorded (record.latency off, or an older sweep).
    latency_ms_b1: float = math.nan
    latency_ms_batch: float = math.nan
    latency_reduction_b1: float = math.nan
    latency_reduction_batch: float = math.nan
    # The network's logged MLflow model (models:/<id>); None where record.models left it out.
    model_uri: str | None = None
    # When its run closed (ms since the epoch): the earliest net0 is the scoring baseline.
    end_time: int = 0


@dataclass
class TrialRow:
    experiment: str
    sweep: str
    sweep_id: str
    trial: str
    status: str
    hyperparams: dict[str, Any]
    final_widths: list[int] | None
    accuracy: float | None
    mac_reduction: float | None
    param_reduction: float | None
    training_complexity: float | None
    rounds: int | None
    delta_reason: str
    run_id: str
    latency_ms_b1: float | None = None
    # Epochs loaded from another trial's training (train each shared network once).
    shared_epochs: int | None = None


def all_runs(client: Any, experiment_ids: Sequence[str], filter_string: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            list(experiment_ids), filter_string, max_results=PAGE_SIZE, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def numeric(text: str) -> Any:
    try:
        number = float(text)
    except (TypeError, ValueError):
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text else number


def trial_hyperparams(run: Any) -> dict[str, Any]:
    keys = json.loads(run.data.tags.get("search_keys", "[]"))
    return {key: numeric(run.data.params[key]) for key in keys if key in run.data.params}


def select_sweeps(runs: list[Any], sweeps: Sequence[str]) -> list[Any]:
    if not sweeps:
        return runs
    wanted = set(sweeps)
    return [
        r
        for r in runs
        if r.data.tags.get("sweep") in wanted or r.data.tags.get("sweep_id") in wanted
    ]


def check_sweeps_found(runs: list[Any], sweeps: Sequence[str], experiments: Sequence[str]) -> None:
    seen = {r.data.tags.get("sweep") for r in runs} | {r.data.tags.get("sweep_id") for r in runs}
    missing = [s for s in sweeps if s not in seen]
    if missing:
        where = f"experiment(s) {', '.join(experiments)}" if experiments else "the store"
        raise TrackingError(f"--sweep {missing[0]}: no sweep of that name or id in {where}")


def load_trials(
    client: Any, experiments: Sequence[str] = (), sweeps: Sequence[str] = ()
) -> list[TrialRow]:
    ids = experiment_ids(client, tuple(experiments))
    names = {v: k for k, v in ids.items()}
    where = f"tags.`{KIND_TAG}` = '{TRIAL_KIND}'"
    runs = select_sweeps(all_runs(client, ids.values(), where), sweeps)
    check_sweeps_found(runs, sweeps, experiments)
    return [trial_row(run, names[run.info.experiment_id]) for run in runs]


def trial_row(run: Any, experiment: str) -> TrialRow:
    tags, metrics = run.data.tags, run.data.metrics
    widths = tags.get("final_widths")
    rounds = metrics.get("rounds")
    return TrialRow(
        experiment=experiment,
        sweep=tags.get("sweep", ""),
        sweep_id=tags.get("sweep_id", ""),
        trial=tags.get("trial_id", ""),
        status=tags.get("status", ""),
        hyperparams=trial_hyperparams(run),
        final_widths=json.loads(widths) if widths else None,
        accuracy=metrics.get("accuracy"),
        mac_reduction=metrics.get("mac_reduction"),
        param_reduction=metrics.get("param_reduction"),
        training_complexity=metrics.get("training_complexity"),
        rounds=int(rounds) if rounds is not None else None,
        delta_reason=tags.get("delta_reason", tags.get("error", "")),
        run_id=run.info.run_id,
        latency_ms_b1=metrics.get("latency_ms_b1"),
        shared_epochs=None if "shared_epochs" not in metrics else int(metrics["shared_epochs"]),
    )


def load_networks(
    client: Any,
    experiments: Sequence[str] = (),
    sweeps: Sequence[str] = (),
    sweep_id: str | None = None,
    trial_id: str | None = None,
) -> list[NetworkRow]:
    """Every closed net[i] run (search rounds and final phase) of the selected sweeps (of
    one trial, with ``trial_id``)."""
    ids = experiment_ids(client, tuple(experiments))
    names = {v: k for k, v in ids.items()}
    where = f"tags.`{KIND_TAG}` = '{NET_KIND}' and tags.`{CLOSED_TAG}` = 'true'"
    trial_where = f"tags.`{KIND_TAG}` = '{TRIAL_KIND}'"
    for tag, value in (("sweep_id", sweep_id), ("trial_id", trial_id)):
        if value is not None:
            where += f" and tags.{tag} = '{value}'"
            trial_where += f" and tags.{tag} = '{value}'"
    nets = select_sweeps(all_runs(client, ids.values(), where), sweeps)
    if sweep_id is None:
        check_sweeps_found(nets, sweeps, experiments)
    trials = {r.info.run_id: r for r in all_runs(client, ids.values(), trial_where)}
    rows = []
    for run in nets:
        parent = trials.get(run.data.tags.get(PARENT_TAG, ""))
        hyper = trial_hyperparams(parent) if parent is not None else {}
        rows.append(network_row(run, names[run.info.experiment_id], hyper))
    return rows


def network_row(run: Any, experiment: str, hyperparams: dict[str, Any]) -> NetworkRow:
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    return NetworkRow(
        experiment=experiment,
        sweep=tags.get("sweep", ""),
        sweep_id=tags.get("sweep_id", ""),
        trial=tags.get("trial_id", ""),
        round=int(params["round"]),
        phase=params["phase"],
        arch=tags.get("arch", ""),
        dataset=tags.get("dataset", ""),
        widths=[int(w) for w in json.loads(params["widths"])],
        accuracy=metrics["accuracy"],
        params=int(metrics["params"]),
        macs=int(metrics["macs"]),
        param_reduction=metrics["param_reduction"],
        mac_reduction=metrics["mac_reduction"],
        energy_j=metrics["energy_j"],
        training_complexity=metrics["training_complexity"],
        epochs=int(metrics["epochs"]),
        run_id=run.info.run_id,
        hyperparams=hyperparams,
        **{key: metrics.get(key, math.nan) for key in LATENCY_COLUMNS},
        model_uri=tags.get(MODEL_TAG) or None,
        end_time=int(run.info.end_time or 0),
    )
