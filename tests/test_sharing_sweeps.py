"""Sharing in real sweeps (real Ray, a real MLflow store, the CLI as a subprocess): the same
grid launched with sharing on and with --no-share records identical results, sharing happens
only where training is the same, and the counts of net0-epochs match the net runs."""

import json
import re
import subprocess

import pytest
from conftest import CLI, launch_cli, trial_results
from mlflow_store import all_runs, client_for

SPEC = """
name: {name}
experiment: sharing
model: {{arch: cnn2, widths: [12, 16]}}
data:
  dataset: synthetic
  batch_size: 32
  synthetic: {{num_train: 128, num_test: 64}}
prune:
  rho: {{threshold: 0.01, patience: 1, min_epochs: 2, max_epochs: 5}}
  delta: {{flat_band: 0.002}}
  min_width: 2
  max_rounds: 3
final: {{epochs: 2}}
record: {{models: none}}
search:
  prune.rho.threshold: {{grid: [0.003, 0.05]}}
  prune.delta.flat_band: {{grid: [0.002, 0.05]}}
  train.lr: {{grid: [0.05, 0.02]}}
"""
# Histories every net run keeps per epoch, and what closes it.
EPOCH_METRICS = ("ad_total", "accuracy", "loss", "train_accuracy", "ad/layer_00", "ad/layer_01")
NET_METRICS = ("training_complexity", "mac_reduction", "param_reduction", "epochs")
NET_TAGS = ("end_reason", "profile")
TRIAL_METRICS = ("accuracy", "training_complexity", "chosen_round", "rounds")
TRIAL_TAGS = ("final_widths", "delta_reason", "status")
TRIAL_ID = re.compile(r"^[0-9a-f]{5}_\d{5} ?")


