"""``ui``: the MLflow UI over the sweep store, served by a child ``mlflow server`` that ``ui``
owns, and opened on the pages that compare thresholds."""

from __future__ import annotations

import json
import os
import socket
import sys
import webbrowser
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import click

from ray_jobs.results._records import existing_store
from ray_jobs.results._server import OwnedServer, ServerDied
from ray_jobs.results._view import share_sweep_view, share_sweeps_view
from ray_jobs.tracking.keys import KIND_TAG, SWEEP_KIND, TRIAL_KIND
from ray_jobs.tracking.store import (
    TrackingError,
    artifact_root,
    experiment_ids,
    is_server,
    mark_model_training,
    resolve_tracking_uri,
)

# The runs page opens in "Model training" mode (MLflow 3 otherwise offers its GenAI views).
MODEL_TRAINING_QUERY = "workflowType=machine_learning"


@dataclass(frozen=True)
class UiOptions:
    tracking_uri: str | None = None
    host: str = "127.0.0.1"
    port: int = 5000
    sweeps: tuple[str, ...] = ()  # none: the latest sweep
    experiment: str | None = None
    open_browser: bool = False
    ready_timeout_s: float = 120.0


@dataclass(frozen=True)
class UiLink:
    label: str
    url: str


def port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def latest_sweep_run(client: Any, ids: list[str], sweep: str | None) -> Any | None:
    """The sweep run named or id'd ``sweep``, else the most recently started one."""
    where = f"tags.`{KIND_TAG}` = '{SWEEP_KIND}'"
    # Newest first; MLflow's filter has no OR, so a name or an id is matched here.
    runs = client.search_runs(ids, where, max_results=1000, order_by=["attributes.start_time DESC"])
    if sweep is not None:
        runs = [r for r in runs if sweep in (r.data.tags.get("sweep"), r.data.tags.get("sweep_id"))]
        if not runs:
            raise TrackingError(f"--sweep {sweep}: no sweep of that name or id in the store")
    return runs[0] if runs else None


def trial_run_ids(client: Any, sweep_run: Any) -> list[str]:
    sweep_id = sweep_run.data.tags.get("sweep_id", "")
    where = f"tags.`{KIND_TAG}` = '{TRIAL_KIND}' and tags.sweep_id = '{sweep_id}'"
    runs = client.search_runs(
        [sweep_run.info.experiment_id], where, max_results=1000, order_by=["attributes.run_name"]
    )
    return [r.info.run_id for r in runs]


def compare_url(base: str, experiment_ids: list[str], run_ids: list[str]) -> str:
    runs = quote(json.dumps(run_ids, separators=(",", ":")))
    experiments = quote(json.dumps(experiment_ids, separators=(",", ":")))
    return f"{base}/#/compare-runs?runs={runs}&experiments={experiments}"


def selected_sweep_runs(client: Any, ids: list[str], sweeps: tuple[str, ...]) -> list[Any]:
    """The sweep runs ``--sweep`` names, in its order, else the most recent one."""
    if not sweeps:
        latest = latest_sweep_run(client, ids, None)
        return [latest] if latest is not None else []
    return [latest_sweep_run(client, ids, sweep) for sweep in dict.fromkeys(sweeps)]


def sweep_label(sweep_run: Any) -> str:
    return sweep_run.data.tags.get("sweep", sweep_run.info.run_name)


def compare_link(client: Any, base: str, sweep_runs: list[Any]) -> UiLink | None:
    """One compare page holding the trials of every selected sweep."""
    trials = [run_id for run in sweep_runs for run_id in trial_run_ids(client, run)]
    if not trials:
        return None
    experiments = list(dict.fromkeys(run.info.experiment_id for run in sweep_runs))
    names = ", ".join(f"'{sweep_label(run)}'" for run in sweep_runs)
    what = "sweeps" if len(sweep_runs) > 1 else "sweep"
    return UiLink(
        f"compare {what} {names} ({len(trials)} trials)", compare_url(base, experiments, trials)
    )


