"""The MLflow writer against real stores: errors sorted by what retrying fixes, one bad record
never holding up the rest, each run's records in order and exactly once, and a tracking
server on PostgreSQL with MLflow's basic-auth app."""

import errno
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import (
    MlflowServer,
    kill_session,
    last_report_in_round,
    launch_cli,
    tiny_spec,
    trial_results,
)
from mlflow import MlflowClient
from mlflow_store import check_store_matches, hierarchy
from servers import ADMIN, PostgresCluster, TrackingServer, free_port, have_postgres

from ray_jobs.tracking import (
    DEAD_LETTER_FILE,
    QUEUE_FILE,
    BackgroundWriter,
    DeadLetters,
    Journal,
    Recorder,
    RunResolver,
    SweepInfo,
    WriterConfig,
    is_transient,
)
from ray_jobs.tracking.store import check_store


def epoch(trial, step, value=0.5, net="net0"):
    return {
        "op": "epoch",
        "trial": trial,
        "net": net,
        "phase": "search",
        "round": int(net.removeprefix("net")),
        "widths": [4, 4],
        "epoch": step,
        "metrics": {"ad_total": value, "loss": 1.0 / step},
    }


class Writer:
    """A writer over a real store, its journal and dead letters in ``folder``."""

    def __init__(self, folder: Path, uri: str, workers: int = 1, retry_s: float = 0.3):
        self.folder = folder
        self.messages: list[str] = []
        info = SweepInfo("s1", "w", "adprune-writer", uri, {"a": 1}, [], "cnn2", "synthetic")
        self.journal = Journal(folder)
        self.dead = DeadLetters(folder)
        self.writer = BackgroundWriter(
            Recorder(RunResolver(info)),
            self.journal,
            self.dead,
            uri,
            self.messages.append,
            WriterConfig(retry_interval_s=retry_s, workers=workers, max_strikes=3),
        )
        self.client = MlflowClient(uri)

    def nets(self):
        experiment = self.client.get_experiment_by_name("adprune-writer")
        runs = self.client.search_runs([experiment.experiment_id], max_results=5000)
        return {r.data.tags["trial_id"]: r for r in runs if r.data.tags["adprune.kind"] == "net"}

    def steps(self, run):
        history = self.client.get_metric_history(run.info.run_id, "ad_total")
        return [(m.step, m.value) for m in sorted(history, key=lambda m: m.timestamp)]


@pytest.fixture
def sqlite_uri(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    check_store(uri)  # creates the schema, as launch does before training
    return uri


# ---------------------------------------------------------------------------- error sorting


def test_errors_are_sorted_by_what_retrying_can_fix(tmp_path):
    refused = MlflowClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Exception) as down:
        refused.search_experiments(max_results=1)
    assert is_transient(down.value)
    full = OSError(errno.ENOSPC, "No space left on device")
    assert not is_transient(full)
    assert not is_transient(TypeError("float() argument must be a real number, not 'list'"))
    try:
        import adprune_no_such_plugin  # noqa: F401
    except ImportError as err:
        assert not is_transient(err)


def test_a_record_that_raises_is_set_aside_and_the_records_behind_it_flow_on(tmp_path, sqlite_uri):
    w = Writer(tmp_path, sqlite_uri)
    w.writer.start()
    w.writer.put([{"op": "sweep_start"}])
    for step in range(1, 6):
        # Epoch 3 of t0 carries a value the recorder cannot turn into a metric.
        w.writer.put([epoch("t0", step, [0.1] if step == 3 else 0.5), epoch("t1", step)])
    started = time.monotonic()
    assert w.writer.stop(timeout_s=120)
    assert time.monotonic() - started < 60
    nets = w.nets()
    assert [s for s, _ in w.steps(nets["t0"])] == [1, 2, 4, 5]
    assert [s for s, _ in w.steps(nets["t1"])] == [1, 2, 3, 4, 5]
    (line,) = w.messages
    assert "not answering" not in line
    assert "epoch record of s1/t0/net0 (epoch 3)" in line and "TypeError" in line
    (letter,) = w.dead.entries()
    assert letter["record"]["epoch"] == 3 and letter["error"].startswith("TypeError")
    assert not (tmp_path / QUEUE_FILE).exists()


