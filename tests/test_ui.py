"""``ui`` opens on the threshold comparison (checked in a real headless Chromium), owns its
server, and each sweep run carries its comparison figure and table."""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import CLI, free_port
from mlflow_store import client_for, hierarchy

ARTIFACTS = Path(os.environ.get("ADPRUNE_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found (apt install chromium); the browser tests need it"
)
LINK = re.compile(r"^  (?P<label>[^:]+): (?P<url>http://\S+)$", re.M)


def sweep_run(client, name):
    roots, children = hierarchy(client)
    (run,) = [r for r in roots if r.data.tags.get("sweep") == name]
    return run, children[run.info.run_id]


def live_processes():
    """pid -> (parent pid, process group) of every process that is not a zombie."""
    table = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone while we looked
        if fields[0] != "Z":
            table[int(status.parent.name)] = (int(fields[1]), int(fields[2]))
    return table


def left_over(started):
    """Which of ``started`` (pid, group) pairs, or members of their groups, still run."""
    groups = {group for _, group in started}
    pids = {pid for pid, _ in started}
    return [pid for pid, (_, group) in live_processes().items() if pid in pids or group in groups]


class UiProcess:
    """``adprune-sweep ui`` as a user starts it, in a session of its own so the test can find
    every process it left behind."""

    def __init__(self, folder, *args):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [*CLI, "ui", "--port", str(self.port), *args],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines = []

    def links(self, timeout_s=120):
        """Read stdout until the sweep run's link (the last one) is printed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                code, err = self.proc.wait(), self.proc.stderr.read()
                raise AssertionError(f"ui ended early with {code}: {err}")
            self.lines.append(line.rstrip("\n"))
            if line.startswith("  sweep run"):
                text = "\n".join(self.lines)
                return {m["label"].split(" ")[0]: m["url"] for m in LINK.finditer(text)}
        raise AssertionError(f"no links after {timeout_s}s: {self.lines}")

    def descendants(self):
        """(pid, process group) of every live process below ui, found by parent links."""
        table = live_processes()
        below, frontier = [], [self.proc.pid]
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, (ppid, _) in table.items() if ppid == parent]
            below += [(pid, table[pid][1]) for pid in children]
            frontier += children
        return below

    def stop(self):
        """End ui as a user would (SIGTERM, which stops its server), and then, whatever
        happened, every process it started: a SIGKILLed ui could not stop the server, which
        runs in a session of its own."""
        started = self.descendants() if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        for pid in left_over(started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def ui_on_alpha(two_sweeps):
    folder, _, _ = two_sweeps
    ui = UiProcess(folder, "--sweep", "alpha")
    yield ui, ui.links()
    ui.stop()


def render(url, name, budget_ms=20000):
    """The page's DOM after Chromium ran its scripts for ``budget_ms`` of virtual time, and a
    screenshot of it kept under tests/artifacts."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    common += [f"--virtual-time-budget={budget_ms}", "--window-size=1400,1000"]
    dom = subprocess.run(
        [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    shot = ARTIFACTS / f"{name}.png"
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot of {url}"
    return dom


def visible_text(dom):
    return re.sub(r"<[^>]+>", "\n", re.sub(r"<style[^>]*>.*?</style>", "", dom, flags=re.S))


@needs_chromium
def test_compare_page_shows_every_trial_and_threshold(two_sweeps, ui_on_alpha):
    folder, _, _ = two_sweeps
    _, links = ui_on_alpha
    _, trials = sweep_run(client_for(folder), "alpha")
    text = visible_text(render(links["compare"], "compare-alpha"))
    assert len(trials) == 2
    for trial in trials:
        assert trial.data.tags["trial_id"] in text
        assert trial.data.params["prune.rho.threshold"] in text
    assert "accuracy" in text and "mac_reduction" in text


@needs_chromium
def test_runs_page_opens_on_the_sweeps_trials_in_model_training_mode(two_sweeps, ui_on_alpha):
    folder, _, _ = two_sweeps
    _, links = ui_on_alpha
    _, trials = sweep_run(client_for(folder), "alpha")
    assert "workflowType=machine_learning" in links["runs"]
    text = visible_text(render(links["runs"], "runs-alpha"))
    lines = [line.strip() for line in text.splitlines()]
    # Model-training navigation, not the GenAI overview a bare experiment link opens on.
    assert "Models" in lines and "Model registry" in lines
    assert "Overview" not in lines and "Judges" not in lines and "Sessions" not in lines
    # The shared view: this sweep's trials only, with the results as columns.
    assert "You're viewing a shared view" in text
    assert "2 matching runs" in " ".join(lines)
    for trial in trials:
        assert trial.data.tags["trial_id"] in text
    for metric in ("accuracy", "mac_reduction", "training_complexity"):
        assert metric in lines


@needs_chromium
def test_charts_page_plots_accuracy_against_mac_reduction(two_sweeps, ui_on_alpha):
    _, links = ui_on_alpha
    assert links["charts"] == links["runs"] + "&compareRunsMode=CHART"
    text = visible_text(render(links["charts"], "charts-alpha", budget_ms=60000))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    section = lines.index("Threshold comparison")
    assert lines[section + 1] == "(2)"  # the section holds our two charts, and only them
    assert "mac_reduction vs. accuracy" in lines  # the scatter
    assert "Parallel Coordinates" in lines and "prune.rho.threshold" in lines


@needs_chromium
def test_sweep_run_page_shows_the_sweep(two_sweeps, ui_on_alpha):
    folder, _, _ = two_sweeps
    _, links = ui_on_alpha
    run, _ = sweep_run(client_for(folder), "alpha")
    assert links["sweep"].endswith(f"/runs/{run.info.run_id}")
    text = visible_text(render(links["sweep"], "sweep-run-alpha"))
    assert "alpha" in text and "best_accuracy" in text


def test_ui_prints_the_latest_sweeps_comparison_by_default(two_sweeps):
    folder, _, _ = two_sweeps
    ui = UiProcess(folder)
    try:
        links = ui.links()
    finally:
        ui.stop()
    run, trials = sweep_run(client_for(folder), "beta")  # launched after alpha
    runs = json.loads(unquote(re.search(r"runs=([^&]+)", links["compare"])[1]))
    assert sorted(runs) == sorted(t.info.run_id for t in trials)
    assert links["sweep"].endswith(run.info.run_id)


def test_experiments_are_tagged_as_model_training(two_sweeps):
    folder, _, _ = two_sweeps
    client = client_for(folder)
    for name in ("adprune-sweep", "adprune-beta"):
        tags = client.get_experiment_by_name(name).tags
        assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_sigterm_stops_the_server_and_every_worker(two_sweeps):
    folder, _, _ = two_sweeps
    ui = UiProcess(folder, "--sweep", "alpha")
    try:
        ui.links()
        started = ui.descendants()
        assert len(started) >= 2, "ui started no server with a worker"
        ui.proc.send_signal(signal.SIGTERM)
        assert ui.proc.wait(timeout=60) == 0
    finally:
        ui.stop()
    assert left_over(started) == []
    with socket.socket() as probe:
        # SO_REUSEADDR lets the bind through closed connections still in TIME_WAIT, but
        # not past a socket that still listens.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", ui.port))


def test_ui_exits_nonzero_when_its_server_dies(two_sweeps):
    folder, _, _ = two_sweeps
    ui = UiProcess(folder, "--sweep", "alpha")
    try:
        ui.links()
        started = ui.descendants()
        (server,) = [pid for pid, _ in started if live_processes()[pid][0] == ui.proc.pid]
        os.kill(server, signal.SIGKILL)
        assert ui.proc.wait(timeout=60) == 1
        err = ui.proc.stderr.read()
    finally:
        ui.stop()
    assert "error: the MLflow server exited with status -9; the UI is down" in err
    assert "Traceback" not in err
    assert left_over(started) == []  # the server's worker went with it


def test_ui_with_an_unknown_sweep_is_one_line(two_sweeps):
    folder, _, _ = two_sweeps
    proc = subprocess.run(
        [*CLI, "ui", "--port", str(free_port()), "--sweep", "nope"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --sweep nope: no sweep of that name or id in the store"


def test_sweep_run_has_its_comparison_figure_and_table(two_sweeps, tmp_path):
    folder, _, _ = two_sweeps
    client = client_for(folder)
    run, trials = sweep_run(client, "alpha")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "comparison")}
    assert artifacts == {"comparison/thresholds.png", "comparison/trials.json"}
    logged = json.loads(run.data.tags["mlflow.loggedArtifacts"])
    assert {"path": "comparison/trials.json", "type": "table"} in logged
    table_file = client.download_artifacts(run.info.run_id, "comparison/trials.json", tmp_path)
    table = json.loads(Path(table_file).read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert len(rows) == len(trials) == 2  # one row per trial, never appended twice
    by_trial = {t.data.tags["trial_id"]: t for t in trials}
    for row in rows:
        trial = by_trial[row["trial"]]
        assert row["prune.rho.threshold"] == float(trial.data.params["prune.rho.threshold"])
        # MLflow's table JSON keeps 10 significant digits (pandas' to_json default).
        assert row["accuracy"] == pytest.approx(trial.data.metrics["accuracy"], rel=1e-9)
        assert row["mac_reduction"] == pytest.approx(trial.data.metrics["mac_reduction"], rel=1e-9)
    png = client.download_artifacts(run.info.run_id, "comparison/thresholds.png", tmp_path)
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def ui_on_both(two_sweeps):
    folder, _, _ = two_sweeps
    ui = UiProcess(folder, "--sweep", "alpha", "--sweep", "beta")
    yield ui, ui.links()
    ui.stop()


@needs_chromium
def test_one_compare_page_holds_the_trials_of_both_sweeps(two_sweeps, ui_on_both):
    folder, _, _ = two_sweeps
    ui, links = ui_on_both
    client = client_for(folder)
    trials = sweep_run(client, "alpha")[1] + sweep_run(client, "beta")[1]
    assert len(trials) == 3  # alpha's two and beta's one
    assert any("compare sweeps 'alpha', 'beta' (3 trials)" in line for line in ui.lines)
    runs = json.loads(unquote(re.search(r"runs=([^&]+)", links["compare"])[1]))
    assert sorted(runs) == sorted(t.info.run_id for t in trials)
    text = visible_text(render(links["compare"], "compare-alpha-beta"))
    for trial in trials:
        assert trial.data.tags["trial_id"] in text


@needs_chromium
def test_the_experiments_sweep_runs_carry_what_sweeps_compare_by(two_sweeps, ui_on_both):
    folder, _, _ = two_sweeps
    ui, _ = ui_on_both
    run, _ = sweep_run(client_for(folder), "alpha")
    assert run.data.metrics["hypervolume"] >= 0 and "mac_reduction_at_1pt" in run.data.metrics
    # One such page per experiment; alpha records into adprune-sweep.
    (url,) = [
        m["url"] for m in LINK.finditer("\n".join(ui.lines)) if "'adprune-sweep'" in m["label"]
    ]
    text = visible_text(render(url, "sweeps-of-experiment", budget_ms=30000))
    lines = [line.strip() for line in text.splitlines()]
    assert "hypervolume" in lines and "mac_reduction_at_1pt" in lines
    assert run.info.run_name in text
