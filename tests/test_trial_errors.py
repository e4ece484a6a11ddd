"""A sweep that cannot train says so before it starts, a trial error that a retry cannot fix is
not retried, and the exit status says whether every trial finished: the real CLI on a real
embedded Ray, recorded in a real sqlite MLflow store."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from conftest import CLI, launch_cli, tiny_spec, trial_results
from mlflow_store import client_for, hierarchy

NO_VALUE = "–"


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.fixture
def ray_tmp():
    """A short RAY_TMPDIR (Ray's unix socket paths must stay under 108 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def ray_sessions(ray_tmp):
    """Ray session folders under RAY_TMPDIR: one appears when the launch starts Ray."""
    return list((ray_tmp / "ray").glob("session_*")) if (ray_tmp / "ray").exists() else []


# ---------------------------------------------------------------------------- before Ray


@pytest.mark.parametrize(
    "overrides, words",
    [
        (
            ["--set", "data.dataset=cifar10", "--set", "data.root=empty-data"],
            ["cifar10 not found under", "empty-data", "data.download=true"],
        ),
        pytest.param(
            ["--set", "train.device=cuda"],
            ["train.device", "cuda", "no CUDA device"],
            marks=pytest.mark.skipif(
                torch.cuda.is_available(), reason="this machine has a CUDA device"
            ),
        ),
    ],
    ids=["missing-cifar10", "cuda-without-gpu"],
)
def test_a_sweep_that_cannot_train_fails_in_one_line_before_ray_starts(
    tmp_path, ray_tmp, overrides, words
):
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    started = time.monotonic()
    proc = launch_cli(tmp_path, tiny_spec("cannot"), *overrides, timeout=120, env=env)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = error_lines(proc.stderr)
    assert line.startswith("error: ") and all(w in line for w in words), line
    assert "Traceback" not in proc.stdout + proc.stderr
    assert elapsed < 45, f"{elapsed:.1f}s to the error line"
    assert not ray_sessions(ray_tmp)  # Ray never started
    assert not (tmp_path / "runs" / "cannot").exists()
    assert not (tmp_path / "mlruns").exists()  # no MLflow store, no runs


def test_a_dataset_whose_files_are_malformed_is_one_line_too(tmp_path, ray_tmp):
    base = tmp_path / "data" / "tiny-imagenet-200"
    (base / "train" / "n01" / "images").mkdir(parents=True)
    (base / "val").mkdir()
    (base / "wnids.txt").write_text("n01\n")
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t63\t63\n")
    overrides = ["--set", "data.dataset=tinyimagenet", "--set", f"data.root={tmp_path / 'data'}"]
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    proc = launch_cli(tmp_path, tiny_spec("malformed"), *overrides, timeout=120, env=env)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = error_lines(proc.stderr)
    assert line.startswith("error: data.dataset: tinyimagenet: ValueError: ") and "n99" in line
    assert not ray_sessions(ray_tmp) and not (tmp_path / "runs" / "malformed").exists()


# ---------------------------------------------------------------------------- in the trials

RAY_ONLY_DATA = '''
import ray
import torch


def load(root, seed):
    """Loads on the driver; raises in a Ray worker (a data share the nodes do not mount)."""
    if ray.is_initialized():
        raise RuntimeError("the data share is not mounted here")
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 255, (64, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 4, (64,), generator=g)
    return x, y, x[:32], y[:32], 4
'''


def write_ray_only_plugin(folder):
    package = folder / "src" / "rayonly"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data.py").write_text(RAY_ONLY_DATA)
    return package


@pytest.fixture(scope="module")
def worker_only_failure(tmp_path_factory):
    """A sweep of two trials whose plugin loader raises only inside Ray's workers."""
    folder = tmp_path_factory.mktemp("worker-only")
    package = write_ray_only_plugin(folder)
    # Searched seeds: each trial's data differs from the spec's own, which the driver loaded
    # in its checks and would hand to trials of the same data; these load their own.
    spec = (
        tiny_spec("rayonly")
        .replace("dataset: synthetic", 'dataset: "rayonly.data:load"')
        .replace("prune.rho.threshold: {grid: [0.005, 0.05]}", "data.seed: {grid: [1, 2]}")
    )
    proc = launch_cli(folder, spec, "--py-module", str(package), "--max-failures", "3")
    return folder, proc


@pytest.mark.slow
def test_a_loader_that_fails_in_the_workers_ends_each_trial_once_with_exit_1(
    worker_only_failure,
):
    folder, proc = worker_only_failure
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-4000:]
    reason = "data.dataset: rayonly.data:load: the loader raised RuntimeError: the data share"
    progress = [line for line in proc.stdout.splitlines() if "error (not retried)" in line]
    assert len(progress) == 2 and all(reason in line for line in progress), proc.stdout[-3000:]
    assert "Traceback" not in output and "retries it" not in output
    results = trial_results(folder, "rayonly")
    assert len(results) == 2
    for rows in results.values():
        assert len(rows) == 1  # one attempt, one report: no retry
        assert reason in rows[0]["trial_error"]
    # The closing line: how many failed and where their logs are; each log path once.
    closing = error_lines(proc.stderr)[-1]
    assert closing.startswith("error: 2 of 2 trials failed"), closing
    logs = sorted((folder / "runs" / "rayonly").glob("*/error.log"))
    assert len(logs) == 2
    for log in logs:
        assert str(log) in closing and output.count(str(log)) == 1
        text = log.read_text()
        assert "Traceback" in text and "the data share is not mounted here" in text


