"""Shared fixtures: sweeps recorded in a real sqlite MLflow store, and a real `mlflow server`."""

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "ray_jobs.cli"]

TINY_SPEC = """
name: {name}
experiment: {experiment}
model: {{arch: cnn2, widths: [12, 16]}}
data:
  dataset: synthetic
  batch_size: 32
  synthetic: {{num_train: 128, num_test: 64}}
prune:
  rho: {{threshold: 0.01, patience: 1, min_epochs: 2, max_epochs: 4}}
  delta: {{flat_band: 0.002}}
  min_width: 2
  max_rounds: 3
final: {{epochs: {final_epochs}}}
search:
  prune.rho.threshold: {{grid: {grid}}}
"""


def tiny_spec(name, experiment="adprune-sweep", grid="[0.005, 0.05]", final_epochs=0):
    return TINY_SPEC.format(name=name, experiment=experiment, grid=grid, final_epochs=final_epochs)


def counted_macs(widths, classes=4, size=8, channels=1):
    """MACs per image of TINY_SPEC's cnn2 at ``widths``, counted by torch's FLOP counter on
    the built network: a source independent of the run's own cost figures."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from adprune_core.nets import build_model

    model = build_model(
        "cnn2", list(widths), num_classes=classes, input_size=size, in_channels=channels
    ).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, channels, size, size))
    return counter.get_total_flops() // 2


def expected_cpu(row, cpu0=2.0, min_cpu=1.0, step=1.0):
    """The CPUs the README's ``resources.per_round`` rule gives the network a report came from:
    ``max(min_cpu, ceil_to_step(cpu0 * MACs_i / MACs_0))``, at most net0's ``cpu0``, with the
    MACs counted on the networks themselves."""
    ratio = counted_macs(row["widths"]) / counted_macs(row["net0_widths"])
    return min(cpu0, max(min_cpu, step * math.ceil(cpu0 * ratio / step - 1e-9)))


def kill_session(session_id):
    """SIGKILL every process of the session we started the driver in (its embedded Ray)."""
    ps = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    for line in ps.splitlines():
        pid, sid = (int(x) for x in line.split())
        if sid == session_id:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def launch_cli(folder, spec_text, *args, timeout=300, env=None):
    spec = folder / f"spec-{abs(hash(spec_text))}.yaml"
    spec.write_text(spec_text)
    return subprocess.run(
        [*CLI, "launch", str(spec), "--storage", str(folder / "runs"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=folder,
        env=env,
    )


def trial_results(folder, name):
    """Every report of every trial, read back from Tune's result.json files."""
    by_trial = {}
    for path in sorted((folder / "runs" / name).glob("*/result.json")):
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line Tune is writing right now (the sweep is still running)
        if rows:
            by_trial[rows[0]["trial_id"]] = rows
    return by_trial


def last_report_in_round(folder, name, round_index, timeout_s=60, exact=False):
    """The first trial's last report from round ``round_index`` (or a later one, unless
    ``exact``), once Tune's result.json shows it: the progress line comes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for rows in trial_results(folder, name).values():
            reached = rows[-1]["round"]
            if reached == round_index or (not exact and reached > round_index):
                return rows[-1]
        time.sleep(0.2)
    raise AssertionError(f"no report from round {round_index} within {timeout_s}s")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"nothing answering at {url} after {timeout_s}s")


def stop_session(proc):
    """End a process we started with start_new_session=True, and its children, by its id."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 with an sqlite backend and artifact serving."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = folder
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.folder / 'server.db'}",
                "--artifacts-destination",
                str(self.folder / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / "server.log").open("a"),
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            start_new_session=True,
        )
        wait_for_http(f"{self.uri}/health")
        return self

    def stop(self):
        if self.proc is not None:
            stop_session(self.proc)
            self.proc = None


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path / "mlflow-server").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def two_sweeps(tmp_path_factory):
    """Two sweeps recorded in one default (sqlite) store: alpha searches the rho threshold;
    beta lives in another experiment and has a final phase."""
    folder = tmp_path_factory.mktemp("store")
    alpha = launch_cli(folder, tiny_spec("alpha"))
    beta = launch_cli(folder, tiny_spec("beta", "adprune-beta", grid="[0.02]", final_epochs=2))
    return folder, alpha, beta


# Fixtures that launch a sweep, a Ray runtime, a `run` of the quickstart or a server: every
# test that uses one is in the slow tier, whatever module it lives in.
SLOW_FIXTURES = {
    "two_sweeps",
    "mlflow_server",
    "plugin_sweep",
    "bad_plugin_runs",
    "finished_study",
    "quickstart",
    "worker_only_failure",
    "pg_server",
    "run_results",
    "cluster",
    "sweep",
    "sweeps",
    "server",
}
# Modules whose every test launches sweeps or servers.
SLOW_MODULES = {
    "test_cluster",
    "test_faults",
    "test_launch",
    "test_logged_models",
    "test_mlflow",
    "test_per_round",
    "test_python_api",
    "test_sharing_sweeps",
    "test_stop_resume",
    "test_torchvision_sweep",
    "test_ui",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        if module in SLOW_MODULES or SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