def test_each_runs_records_are_batched_in_order_and_written_once(tmp_path, sqlite_uri):
    """Many runs, their epochs interleaved, some re-reported (a retried trial): every run
    holds each epoch once, in order, with the value first reported for it."""
    w = Writer(tmp_path, sqlite_uri)
    w.writer.start()
    w.writer.put([{"op": "sweep_start"}])
    for step in range(1, 9):
        for trial in range(12):
            w.writer.put([epoch(f"t{trial}", step, step / 10 + trial)])
            if step % 3 == 0:
                w.writer.put([epoch(f"t{trial}", step, -1.0)])  # ignored: already there
    assert w.writer.stop(timeout_s=300)
    nets = w.nets()
    assert len(nets) == 12
    for trial in range(12):
        expected = [(s, s / 10 + trial) for s in range(1, 9)]
        assert w.steps(nets[f"t{trial}"]) == expected
    assert w.writer.stats.written == 1 + 12 * 8 + 12 * 2
    assert not w.messages


def trial_end(trial):
    return {"op": "trial_end", "trial": trial, "status": "done", "reason": "", "metrics": {}}


def test_trials_artifacts_are_drawn_side_by_side_and_the_sweeps_end_comes_after_them(
    tmp_path, sqlite_uri
):
    """Six finished trials' figures on two artifact threads, each with a figure process of
    its own; the sweep's end (whose front reads every trial) only once all of them are in."""
    seen_at_sweep_end: dict[str, set[str]] = {}
    ended_orders: dict[str, list[str]] = {}

    def sweep_end_report(client, experiment, sweep_id, uri, folder):
        runs = client.search_runs(
            [client.get_experiment_by_name(experiment).experiment_id],
            "tags.`adprune.kind` = 'trial'",
        )
        for run in runs:
            names = {a.path for a in client.list_artifacts(run.info.run_id)}
            seen_at_sweep_end[run.data.tags["trial_id"]] = names
        return {}, [], {}

    def trial_end_report(client, experiment, sweep_id, ended):
        ended_orders[ended[-1]] = list(ended)
        return {"trials_scored": float(len(ended))}

    w = Writer(tmp_path, sqlite_uri)
    w.writer.recorder.sweep_end_report = sweep_end_report
    w.writer.recorder.trial_end_report = trial_end_report
    trials = [f"t{n}" for n in range(6)]
    ops: list[dict] = [{"op": "sweep_start"}]
    for trial in trials:
        ops += [epoch(trial, 1, 0.5), epoch(trial, 2, 0.4), trial_end(trial)]
        ops.append({"op": "trial_figures", "trial": trial, "done": True, "fig3": None})
    ops.append({"op": "sweep_end", "trials": len(trials), "status": "done"})
    w.writer.start()
    w.writer.put(ops)
    assert w.writer.stop(timeout_s=300)
    assert not w.messages
    assert {t: "ad_all_rounds.png" in names for t, names in seen_at_sweep_end.items()} == {
        t: True for t in trials
    }
    figure_processes = w.writer.recorder.figures._all
    assert [renderer.cpu_s > 0 for renderer in figure_processes] == [True, True]
    # The order of trial ends the progress metrics use is the store's order of end times.
    experiment = w.client.get_experiment_by_name("adprune-writer").experiment_id
    stored = w.client.search_runs([experiment], "tags.`adprune.kind` = 'trial'")
    by_end = [r.data.tags["trial_id"] for r in sorted(stored, key=lambda r: r.info.end_time)]
    assert {t: ended_orders[t] for t in trials} == {
        t: by_end[: by_end.index(t) + 1] for t in trials
    }


def net_end(trial, step):
    return {
        **epoch(trial, step),
        "op": "net_end",
        "metrics": {"accuracy": 0.9, "epochs": step},
        "profile": "",
        "end_reason": "saturated",
    }


def test_a_close_cut_short_between_its_last_batch_and_its_end_is_done_again(tmp_path, sqlite_uri):
    """A driver killed after a close's last batch (which carries the closed tag) and before
    set_terminated leaves a RUNNING run tagged closed; the resumed writer closes it."""
    first = Writer(tmp_path / "first", sqlite_uri)
    first.writer.start()
    first.writer.put([{"op": "sweep_start"}, epoch("t0", 1), epoch("t0", 2), net_end("t0", 2)])
    assert first.writer.stop(timeout_s=120)
    (net,) = first.nets().values()
    assert net.info.status == "FINISHED" and net.data.tags["adprune.closed"] == "true"
    first.client.update_run(net.info.run_id, status="RUNNING")  # where the kill left it
    resumed = Writer(tmp_path / "resumed", sqlite_uri)
    resumed.writer.start()
    resumed.writer.put([{"op": "sweep_start"}, epoch("t0", 2), net_end("t0", 2)])
    assert resumed.writer.stop(timeout_s=120)
    (net,) = resumed.nets().values()
    assert net.info.status == "FINISHED"
    assert [s for s, _ in resumed.steps(net)] == [1, 2]


# ---------------------------------------------------------------------------- 503, then back


