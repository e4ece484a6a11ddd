"""Stopping and resuming sweeps as users do, with real Ray, a real MLflow store and the CLI
as a subprocess: Ctrl-C and SIGTERM, --resume held to the launch spec, claimed names, and
launches side by side in one folder."""

import shlex
import signal
import subprocess
import time

import pytest
from conftest import CLI, expected_cpu, launch_cli, tiny_spec, trial_results
from mlflow_store import all_runs, check_store_matches, client_for

# Rounds long enough that a signal lands while trials train; three trials on two cores, so
# one has not started (and has no results yet) when it does.
SLOW = {"num_train: 128": "num_train: 2048", "max_epochs: 4": "max_epochs: 6"}


def slow_spec(name, grid="[0.005, 0.05, 0.5]"):
    text = tiny_spec(name, grid=grid)
    for old, new in SLOW.items():
        text = text.replace(old, new)
    return text


def start_launch(folder, spec_text, *args):
    spec = folder / "spec.yaml"
    spec.write_text(spec_text)
    return subprocess.Popen(
        [*CLI, "launch", "spec.yaml", "--storage", "runs", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=folder,
    )


def interrupt_while_training(proc, signum, second=False, trigger="epoch   1"):
    """Send ``signum`` once a trial has printed ``trigger`` (by default, reported an epoch);
    the whole output and exit status."""
    lines = []
    sent = False
    for line in proc.stdout:
        lines.append(line)
        if not sent and trigger in line:
            proc.send_signal(signum)
            if second:
                time.sleep(0.2)
                proc.send_signal(signum)
            sent = True
    proc.wait(timeout=300)
    assert sent, "".join(lines)[-3000:]
    return "".join(lines), proc.returncode


def resume_from_printed_command(folder, output):
    """Run the command the CLI printed to go on with, as a user would paste it."""
    (line,) = [x for x in output.splitlines() if x.startswith("interrupted: state saved")]
    command = shlex.split(line.split("go on with: ", 1)[1])
    assert command[:2] == ["adprune-sweep", "launch"]
    return subprocess.run(
        [*CLI, *command[1:]], capture_output=True, text=True, cwd=folder, timeout=600
    )


# Stopped once a trial trains net1 on its resized share: a restored trial comes back with
# net0's placement group, and must be given its network's share again.
PER_ROUND = "resources: {cpu: 2, per_round: {min_cpu: 1}}\n"


@pytest.mark.parametrize(
    ("signum", "status", "resources"),
    [(signal.SIGINT, 130, ""), (signal.SIGTERM, 143, ""), (signal.SIGINT, 130, PER_ROUND)],
    ids=["SIGINT", "SIGTERM", "SIGINT-per_round"],
)
def test_a_stop_signal_saves_the_sweep_and_resume_finishes_it_exactly_once(
    tmp_path, signum, status, resources
):
    trigger = "net1   epoch   1" if resources else "epoch   1"
    text = slow_spec("stop")
    if resources:  # no delta stop at net0: every trial reaches net1
        text = text.replace("flat_band: 0.002", "flat_band: 1.0") + resources
    driver = start_launch(tmp_path, text)
    output, code = interrupt_while_training(driver, signum, trigger=trigger)
    assert code == status, output[-3000:]
    assert "Traceback" not in output and "*** SIGTERM received" not in output
    assert "Tuner.restore" not in output and "Stop signal received" not in output
    assert "Could not fetch metrics" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith("interrupted: state saved under ")
    assert "go on with: adprune-sweep launch spec.yaml --name stop --storage runs --resume" in last

    resumed = resume_from_printed_command(tmp_path, output)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    text = resumed.stdout + resumed.stderr
    assert "Traceback" not in text
    assert "Could not fetch metrics" not in text and "FileNotFoundError" not in text
    results = trial_results(tmp_path, "stop")
    assert len(results) == 3 and all(rows[-1]["schedule_done"] for rows in results.values())
    sweep, trials = check_store_matches(client_for(tmp_path), results, "stop")
    assert sweep.info.status == "FINISHED"
    assert all(t.info.status == "FINISHED" for t in trials.values())
    if resources:
        rows = [r for trial_rows in results.values() for r in trial_rows]
        assert all(r["resources_cpu"] == expected_cpu(r) for r in rows)
        assert {r["resources_cpu"] for r in rows if r["round"] > 0} == {1.0}


def test_a_second_ctrl_c_ends_at_once_and_resume_still_records_everything_once(tmp_path):
    proc = start_launch(tmp_path, slow_spec("twice"))
    output, code = interrupt_while_training(proc, signal.SIGINT, second=True)
    assert code == 130, output[-3000:]
    assert "Traceback" not in output
    assert "--name twice --storage runs --resume" in output.strip().splitlines()[-1]
    resumed = resume_from_printed_command(tmp_path, output)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    results = trial_results(tmp_path, "twice")
    assert all(rows[-1]["schedule_done"] for rows in results.values())
    check_store_matches(client_for(tmp_path), results, "twice")


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pinned")
    proc = launch_cli(folder, tiny_spec("pinned"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return folder


@pytest.mark.parametrize(
    ("change", "key", "launched", "now"),
    [
        (
            ("[0.005, 0.05]", "[0.01, 0.02]"),
            "search.prune.rho.threshold.grid",
            "[0.005, 0.05]",
            "[0.01, 0.02]",
        ),
        (("final: {epochs: 0}", "final: {epochs: 0}\ntrain: {lr: 0.2}"), "train.lr", "0.05", "0.2"),
    ],
)
def test_resume_with_a_changed_spec_is_refused_in_one_line(
    finished_sweep, change, key, launched, now
):
    spec = tiny_spec("pinned").replace(*change)
    proc = launch_cli(finished_sweep, spec, "--name", "pinned", "--resume", timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: --resume: {key} is {now} in this spec")
    assert f"launched with {launched}" in line
    assert "Traceback" not in proc.stdout + proc.stderr


def test_resume_may_change_resources_and_needs_no_spec_file(finished_sweep):
    spec = tiny_spec("pinned") + "resources: {cpu: 2}\nmax_concurrent: 1\n"
    changed = launch_cli(finished_sweep, spec, "--name", "pinned", "--resume")
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    bare = subprocess.run(
        [*CLI, "launch", "--storage", "runs", "--name", "pinned", "--resume"],
        capture_output=True,
        text=True,
        cwd=finished_sweep,
        timeout=300,
    )
    assert bare.returncode == 0, bare.stdout[-3000:] + bare.stderr[-3000:]
    assert "2 trials in" in bare.stdout
    runs = all_runs(client_for(finished_sweep))
    sweeps = [r for r in runs if r.data.tags["adprune.kind"] == "sweep"]
    assert [r.data.tags["sweep"] for r in sweeps] == ["pinned"]


@pytest.mark.parametrize("name", ["../x", "x/y", "", "a" * 300, ".."])
def test_a_bad_sweep_name_is_one_line_and_writes_nothing(tmp_path, name):
    proc = launch_cli(tmp_path, tiny_spec("ok"), "--name", name, timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: --name ") and "one path segment" in line
    assert [p.suffix for p in tmp_path.iterdir()] == [".yaml"]  # no runs/, no mlruns/


def test_a_bad_name_in_the_spec_is_refused_too(tmp_path):
    proc = launch_cli(tmp_path, tiny_spec("../up"), timeout=120)
    assert proc.returncode == 2
    assert "name '../up': a sweep name is one path segment" in proc.stderr
    assert not (tmp_path / "up").exists() and not (tmp_path / "runs").exists()


def launch_together(folder, names, delay_s=0.0):
    """Start one launch per name (in this order, ``delay_s`` apart), all in ``folder``."""
    procs = []
    for index, name in enumerate(names):
        spec = folder / f"spec-{index}.yaml"
        spec.write_text(tiny_spec(name))
        procs.append(
            subprocess.Popen(
                [*CLI, "launch", spec.name, "--storage", "runs"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=folder,
            )
        )
        time.sleep(delay_s)
    return [(p, *p.communicate(timeout=600)) for p in procs]


def test_one_name_launched_twice_at_once_runs_once(tmp_path):
    done = launch_together(tmp_path, ["same", "same"], delay_s=0.3)
    codes = sorted(p.returncode for p, _, _ in done)
    assert codes == [0, 2], [(p.returncode, err[-2000:]) for p, _, err in done]
    (refused,) = [err for p, _, err in done if p.returncode == 2]
    (line,) = refused.strip().splitlines()
    assert "same" in line and ("exists" in line or "in use" in line)
    results = trial_results(tmp_path, "same")
    assert len(results) == 2 and all(rows[-1]["schedule_done"] for rows in results.values())
    check_store_matches(client_for(tmp_path), results, "same")


def test_three_launches_in_a_fresh_folder_all_complete(tmp_path):
    names = ["one", "two", "three"]
    done = launch_together(tmp_path, names)
    for proc, out, err in done:
        assert proc.returncode == 0, out[-2000:] + err[-2000:]
        assert "Traceback" not in out + err
    client = client_for(tmp_path)
    for name in names:
        check_store_matches(client, trial_results(tmp_path, name), name)
