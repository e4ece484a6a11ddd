"""``adprune-sweep launch`` end to end on a real embedded Ray, through the real CLI."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import conftest
import pytest
from conftest import kill_session, last_report_in_round, launch_cli
from mlflow_store import check_store_matches, client_for

CLI = [sys.executable, "-m", "ray_jobs.cli"]

SPEC = """
name: tiny
model: {arch: cnn2, widths: [12, 16]}
data:
  dataset: synthetic
  batch_size: 32
  synthetic: {num_train: 128, num_test: 64}
prune:
  rho: {threshold: 0.01, patience: 1, min_epochs: 2, max_epochs: 4}
  delta: {flat_band: 0.002}
  min_width: 2
  max_rounds: 3
search:
  prune.rho.threshold: {grid: [0.005, 0.05]}
"""


def write_spec(tmp_path, text=SPEC):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def launch(tmp_path, *args, timeout=300, spec_text=SPEC):
    spec = write_spec(tmp_path, spec_text)
    return subprocess.run(
        [*CLI, "launch", str(spec), "--storage", str(tmp_path / "runs"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


def trial_results(tmp_path, name="tiny"):
    return conftest.trial_results(tmp_path, name)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("sweep")
    proc = launch(tmp_path)
    return tmp_path, proc


def test_sweep_runs_every_trial_through_several_rounds(sweep):
    tmp_path, proc = sweep
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = trial_results(tmp_path)
    assert len(results) == 2
    for rows in results.values():
        assert rows[-1]["schedule_done"] is True
        rounds = {r["round"] for r in rows}
        assert len(rounds) >= 2  # rho ended net0 and the scheduler restarted the trial on net1
        # Every round boundary the trainable reported was a scheduler decision.
        assert any(r["decision"] == "next_round" for r in rows)
        assert rows[-1]["decision"] == "stop"
    assert "-> next_round (saturated)" in proc.stdout or "-> next_round (max_epochs)" in proc.stdout
    assert "done" in proc.stdout.split("trial ")[-1]


def test_launch_and_run_choose_the_same_widths(sweep, tmp_path):
    sweep_dir, _ = sweep
    for rows in trial_results(sweep_dir).values():
        threshold = rows[-1]["config"]["spec"]["prune"]["rho"]["threshold"]
        out = tmp_path / f"run-{threshold}.json"
        proc = subprocess.run(
            [
                *CLI,
                "run",
                str(write_spec(tmp_path)),
                "-q",
                "-o",
                str(out),
                "--set",
                f"prune.rho.threshold={threshold}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        summary = json.loads(out.read_text())
        run_widths = [r["widths"] for r in summary["records"]]
        sweep_widths = []
        for r in rows:
            if not sweep_widths or sweep_widths[-1] != r["widths"]:
                sweep_widths.append(r["widths"])
        assert sweep_widths == run_widths
        assert rows[-1]["final_widths"] == summary["summary"]["widths"]
        assert rows[-1]["final_training_complexity"] == pytest.approx(
            summary["summary"]["training_complexity"]
        )


@pytest.mark.parametrize(
    "one_slot",
    [["--max-concurrent", "1"], ["--set", f"resources.cpu={os.cpu_count()}"]],
    ids=["max-concurrent", "all-cores-per-trial"],
)
def test_rounds_restart_on_the_same_actor_and_keep_every_row(tmp_path, one_slot):
    """One slot, three trials: a trial PAUSEd by rho resumes before the next trial starts, on
    the same (reused) worker process, and result.json keeps the report that ended each round."""
    text = SPEC.replace("grid: [0.005, 0.05]", "grid: [0.005, 0.02, 0.05]")
    # The process figures (report_time) ride along only when asked for, as benchmarks do.
    env = {**os.environ, "ADPRUNE_PROCESS_METRICS": "1"}
    proc = launch_cli(tmp_path, text, *one_slot, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = list(trial_results(tmp_path).values())
    assert len(results) == 3
    for rows in results:
        assert [r["training_iteration"] for r in rows] == list(range(1, len(rows) + 1))
        assert (
            sum(r["decision"] == "next_round" for r in rows) == len({r["round"] for r in rows}) - 1
        )
    # Each trial ran all its rounds before the next trial started.
    spans = sorted((rows[0]["report_time"], rows[-1]["report_time"]) for rows in results)
    for (_, end), (next_start, _) in zip(spans, spans[1:]):
        assert end < next_start
    # One worker process trained every round of every trial.
    assert len({r["pid"] for rows in results for r in rows}) == 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_cluster_fails_fast_with_one_line(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    proc = launch(tmp_path, "--cluster", address, timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and address in lines[0]
    assert "Traceback" not in proc.stderr
    assert elapsed < 30
    assert not (tmp_path / "runs" / "tiny").exists()  # no local Ray sweep was started instead


def test_cluster_auto_without_address_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [*CLI, "launch", str(write_spec(tmp_path)), "--cluster"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2
    assert "RAY_ADDRESS" in proc.stderr and "Traceback" not in proc.stderr


def test_existing_name_needs_resume(sweep):
    tmp_path, _ = sweep
    proc = launch(tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "--resume" in proc.stderr and "Traceback" not in proc.stderr


# Rounds long enough (6 epochs, no early saturation) to kill a worker in the middle of one.
SLOW_SPEC = (
    SPEC.replace("num_train: 128", "num_train: 4096, input_size: 16")
    .replace("max_epochs: 4", "max_epochs: 6")
    .replace("[0.005, 0.05]", "[0.0000001]")
    .replace("flat_band: 0.002", "flat_band: 1.0")
)


def worker_pid_in_round(tmp_path, round_index, timeout_s=30):
    """The pid of the process that reported ``round_index``, once result.json shows it."""
    return last_report_in_round(tmp_path, "tiny", round_index, timeout_s, exact=True)["pid"]


def test_killed_worker_resumes_from_checkpoint(tmp_path):
    spec = write_spec(tmp_path, SLOW_SPEC)
    proc = subprocess.Popen(
        [*CLI, "launch", str(spec), "--storage", str(tmp_path / "runs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    killed = None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if killed is None and "net1" in line and "epoch   1" in line:
            # The trial's worker process: a Ray worker this launch started, which every
            # report names.
            killed = worker_pid_in_round(tmp_path, 1)
            assert killed not in (os.getpid(), proc.pid)
            os.kill(killed, signal.SIGKILL)
    proc.wait(timeout=300)
    output = "".join(lines)
    assert killed is not None, output[-3000:]
    assert proc.returncode == 0, output[-3000:]
    assert "failed; Tune retries it from its last checkpoint" in output
    (rows,) = trial_results(tmp_path).values()
    assert rows[-1]["schedule_done"] is True
    # Resumed from the checkpoint: net0 was never trained again, and net1 went on from the
    # epoch of its last checkpoint, not from epoch 1.
    net0_epochs = [r["epoch"] for r in rows if r["round"] == 0 and r["phase"] == "search"]
    assert net0_epochs == sorted(set(net0_epochs))
    net1 = [(r["epoch"], r["pid"]) for r in rows if r["round"] == 1 and r["phase"] == "search"]
    after_kill = [epoch for epoch, pid in net1 if pid != killed]
    assert after_kill and after_kill[0] > 1
    assert [epoch for epoch, _ in net1][-1] == 6
    # MLflow: every network once, every epoch once, despite the retry.
    check_store_matches(client_for(tmp_path), trial_results(tmp_path), "tiny")


def test_killed_driver_resumes_without_redoing_finished_rounds(tmp_path):
    spec = write_spec(tmp_path, SLOW_SPEC)
    driver = subprocess.Popen(
        [*CLI, "launch", str(spec), "--storage", str(tmp_path / "runs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        start_new_session=True,  # its Ray processes share the session, so all can be ended
    )
    try:
        for line in driver.stdout:
            if "net1" in line and "epoch   2" in line:
                break
        worker_pid_in_round(tmp_path, 1)
    finally:
        kill_session(driver.pid)
        driver.wait(timeout=60)
    (before,) = trial_results(tmp_path).values()
    finished_rounds = {r["round"] for r in before} - {before[-1]["round"]}
    assert 0 in finished_rounds

    proc = launch(tmp_path, "--resume", spec_text=SLOW_SPEC)  # the spec it was launched with
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (after,) = trial_results(tmp_path).values()
    assert after[-1]["schedule_done"] is True
    resumed = after[len(before) :]
    assert resumed, "the resumed sweep reported nothing"
    assert not [r for r in resumed if r["round"] in finished_rounds]
    # The interrupted round went on from a checkpoint, not from its first epoch.
    assert resumed[0]["round"] == before[-1]["round"] and resumed[0]["epoch"] > 1
    # MLflow: the resumed driver wrote into the runs the killed one made; none duplicated.
    check_store_matches(client_for(tmp_path), trial_results(tmp_path), "tiny")


def wait_for_port(port, timeout_s=90):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no Ray head listening on {port} after {timeout_s}s")


def test_cluster_runs_on_a_separately_started_ray(tmp_path):
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    # Ray's unix sockets live under --temp-dir, and socket paths are limited to ~107 bytes.
    short_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={short_dir}",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # the head and everything it starts can be ended together
    )
    try:
        wait_for_port(port)
        proc = subprocess.run(
            [
                *CLI,
                "launch",
                str(write_spec(tmp_path)),
                "--storage",
                str(tmp_path / "runs"),
                "--cluster",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=400,
            env=env,
            cwd=tmp_path,
        )
    finally:
        kill_session(head.pid)
        head.wait(timeout=60)
        shutil.rmtree(short_dir, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"Ray cluster at 127.0.0.1:{port}" in proc.stdout
    results = trial_results(tmp_path)
    assert len(results) == 2
    assert all(rows[-1]["schedule_done"] for rows in results.values())