@pytest.mark.slow
def test_the_trial_table_shows_the_reason_and_no_figures_for_a_trial_without_network(
    worker_only_failure,
):
    _, proc = worker_only_failure
    table = proc.stdout[proc.stdout.index("trial        ") :].splitlines()
    rows = [line for line in table if "seed=" in line]
    assert len(rows) == 2
    for row in rows:
        cells = row.split()
        assert cells[2] == "error" and "the loader raised RuntimeError" in row
        assert cells[4:9] == [NO_VALUE] * 5  # chosen, widths, accuracy, MACs red., complexity
        assert "0.0%" not in row and "1.0x" not in row and "[]" not in row


@pytest.mark.slow
def test_mlflow_and_compare_record_the_error_and_leave_the_figures_unset(worker_only_failure):
    folder, _ = worker_only_failure
    client = client_for(folder)
    roots, children = hierarchy(client)
    (sweep,) = roots
    trials = children[sweep.info.run_id]
    assert len(trials) == 2
    for trial in trials:
        assert trial.info.status == "FAILED" and trial.data.tags["status"] == "error"
        assert "the loader raised RuntimeError" in trial.data.tags["error"]
        recorded = set(trial.data.metrics)
        assert not recorded & {"accuracy", "mac_reduction", "param_reduction"}, recorded
        assert not recorded & {"training_complexity", "rounds"}, recorded
        assert "final_widths" not in trial.data.tags
        assert children[trial.info.run_id] == []  # no network was trained
    compare = subprocess.run(
        [*CLI, "compare", "--format", "table"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
    )
    assert compare.returncode == 0, compare.stderr[-2000:]
    rows = [line for line in compare.stdout.splitlines() if line.startswith("rayonly")]
    assert len(rows) == 2
    for row in rows:
        cells = row.split()
        # sweep, trial, seed, status, rounds, widths, accuracy, MACs, complexity, latency
        assert cells[3] == "error" and cells[4:10] == [NO_VALUE] * 6, row
    as_json = subprocess.run(
        [*CLI, "compare", "--format", "json"], capture_output=True, text=True, cwd=folder
    )
    for record in json.loads(as_json.stdout):
        assert record["accuracy"] is None and record["mac_reduction"] is None


# ---------------------------------------------------------------------------- retryable

# Long enough epochs (4096 images of 16x16) that a kill lands before the trial ends.
SLOW = {
    "num_train: 128": "num_train: 4096, input_size: 16",
    "max_epochs: 4": "max_epochs: 6",
    "flat_band: 0.002": "flat_band: 1.0",
}


def slow_spec(name):
    text = tiny_spec(name, grid="[0.0000001]")
    for old, new in SLOW.items():
        text = text.replace(old, new)
    return text


def wait_for_new_worker(folder, name, known, timeout_s=180):
    """The pid of the worker that reported last, once it is one not in ``known``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for rows in trial_results(folder, name).values():
            if rows[-1]["pid"] not in known:
                return rows[-1]["pid"]
        time.sleep(0.2)
    raise AssertionError(f"no report from a new worker in {timeout_s}s")


@pytest.mark.slow
def test_a_worker_killed_more_often_than_max_failures_is_retried_then_errors(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(slow_spec("killed"))
    driver = subprocess.Popen(
        [*CLI, "launch", str(spec), "--storage", str(tmp_path / "runs"), "--max-failures", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    killed = []
    try:
        for _ in range(2):  # the first death is retried, the second is one too many
            pid = wait_for_new_worker(tmp_path, "killed", killed)
            assert pid not in (os.getpid(), driver.pid)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        stdout, stderr = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 1, stdout[-3000:] + stderr[-3000:]
    died = "The actor died unexpectedly"
    retried = [line for line in stdout.splitlines() if "Tune retries it" in line]
    assert len(retried) == 1 and died in retried[0], stdout[-3000:]
    gave_up = [line for line in stdout.splitlines() if "out of retries" in line]
    assert len(gave_up) == 1 and died in gave_up[0], stdout[-3000:]
    assert "Traceback" not in stdout + stderr  # the tracebacks are in the trial's error.txt
    (rows,) = trial_results(tmp_path, "killed").values()
    assert not rows[-1]["schedule_done"]
    assert {r["pid"] for r in rows} == set(killed)  # trained on both workers, then gave up
    closing = error_lines(stderr)[-1]
    assert closing.startswith("error: 1 of 1 trials failed"), closing
    log = Path(closing.split("their logs: ")[1])
    assert log.name == "error.txt" and log.parent.parent == tmp_path / "runs" / "killed"
    assert log.read_text().count("Failure # ") == 2  # both deaths, in the one file
    row = [line for line in stdout.splitlines() if "threshold=" in line][-1]
    assert row.split()[2] == "error" and row.split()[5:9] == [NO_VALUE] * 4 and died in row
    (sweep,), children = hierarchy(client_for(tmp_path))
    (trial,) = children[sweep.info.run_id]
    assert trial.info.status == "FAILED" and trial.data.tags["status"] == "error"
    assert "accuracy" not in trial.data.metrics


@pytest.mark.slow
def test_ray_tmpdir_is_where_an_embedded_ray_keeps_its_sessions(ray_tmp):
    """The check above that Ray never started looks for a session under RAY_TMPDIR; it would
    see one if Ray did start."""
    script = "import ray; ray.init(num_cpus=1, include_dashboard=False); ray.shutdown()"
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ray_sessions(ray_tmp)


# ---------------------------------------------------------------------------- the pieces


def test_each_dataset_device_and_precision_a_search_can_give_is_checked_once():
    from ray_jobs.sweep import sweep_spec_from_dict as spec_from_dict
    from ray_jobs.sweep._preflight import trial_setups

    spec = spec_from_dict(
        {
            "data": {"dataset": "digits"},
            "search": {
                "data.dataset": {"grid": ["digits", "synthetic"]},
                "data.batch_size": {"grid": [32, 64]},  # the same load for both
                "train.device": {"choice": ["cpu", "cuda"]},
                "prune.rho.threshold": {"grid": [0.001, 0.002]},
            },
        }
    )
    setups = {(s.data.dataset, s.train.device) for s in trial_setups(spec)}
    expected = {("digits", "auto"), ("synthetic", "auto"), ("digits", "cpu"), ("digits", "cuda")}
    assert setups == expected
    assert len(trial_setups(spec)) == 4


TUNE_ERROR_TXT = """Failure # 1 (occurred at 2026-12-07_01-02-56)
The actor died unexpectedly before finishing this task.
\tclass_name: ImplicitFunc
Failure # 2 (occurred at 2026-12-07_01-03-27)
Traceback (most recent call last):
  File "x.py", line 1, in <module>
ray.exceptions.RayTaskError(ValueError): ray::ImplicitFunc.train() (pid=1)
ValueError: widths do not fit
"""


def test_the_line_shown_for_an_error_tune_caught_is_its_latest_cause():
    from ray_jobs.sweep._trial_errors import error_line

    assert error_line(TUNE_ERROR_TXT) == "ValueError: widths do not fit"
    first = TUNE_ERROR_TXT.split("Failure # 2")[0]
    assert error_line(first) == "The actor died unexpectedly before finishing this task."
    assert error_line("") == "trial failed"