class Outage(BaseHTTPRequestHandler):
    """A real HTTP hop in front of the server: 503 while ``outage`` is set, else forwarded."""

    upstream = ""
    outage = threading.Event()
    refused = 0

    def _handle(self):
        if Outage.outage.is_set():
            Outage.refused += 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        request = urllib.request.Request(
            Outage.upstream + self.path, data=body, method=self.command
        )
        for key in ("Content-Type", "Authorization"):
            if self.headers.get(key):
                request.add_header(key, self.headers[key])
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = _handle

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_a_server_answering_503_for_a_while_is_waited_for_then_written_once(tmp_path):
    server = MlflowServer(tmp_path / "server").start()
    Outage.upstream = server.uri
    Outage.outage.clear()
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Outage)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{proxy.server_address[1]}"
    try:
        check_store(uri)
        w = Writer(tmp_path, uri, workers=4, retry_s=0.3)
        w.writer.start()
        w.writer.put([{"op": "sweep_start"}, epoch("t0", 1), epoch("t1", 1)])
        deadline = time.monotonic() + 60
        while w.writer.stats.written < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        Outage.outage.set()
        for step in (2, 3):
            w.writer.put([epoch("t0", step), epoch("t1", step)])
        while Outage.refused < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # several retries inside the outage
        Outage.outage.clear()
        assert w.writer.stop(timeout_s=60)
        down, up = w.messages
        assert "not answering" in down and "503" in down and "queued" in down
        assert "answering again" in up
        nets = w.nets()
        for trial in ("t0", "t1"):
            assert [s for s, _ in w.steps(nets[trial])] == [1, 2, 3]
        assert not w.dead.entries()
    finally:
        proxy.shutdown()
        server.stop()


