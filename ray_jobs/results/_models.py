"""Getting a trained network back: which logged model a run id, a model URI or a front rule
names, and ``register`` (the Model Registry). ``_network_export`` writes one to a file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import click

from adprune_core.config import net_name
from adprune_core.config import parse_objectives as parse_objectives_of
from ray_jobs.results._front import (
    DEFAULT_OBJECTIVES,
    OBJECTIVE_COLUMNS,
    front_mask,
    parse_objectives,
)
from ray_jobs.results._records import NetworkRow, existing_store, load_networks
from ray_jobs.tracking.keys import KIND_TAG, MODEL_TAG, NET_KIND, PARENT_TAG, TRIAL_KIND
from ray_jobs.tracking.store import TrackingError, first_line

RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class FrontRule:
    """Pick the network best in ``best`` among the logged networks on their own accuracy/MAC
    front that meet the floors."""

    best: str = "accuracy"
    min_accuracy: float | None = None
    min_mac_reduction: float | None = None
    experiments: tuple[str, ...] = ()
    sweeps: tuple[str, ...] = ()

    def __str__(self) -> str:
        parts = [f"--best {self.best}"]
        if self.min_accuracy is not None:
            parts.append(f"--min-accuracy {self.min_accuracy:g}")
        if self.min_mac_reduction is not None:
            parts.append(f"--min-mac-reduction {self.min_mac_reduction:g}")
        return " ".join(parts)


@dataclass(frozen=True)
class NetworkModel:
    """A logged network: its model URI and the net run it belongs to."""

    model_uri: str
    model_id: str
    run: Any

    @property
    def label(self) -> str:
        tags, params = self.run.data.tags, self.run.data.params
        net = net_name(params.get("phase", "search"), params.get("round"))
        return f"{tags.get('sweep', '')} {tags.get('trial_id', '')} {net}".strip()


def check_best(column: str) -> tuple[str, str]:
    """``--best COLUMN[:max|min]`` in the objective syntax; without a mode, the direction
    in which the column gets better (smaller for latencies and MACs)."""
    name = column.partition(":")[0]
    if ":" not in column and (name.startswith("latency_ms") or name == "macs"):
        column = f"{name}:min"
    try:
        (objective,) = parse_objectives_of([column], OBJECTIVE_COLUMNS, "--best", most=1)
    except ValueError as err:
        raise TrackingError(str(err)) from None
    return objective.column, objective.mode


def pick_by_rule(client: Any, rule: FrontRule) -> NetworkRow:
    """The network ``rule`` names; a one-line TrackingError when none matches."""
    column, sense = check_best(rule.best)
    networks = load_networks(client, rule.experiments, rule.sweeps)
    # The front of the networks that can be fetched: with record.models: chosen, the global
    # front is mostly unlogged networks (net0s, a neighbour trial's net[i]), and a rule over it
    # would match nothing a user can register.
    logged = [n for n in networks if n.model_uri]
    mask = front_mask(logged, parse_objectives(DEFAULT_OBJECTIVES)) if logged else []
    matching = [
        n
        for n, on_front in zip(logged, mask)
        if on_front
        and (rule.min_accuracy is None or n.accuracy >= rule.min_accuracy)
        and (rule.min_mac_reduction is None or n.mac_reduction >= rule.min_mac_reduction)
    ]
    if not matching:
        raise TrackingError(
            f"{rule}: no logged network on the accuracy/MAC front of the logged networks "
            f"matches ({len(logged)} of {len(networks)} networks in the selected sweeps have "
            "a logged model; see record.models)"
        )
    sign = 1.0 if sense == "max" else -1.0
    return max(matching, key=lambda n: (sign * float(getattr(n, column)), n.run_id))


def resolve_target(client: Any, target: str) -> NetworkModel:
    """The logged network a run id (net or trial run) or a ``models:/`` URI names."""
    if target.startswith("models:/"):
        return _from_model_uri(client, target)
    if not RUN_ID.fullmatch(target):
        raise TrackingError(f"{target}: expected a run id (32 hex digits) or a models:/ URI")
    run = _get_run(client, target)
    kind = run.data.tags.get(KIND_TAG)
    if kind == TRIAL_KIND:
        run = _trial_result_run(client, run)
    elif kind != NET_KIND:
        raise TrackingError(f"run {target}: not a network or trial run of a sweep")
    uri = run.data.tags.get(MODEL_TAG)
    if not uri:
        raise TrackingError(
            f"run {run.info.run_id} ({run.info.run_name}): no logged model; record.models "
            "logged only other networks (set record.models: all to log every one)"
        )
    return NetworkModel(uri, uri.removeprefix("models:/"), run)


def _get_run(client: Any, run_id: str) -> Any:
    try:
        return client.get_run(run_id)
    except Exception as err:
        raise TrackingError(f"run {run_id}: not found ({first_line(err)})") from None


def _trial_result_run(client: Any, trial: Any) -> Any:
    """A trial's delivered network: its final-phase network if it has a model, else its
    chosen one."""
    nets = client.search_runs(
        [trial.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{trial.info.run_id}' "
        f"and tags.`{KIND_TAG}` = '{NET_KIND}'",
    )
    modelled = [r for r in nets if r.data.tags.get(MODEL_TAG)]
    if not modelled:
        raise TrackingError(f"run {trial.info.run_id} ({trial.info.run_name}): no logged model")
    return max(modelled, key=lambda r: (r.data.params.get("phase") == "final", r.info.start_time))


def _from_model_uri(client: Any, uri: str) -> NetworkModel:
    """``models:/<model id>`` or a registered ``models:/<name>/<version>``."""
    path = uri.removeprefix("models:/")
    try:
        if "/" in path:
            name, version = path.split("/", 1)
            registered = client.get_model_version(name, version)
            # The source is the logged model's URI; model_id is not set by every server.
            model_id = registered.model_id or registered.source.removeprefix("models:/")
        else:
            model_id = path
        model = client.get_logged_model(model_id)
    except Exception as err:
        raise TrackingError(f"{uri}: no such model ({first_line(err)})") from None
    if not model.source_run_id:
        raise TrackingError(f"{uri}: not a network logged by a sweep")
    return NetworkModel(f"models:/{model_id}", model_id, _get_run(client, model.source_run_id))


# ---------------------------------------------------------------------------- register


def network_tags(network: NetworkModel) -> dict[str, str]:
    """What a registered version says about its network: widths and reductions first."""
    run = network.run
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    values = {
        "widths": params.get("widths", ""),
        "mac_reduction": metrics.get("mac_reduction"),
        "param_reduction": metrics.get("param_reduction"),
        "accuracy": metrics.get("accuracy"),
        "arch": tags.get("arch"),
        "sweep": tags.get("sweep"),
        "trial": tags.get("trial_id"),
        "phase": params.get("phase"),
        "round": params.get("round"),
    }
    return {k: f"{v:.6g}" if isinstance(v, float) else str(v) for k, v in values.items() if v}


def register(uri: str, network: NetworkModel, name: str) -> Any:
    """Register ``network`` as a new version of ``name`` (created if new)."""
    import mlflow

    mlflow.set_registry_uri(uri)
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.register_model(network.model_uri, name, tags=network_tags(network))
    except Exception as err:  # a bad name, or a registry the store does not offer
        raise TrackingError(f"--name {name}: cannot register ({first_line(err)})") from None


def register_network(
    option: str | None, target: str | None, rule: FrontRule | None, name: str
) -> None:
    """``adprune-sweep register``: one network into the Model Registry under ``name``."""
    uri, client = existing_store(option)
    network = pick(client, target, rule)
    version = register(uri, network, name)
    tags = network_tags(network)
    click.echo(
        f"registered {name!r} version {version.version}: {network.label}, widths "
        f"{tags.get('widths')}, MACs reduced {tags.get('mac_reduction')}x, accuracy "
        f"{tags.get('accuracy')} ({network.model_uri}, run {network.run.info.run_id})"
    )


def pick(client: Any, target: str | None, rule: FrontRule | None) -> NetworkModel:
    if target is not None:
        return resolve_target(client, target)
    row = pick_by_rule(client, rule or FrontRule())
    return resolve_target(client, row.run_id)


def register_sweep_choice(uri: str, experiment: str, sweep_id: str, name: str) -> None:
    """After a sweep: register its most accurate logged network (``--register-as``)."""
    _, client = existing_store(uri)
    rule = FrontRule(experiments=(experiment,), sweeps=(sweep_id,))
    try:
        network = pick(client, None, rule)
    except TrackingError as err:
        click.echo(f"--register-as {name}: nothing registered: {err}")
        return
    version = register(uri, network, name)
    click.echo(
        f"registered {name!r} version {version.version}: {network.label} ({network.model_uri})"
    )
