"""Faults with real processes: a diverging trial, an MLflow server that goes away, and a
checkpoint damaged under a killed worker. Afterwards MLflow must hold every network once."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CLI, MlflowServer, expected_cpu, launch_cli, tiny_spec, trial_results
from mlflow import MlflowClient
from mlflow_store import check_store_matches, hierarchy

# Rounds of 6 epochs with enough data that a kill or an outage lands in the middle of one.
SLOW = {
    "num_train: 128": "num_train: 4096, input_size: 16",
    "max_epochs: 4": "max_epochs: 6",
    "flat_band: 0.002": "flat_band: 1.0",
}


def slow_spec(name, grid="[0.0000001]"):
    text = tiny_spec(name, grid=grid)
    for old, new in SLOW.items():
        text = text.replace(old, new)
    return text


def start_launch(folder, spec_text, *args, env=None):
    spec = folder / "spec.yaml"
    spec.write_text(spec_text)
    return subprocess.Popen(
        [*CLI, "launch", str(spec), "--storage", str(folder / "runs"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=folder,
        env=env,
    )


def test_diverging_trial_is_recorded_as_failed_and_the_others_finish(tmp_path):
    spec = tiny_spec("diverge").replace(
        "prune.rho.threshold: {grid: [0.005, 0.05]}", "train.lr: {grid: [0.05, 1.0e+12]}"
    )
    proc = launch_cli(tmp_path, spec)
    # Exit 1: one trial did not finish its schedule; the closing line points at its log.
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "diverged: training loss became" in proc.stdout
    assert "Tune retries" not in proc.stdout  # divergence is not retried: it would recur
    closing = proc.stderr.strip().splitlines()[-1]
    assert closing.startswith("error: 1 of 2 trials failed; their logs: "), closing
    log = closing.split("their logs: ")[1]
    assert "training loss became" in Path(log).read_text()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    roots, children = hierarchy(client)
    trials = {float(t.data.params["train.lr"]): t for t in children[roots[0].info.run_id]}
    bad, good = trials[1.0e12], trials[0.05]
    assert bad.info.status == "FAILED" and bad.data.tags["status"] == "diverged"
    assert "training loss became" in bad.data.tags["error"]
    assert good.info.status == "FINISHED" and good.data.tags["status"] == "done"
    assert all(n.info.status == "FINISHED" for n in children[good.info.run_id])
    assert all(n.info.status != "RUNNING" for n in children[bad.info.run_id])


def test_mlflow_server_outage_is_queued_then_written_by_resume(tmp_path):
    server = MlflowServer(tmp_path / "server").start()
    env = {**os.environ, "ADPRUNE_MLFLOW_RETRY_S": "1"}
    try:
        driver = start_launch(tmp_path, slow_spec("outage"), "--tracking-uri", server.uri, env=env)
        lines = []
        for line in driver.stdout:
            lines.append(line)
            if server.proc is not None and "net0   epoch   2" in line:
                server.stop()  # the store goes away mid-round; training must go on
        driver.wait(timeout=300)
        output = "".join(lines)
        assert driver.returncode == 0, output[-3000:]
        assert "not answering" in output and "queued" in output
        queue = tmp_path / "runs" / "outage" / "mlflow-queue.jsonl"
        assert queue.exists() and queue.read_text().strip()
        (rows,) = trial_results(tmp_path, "outage").values()
        assert rows[-1]["schedule_done"] is True  # the whole schedule trained without MLflow

        server.start()  # same port, same database
        resumed = subprocess.run(
            [*CLI, "launch", str(tmp_path / "spec.yaml"), "--storage", str(tmp_path / "runs")]
            + ["--name", "outage", "--resume"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env=env,
        )
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert "queued by an earlier run" in resumed.stdout
        assert not queue.exists()
        client = MlflowClient(server.uri)
        sweep, _ = check_store_matches(client, trial_results(tmp_path, "outage"), "outage")
        assert sweep.info.status == "FINISHED" and sweep.data.metrics["trials"] == 1
    finally:
        server.stop()


def wait_for_round(tmp_path, name, round_index, epoch, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for rows in trial_results(tmp_path, name).values():
            last = rows[-1]
            if last["round"] == round_index and last["epoch"] >= epoch:
                return last
        time.sleep(0.2)
    raise AssertionError(f"round {round_index} epoch {epoch} not reported in {timeout_s}s")


# With per-round resources the worker dies in net1, after the trial was resized while PAUSEd:
# its retry must come back on net1's share, not net0's.
PER_ROUND = "resources: {cpu: 2, per_round: {min_cpu: 1}}\n"


@pytest.mark.parametrize("resources", ["", PER_ROUND], ids=["fixed", "per_round"])
def test_truncated_checkpoint_falls_back_to_the_one_before(tmp_path, resources):
    driver = start_launch(tmp_path, slow_spec("corrupt") + resources)
    try:
        last = wait_for_round(tmp_path, "corrupt", 1, 3)
        worker = last["pid"]
        os.kill(worker, signal.SIGSTOP)  # it can write no newer checkpoint now
        time.sleep(2)  # let the driver register any result already on its way
        (rows,) = trial_results(tmp_path, "corrupt").values()
        trial_dir = next((tmp_path / "runs" / "corrupt").glob("adprune_trainable_*"))
        damaged = trial_dir / rows[-1]["checkpoint_dir_name"] / "schedule.pt"
        damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
        damaged_epoch, reported_before = rows[-1]["epoch"], len(rows)
        os.kill(worker, signal.SIGKILL)
        output, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, output[-3000:]
    assert f"{damaged.parent.name} unreadable" in output
    (rows,) = trial_results(tmp_path, "corrupt").values()
    assert rows[-1]["schedule_done"] is True
    after = rows[reported_before:]
    # Resumed from the checkpoint before the damaged one: the damaged epoch is trained again.
    assert after[0]["round"] == 1 and after[0]["epoch"] == damaged_epoch
    assert json.dumps(after[0]["checkpoint_fallback"]).count("unreadable") == 1
    if resources:
        assert after[0]["pid"] != worker
        assert all(r["resources_cpu"] == expected_cpu(r) for r in rows)
        assert {r["resources_cpu"] for r in after} == {1.0}  # not net0's 2
    check_store_matches(
        MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"),
        trial_results(tmp_path, "corrupt"),
        "corrupt",
    )


# ---------------------------------------------------------------------------- bad launches


def one_line_exit_2(proc, *words):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(word in lines[0] for word in words), lines[0]


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda s: s[: s.index("search:")], ["search", "empty"]),
        (lambda s: s + "resources: {gpu: 1}\n", ["resources.gpu", "GPU"]),
        (lambda s: s + "resources: {cpu: 4096}\n", ["resources.cpu", "4096"]),
        (
            lambda s: s + "resources: {cpu: 1, per_round: {min_cpu: 2}}\n",
            ["resources.per_round.min_cpu", "resources.cpu"],
        ),
        (lambda s: s.replace("min_width: 2", "min_width: 0"), ["prune.min_width"]),
        (lambda s: s.replace("threshold: 0.01", "threshold: -0.01"), ["prune.rho.threshold"]),
        (lambda s: s.replace("[12, 16]", "[12, 16, 4]"), ["model.widths"]),
        (lambda s: s.replace("dataset: synthetic", "dataset: mnist"), ["data.dataset"]),
        (lambda s: s + "record: {models: best}\n", ["record.models", "chosen"]),
    ],
)
def test_bad_launch_input_fails_before_training(tmp_path, edit, words):
    proc = launch_cli(tmp_path, edit(tiny_spec("bad")), timeout=120)
    one_line_exit_2(proc, *words)
    assert not (tmp_path / "runs" / "bad").exists()
    assert not (tmp_path / "mlruns").exists()  # nothing recorded for a launch that never ran


def test_unwritable_storage_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = launch_cli(tmp_path, tiny_spec("bad"), "--storage", str(blocker / "runs"), timeout=120)
    one_line_exit_2(proc, "--storage", str(blocker / "runs"))


def test_debug_shows_the_traceback(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec("bad").replace("min_width: 2", "min_width: 0"))
    proc = subprocess.run(
        [*CLI, "--debug", "launch", str(spec)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "min_width" in proc.stderr
