"""``ui``: the MLflow UI over the sweep store, served by a child ``mlflow server``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import click

from ray_jobs.results._records import existing_store
from ray_jobs.tracking.store import TrackingError, artifact_root, is_server, resolve_tracking_uri


def port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def serve_ui(option: str | None, host: str, port: int) -> int:
    uri = resolve_tracking_uri(option)
    if is_server(uri):
        raise TrackingError(
            f"--tracking-uri {uri}: that store is an MLflow server with its own UI; "
            "open it in a browser"
        )
    existing_store(option)
    if not port_free(host, port):
        raise TrackingError(f"--port {port}: already in use on {host}; choose another --port")
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    artifacts = artifact_root(uri)
    if artifacts:
        command += ["--artifacts-destination", artifacts]
    click.echo(f"MLflow UI for {uri} at http://{host}:{port} (Ctrl-C to stop)")
    # The server's job runner (a pool of huey workers) serves GenAI features the sweep store
    # does not use; on a laptop it would cost more CPU than the UI itself.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0