def ui_links(client: Any, base: str, options: UiOptions) -> list[UiLink]:
    """The pages that matter, first the one ``--open`` opens: the first selected (or the
    latest) sweep's trials in the runs table (its shared view) and as charts, the trials of
    every selected sweep on one compare page, each experiment's sweep runs with what sweeps
    compare by (hypervolume, MAC reduction at 1 point of loss), and each sweep's run."""
    names = [options.experiment] if options.experiment else []
    ids = experiment_ids(client, names)
    sweep_runs = selected_sweep_runs(client, list(ids.values()), options.sweeps)
    if not sweep_runs:
        return [UiLink("experiments", f"{base}/#/experiments")]
    first = sweep_runs[0]
    experiment_id = first.info.experiment_id
    mark_model_training(client, client.get_experiment(experiment_id))
    view = share_sweep_view(client, experiment_id, first)
    runs_page = (
        f"{base}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING_QUERY}&viewStateShareKey={view}"
    )
    links = [UiLink(f"runs of sweep '{sweep_label(first)}'", runs_page)]
    links.append(
        UiLink(f"charts of sweep '{sweep_label(first)}'", f"{runs_page}&compareRunsMode=CHART")
    )
    compare = compare_link(client, base, sweep_runs)
    if compare is not None:
        links.append(compare)
    for exp_id in dict.fromkeys(run.info.experiment_id for run in sweep_runs):
        mark_model_training(client, client.get_experiment(exp_id))
        key = share_sweeps_view(client, exp_id)
        page = f"{base}/#/experiments/{exp_id}/runs?{MODEL_TRAINING_QUERY}&viewStateShareKey={key}"
        name = client.get_experiment(exp_id).name
        links.append(UiLink(f"sweeps of experiment '{name}' (hypervolume, @1pt)", page))
    for run in sweep_runs:
        page = f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        links.append(UiLink(f"sweep run '{sweep_label(run)}'", page))
    return links


def server_command(uri: str, host: str, port: int) -> list[str]:
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    command += ["--registry-store-uri", uri, "--host", host, "--port", str(port)]
    # One worker is plenty for one user; uvicorn's per-request access lines would bury the
    # links ui prints, while its warnings and errors still show.
    command += ["--workers", "1", "--uvicorn-opts", "--log-level warning --no-access-log"]
    artifacts = artifact_root(uri)
    if artifacts:
        command += ["--artifacts-destination", artifacts]
    return command


def serve_ui(options: UiOptions) -> int:
    """Serve the store until SIGINT or SIGTERM (exit 0), or until the server dies (exit 1)."""
    uri = resolve_tracking_uri(options.tracking_uri)
    if is_server(uri):
        raise TrackingError(
            f"--tracking-uri {uri}: that store is an MLflow server with its own UI; "
            "open it in a browser"
        )
    _, client = existing_store(options.tracking_uri)
    if not port_free(options.host, options.port):
        raise TrackingError(
            f"--port {options.port}: already in use on {options.host}; choose another --port"
        )
    base = f"http://{options.host}:{options.port}"
    links = ui_links(client, base, options)
    # The server's job runner (a pool of huey workers) serves GenAI features the sweep store
    # does not use; on a laptop it would cost more CPU than the UI itself.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # Deprecation notices from the server's own dependencies are nothing a user can act on.
    env.setdefault(
        "PYTHONWARNINGS",
        "ignore::DeprecationWarning,ignore:starlette.middleware.wsgi is deprecated",
    )
    click.echo(f"starting the MLflow UI for {uri} ...")
    with OwnedServer(server_command(uri, options.host, options.port), env) as server:
        try:
            server.wait_until_ready(f"{base}/health", options.ready_timeout_s)
            if server.stopping:
                return 0
            click.echo(f"MLflow UI at {base} (Ctrl-C to stop)")
            for link in links:
                click.echo(f"  {link.label}: {link.url}")
            if options.open_browser:
                webbrowser.open(links[0].url)
            server.wait()
        except ServerDied as died:
            click.echo(f"error: {died}", err=True)
            return 1
    return 0