# ---------------------------------------------------------------------------- a full disk


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MiB tmpfs mounted where the local store keeps its artifacts."""
    mount = tmp_path / "mlruns" / "artifacts"
    mount.mkdir(parents=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip()})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_artifact_disk_mid_sweep_loses_no_metric_and_lists_each_failed_file(
    tmp_path, tiny_tmpfs
):
    # Leave room for a figure or two: the disk fills in the middle of the sweep.
    (tiny_tmpfs / "filler").write_bytes(b"\0" * (1024 * 1024 - 96 * 1024))
    started = time.monotonic()
    spec = tiny_spec("fulldisk", grid="[0.005, 0.05]")
    proc = launch_cli(tmp_path, spec, timeout=600)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert elapsed < 300  # no drain timeout: the failed files were set aside at once
    out = proc.stdout
    assert "not answering" not in out
    dead = DeadLetters(tmp_path / "runs" / "fulldisk").entries()
    assert dead, out[-3000:]
    assert all("No space left on device" in d["error"] for d in dead)
    failed = [line for line in out.splitlines() if line.startswith("mlflow: could not write")]
    assert len(failed) == len(dead)  # one line per file set aside
    kinds = {d["record"]["op"] for d in dead}
    assert kinds <= {"net_figures", "trial_figures", "net_model", "sweep_end"}
    assert f"{len(dead)} records set aside" in out
    # Every metric is there: every network of every trial, every epoch, closed.
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    results = trial_results(tmp_path, "fulldisk")
    roots, children = hierarchy(client)
    (sweep,) = roots
    trials = {t.data.tags["trial_id"]: t for t in children[sweep.info.run_id]}
    assert set(trials) == set(results)
    for trial_id, rows in results.items():
        assert trials[trial_id].data.tags["adprune.closed"] == "true"
        nets = children[trials[trial_id].info.run_id]
        assert len(nets) == len({(r["phase"], r["round"]) for r in rows})
        for net in nets:
            assert net.info.status == "FINISHED"
            reports = [
                r
                for r in rows
                if r["round"] == int(net.data.params["round"])
                and r["phase"] == net.data.params["phase"]
            ]
            history = client.get_metric_history(net.info.run_id, "ad_total")
            assert sorted(m.step for m in history) == [r["epoch"] for r in reports]
    assert not (tmp_path / "runs" / "fulldisk" / QUEUE_FILE).exists()

    # Room again: --resume writes the files that were set aside, and nothing else twice.
    (tiny_tmpfs / "filler").unlink()
    resumed = launch_cli(tmp_path, spec, "--name", "fulldisk", "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"retrying {len(dead)} records" in resumed.stdout
    assert not (tmp_path / "runs" / "fulldisk" / DEAD_LETTER_FILE).exists()
    check_store_matches(client, trial_results(tmp_path, "fulldisk"), "fulldisk")


# ---------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory):
    """One PostgreSQL cluster and one password-protected `mlflow server` on it."""
    if not have_postgres():
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: PostgreSQL refuses to run as root")
    cluster = PostgresCluster().start()
    try:
        backend = cluster.create_database("mlflow")
        folder = tmp_path_factory.mktemp("pg-server")
        server = TrackingServer(folder, backend, auth=True, workers=2).start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        cluster.stop()


def with_credentials(user, password):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    }
    if user is not None:
        env["MLFLOW_TRACKING_USERNAME"] = user
    if password is not None:
        env["MLFLOW_TRACKING_PASSWORD"] = password
    return env


@pytest.mark.slow
def test_a_sweep_recorded_through_a_password_protected_postgresql_server(
    tmp_path, pg_server, monkeypatch
):
    env = with_credentials(*ADMIN)
    proc = launch_cli(tmp_path, tiny_spec("pg"), "--tracking-uri", pg_server.uri, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "could not write" not in proc.stdout and "not answering" not in proc.stdout
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    client = MlflowClient(pg_server.uri)
    sweep, _ = check_store_matches(client, trial_results(tmp_path, "pg"), "pg")
    assert sweep.info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize(
    "user, password, words",
    [
        (ADMIN[0], "not-the-password", "refused the credentials (user 'admin'"),
        (None, None, "refused the credentials (no MLFLOW_TRACKING_USERNAME"),
    ],
)
def test_wrong_or_missing_password_fails_in_one_line_before_training(
    tmp_path, pg_server, user, password, words
):
    env = with_credentials(user, password)
    proc = launch_cli(tmp_path, tiny_spec("nopass"), "--tracking-uri", pg_server.uri, env=env)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert pg_server.uri in lines[0] and words in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs" / "nopass").exists()  # no training started


@pytest.mark.slow
def test_three_drivers_write_to_one_postgresql_server_at_once(tmp_path, pg_server, monkeypatch):
    env = with_credentials(*ADMIN)
    folders = [tmp_path / f"d{i}" for i in range(3)]
    procs = []
    for index, folder in enumerate(folders):
        folder.mkdir()
        spec = folder / "spec.yaml"
        spec.write_text(tiny_spec(f"three{index}", grid="[0.05]"))
        procs.append(
            subprocess.Popen(
                [*launch_args(spec, folder), "--tracking-uri", pg_server.uri],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=folder,
                env=env,
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    client = MlflowClient(pg_server.uri)
    for index, folder in enumerate(folders):
        check_store_matches(client, trial_results(folder, f"three{index}"), f"three{index}")


def launch_args(spec: Path, folder: Path) -> list[str]:
    from conftest import CLI

    return [*CLI, "launch", str(spec), "--storage", str(folder / "runs")]


def test_dead_letters_are_one_json_line_each(tmp_path):
    dead = DeadLetters(tmp_path)
    dead.add({"op": "epoch", "trial": "t0"}, "TypeError: x")
    dead.add({"op": "net_figures", "trial": "t0"}, "OSError: [Errno 28] No space left on device")
    lines = (tmp_path / DEAD_LETTER_FILE).read_text().splitlines()
    assert [json.loads(line)["record"]["op"] for line in lines] == ["epoch", "net_figures"]
    journal = Journal(tmp_path)
    assert dead.take(journal) == 2
    assert [op["op"] for op in journal.read()] == ["epoch", "net_figures"]
    assert not (tmp_path / DEAD_LETTER_FILE).exists()


@pytest.mark.slow
def test_a_driver_killed_mid_sweep_then_resumed_records_everything_once_on_postgresql(
    tmp_path, pg_server, monkeypatch
):
    # Rounds of 6 epochs on 4,096 images: the kill lands while networks are still training.
    spec_text = (
        tiny_spec("pgkill", grid="[0.0000001]")
        .replace("num_train: 128", "num_train: 4096")
        .replace("max_epochs: 4", "max_epochs: 6")
        .replace("flat_band: 0.002", "flat_band: 1.0")
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text)
    env = with_credentials(*ADMIN)
    driver = subprocess.Popen(
        [*launch_args(spec, tmp_path), "--tracking-uri", pg_server.uri],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env=env,
        start_new_session=True,  # its Ray processes share the session, so all can be ended
    )
    try:
        for line in driver.stdout:
            if "net1" in line and "epoch   2" in line:
                break
        last_report_in_round(tmp_path, "pgkill", 1)  # Tune's result.json lags the line
    finally:
        kill_session(driver.pid)
        driver.wait(timeout=60)
    (before,) = trial_results(tmp_path, "pgkill").values()
    assert before[-1]["round"] >= 1 and not before[-1].get("schedule_done")

    proc = subprocess.run(
        [*launch_args(spec, tmp_path), "--tracking-uri", pg_server.uri, "--resume"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    # Every network and epoch of both drivers once: none lost with the killed one, none
    # written twice by the resumed one.
    check_store_matches(MlflowClient(pg_server.uri), trial_results(tmp_path, "pgkill"), "pgkill")