def launch_both_ways(new_folder, spec_template):
    """The spec launched with sharing (the default) and with --no-share, each in the folder
    ``new_folder(mode)`` makes: per mode, that folder and the launch's output."""
    runs = {}
    for mode, args in (("shared", ()), ("alone", ("--no-share",))):
        folder = new_folder(mode)
        done = launch_cli(folder, spec_template.format(name=mode), *args, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs[mode] = (folder, done.stdout)
    return runs


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The grid launched twice: with sharing (the default), and with --no-share."""
    return launch_both_ways(tmp_path_factory.mktemp, SPEC)


def runs_by_kind(folder):
    client = client_for(folder)
    runs = all_runs(client)
    kinds = {}
    for run in runs:
        kinds.setdefault(run.data.tags["adprune.kind"], []).append(run)
    return client, kinds


def history(client, run, metric):
    return [
        (m.step, m.value)
        for m in sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)
    ]


def recorded_results(folder):
    """Per trial (named by its searched values): its metrics and tags, and per network its
    widths, per-epoch histories, closing metrics and decision."""
    client, kinds = runs_by_kind(folder)
    label = {r.info.run_id: TRIAL_ID.sub("", r.info.run_name) for r in kinds["trial"]}
    results = {}
    for trial in kinds["trial"]:
        results[label[trial.info.run_id]] = {
            "metrics": {k: trial.data.metrics.get(k) for k in TRIAL_METRICS},
            "tags": {k: trial.data.tags.get(k) for k in TRIAL_TAGS},
            "nets": {},
        }
    for net in kinds["net"]:
        trial = label[net.data.tags["mlflow.parentRunId"]]
        results[trial]["nets"][net.info.run_name] = {
            "widths": net.data.params["widths"],
            "epochs": {m: history(client, net, m) for m in EPOCH_METRICS},
            "closing": {m: net.data.metrics[m] for m in NET_METRICS},
            "tags": {t: net.data.tags.get(t) for t in NET_TAGS},
        }
    return results


def test_sharing_changes_no_result(sweeps):
    shared, alone = (recorded_results(sweeps[m][0]) for m in ("shared", "alone"))
    assert len(shared) == 8 and shared.keys() == alone.keys()
    for trial in alone:
        assert shared[trial] == alone[trial], trial
    assert any(len(r["nets"]) > 2 for r in alone.values())  # several rounds were compared


def trial_lr(run_name):
    return re.search(r"lr=([0-9.e-]+)", run_name).group(1)


def test_trials_share_within_an_lr_and_never_across(sweeps):
    _, kinds = runs_by_kind(sweeps["shared"][0])
    lr_of = {r.data.tags["trial_id"]: trial_lr(r.info.run_name) for r in kinds["trial"]}
    by_run = {r.info.run_id: r for r in kinds["trial"]}
    shared_by_lr = {}
    for net in kinds["net"]:
        trial = by_run[net.data.tags["mlflow.parentRunId"]]
        own_lr = lr_of[trial.data.tags["trial_id"]]
        shared = int(net.data.metrics["shared_epochs"])
        trainer = net.data.tags.get("adprune.trained_by")
        assert (shared > 0) == (trainer is not None)
        if trainer is not None:
            assert trainer != trial.data.tags["trial_id"]
            assert lr_of[trainer] == own_lr, (net.info.run_name, trainer)
        shared_by_lr[own_lr] = shared_by_lr.get(own_lr, 0) + shared
    # Four trials per lr train the same net0: each lr's group shares.
    assert sorted(shared_by_lr) == ["0.02", "0.05"] and all(shared_by_lr.values())
    _, alone = runs_by_kind(sweeps["alone"][0])
    assert all(n.data.metrics["shared_epochs"] == 0 for n in alone["net"])
    assert not any("adprune.trained_by" in n.data.tags for n in alone["net"])


def net0_epochs_from_net_runs(kinds):
    """Independently of the trials' reports: an epoch of a network costs 1 / its MAC reduction
    in net0-epochs; the trained ones are those not loaded from another trial."""
    total = trained = 0.0
    for net in kinds["net"]:
        epochs, shared = net.data.metrics["epochs"], net.data.metrics["shared_epochs"]
        cost = 1.0 / net.data.metrics["mac_reduction"]
        total += epochs * cost
        trained += (epochs - shared) * cost
    return total, trained


@pytest.mark.parametrize("mode", ["shared", "alone"])
def test_net0_epochs_trained_add_up_over_the_net_runs(sweeps, mode):
    folder, stdout = sweeps[mode]
    _, kinds = runs_by_kind(folder)
    total, trained = net0_epochs_from_net_runs(kinds)
    (sweep,) = kinds["sweep"]
    metrics = sweep.data.metrics
    assert metrics["net0_epochs_unshared"] == pytest.approx(total)
    assert metrics["net0_epochs_trained"] == pytest.approx(trained)
    assert metrics["sharing_ratio"] == pytest.approx(trained / total)
    line = re.search(r"trained ([\d.]+) of ([\d.]+) net0-epochs \(([\d.]+)x\)", stdout)
    assert line is not None, stdout[-2000:]
    assert float(line.group(1)) == pytest.approx(trained, abs=0.05)
    assert float(line.group(2)) == pytest.approx(total, abs=0.05)
    if mode == "alone":
        assert trained == pytest.approx(total)
    else:
        assert trained < 0.6 * total  # four trials per lr share one net0


def test_compare_shows_each_trials_shared_epochs(sweeps):
    folder, _ = sweeps["shared"]
    done = subprocess.run(
        [*CLI, "compare", "--format", "json", "--experiment", "sharing"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    shown = {row["trial"]: row["shared_epochs"] for row in json.loads(done.stdout)}
    _, kinds = runs_by_kind(folder)
    trial_of = {r.info.run_id: r.data.tags["trial_id"] for r in kinds["trial"]}
    summed = dict.fromkeys(trial_of.values(), 0)
    for net in kinds["net"]:
        summed[trial_of[net.data.tags["mlflow.parentRunId"]]] += int(
            net.data.metrics["shared_epochs"]
        )
    assert shown == summed and sum(summed.values()) > 0


def test_a_later_sweep_given_the_same_store_trains_nothing_again(sweeps, tmp_path):
    first, _ = sweeps["shared"]
    store = first / "runs" / "shared" / "shared-epochs"
    assert any(store.rglob("*.pt"))
    done = launch_cli(tmp_path, SPEC.format(name="again"), "--set", f"share.root={store}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _, kinds = runs_by_kind(tmp_path)
    assert all(n.data.metrics["shared_epochs"] == n.data.metrics["epochs"] for n in kinds["net"])
    (sweep,) = kinds["sweep"]
    assert sweep.data.metrics["net0_epochs_trained"] == 0.0
    assert recorded_results(tmp_path) == recorded_results(sweeps["alone"][0])
    # Loaded epochs are checkpointed only where they end a network: Tune numbers a trial's
    # checkpoints in order, so its last one's number counts them.
    nets_by_trial = {}
    for net in kinds["net"]:
        trial = net.data.tags["trial_id"]
        nets_by_trial[trial] = nets_by_trial.get(trial, 0) + 1
    for trial, networks in nets_by_trial.items():
        (folder,) = (tmp_path / "runs" / "again").glob(f"*{trial}*")
        last = max(int(c.name.split("_")[1]) for c in folder.glob("checkpoint_*"))
        assert last + 1 == networks, (trial, last, networks)


WAITING_SPEC = """
name: {name}
experiment: waiting
model: {{arch: cnn2, widths: [12, 16]}}
data:
  dataset: synthetic
  batch_size: 32
  synthetic: {{num_train: 768, num_test: 128}}
prune:
  rho: {{threshold: 0.01, patience: 1, min_epochs: 3, max_epochs: 6}}
  delta: {{flat_band: 0.002}}
  min_width: 2
  max_rounds: 2
final: {{epochs: 0}}
record: {{models: none}}
resources: {{cpu: 1}}
search:
  prune.rho.threshold: {{grid: [0.000001, 0.0001, 0.01, 0.5]}}
"""
PROGRESS_LINE = re.compile(r"^\[([0-9a-f]{5}_\d{5})\] ", re.MULTILINE)


def epochs_by_trial(folder, name):
    """Per trial (by its threshold): every report's network, epoch and measures."""
    by_threshold = {}
    for rows in trial_results(folder, name).values():
        threshold = rows[0]["config"]["spec"]["prune"]["rho"]["threshold"]
        by_threshold[threshold] = [
            (r["phase"], r["round"], r["epoch"], r["widths"], r["ad_total"], r["accuracy"])
            for r in rows
        ]
    return by_threshold


def test_trials_waiting_for_anothers_epochs_give_their_slot_to_other_trials(tmp_path_factory):
    """Four trials share net0 on two CPU slots: a trial whose next epoch another is training
    is PAUSEd, a third trial starts before any trial has ended, the paused trial restarts at
    the epoch it waited for, and every epoch matches the same sweep without sharing."""
    runs = launch_both_ways(tmp_path_factory.mktemp, WAITING_SPEC)
    folder, stdout = runs["shared"]
    restarts = []
    for rows in trial_results(folder, "shared").values():
        for waited, after in zip(rows, rows[1:]):
            if waited.get("awaits_key") and after["iterations_since_restore"] == 1:
                restarts.append((waited, after))
    assert restarts, "no trial was paused to wait"
    for waited, after in restarts:
        assert after["epoch"] == waited["awaits_epoch"]
        assert (after["round"] == waited["round"]) == (waited["decision"] == "continue")
    # A trial's last progress line is its last epoch: before the first of those, more trials
    # than the two slots had reported, so waiting ones held none.
    order = PROGRESS_LINE.findall(stdout)
    last_line = {trial: i for i, trial in enumerate(order)}
    first_end = min(last_line.values())
    assert len(set(order[:first_end])) > 2, stdout[:3000]
    assert epochs_by_trial(folder, "shared") == epochs_by_trial(runs["alone"][0], "alone")
