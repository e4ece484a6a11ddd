"""Model-based search (Tune's OptunaSearch) with real Ray, a real MLflow store and the CLI as
a subprocess: what the sampler is told, failures, the hypervolume, resuming a killed study,
and bad ``search_alg`` input."""

import pickle
import subprocess
import threading
import time

import numpy as np
import optuna
import pytest
from conftest import CLI, kill_session, launch_cli, trial_results
from mlflow_store import check_store_matches, client_for, hierarchy, network_row

from adprune_core.config import SpecError
from ray_jobs.sweep import sweep_spec_from_dict as spec_from_dict
from ray_jobs.sweep._spec import TRIAL_OBJECTIVES, parse_search_objectives, result_key

SPEC = """
name: {name}
experiment: {name}
model: {{arch: cnn2, widths: [12, 16]}}
data:
  dataset: synthetic
  batch_size: 32
  synthetic: {{num_train: {num_train}, num_test: 64}}
prune:
  rho: {{threshold: 0.01, patience: 1, min_epochs: 2, max_epochs: {max_epochs}}}
  delta: {{flat_band: 0.002}}
  min_width: 2
  max_rounds: 3
search_alg:
  name: optuna
  sampler: {sampler}
  seed: {seed}
  population_size: 2
  startup_trials: 2
  objectives: [accuracy:max, mac_reduction:max]
num_samples: {num_samples}
max_concurrent: {max_concurrent}
search:
  prune.rho.threshold: {{uniform: [0.001, 0.05]}}
  train.lr: {lr}
"""


def search_spec(
    name,
    sampler="nsga2",
    seed=3,
    num_samples=4,
    lr="{loguniform: [0.01, 0.1]}",
    num_train=128,
    max_epochs=4,
    max_concurrent=0,
):
    return SPEC.format(
        name=name,
        sampler=sampler,
        seed=seed,
        num_samples=num_samples,
        lr=lr,
        num_train=num_train,
        max_epochs=max_epochs,
        max_concurrent=max_concurrent,
    )


def told_to_sampler(folder, name):
    """Tune trial id -> the Optuna trial the sampler keeps for it, from the searcher state
    Tune saved with the experiment (the latest session's)."""
    # One file per driver session, named by its start time.
    states = sorted((folder / "runs" / name).glob("searcher-state-*.pkl"))
    assert states, "Tune saved no searcher state"
    with states[-1].open("rb") as file:
        saved = pickle.load(file)
    study = saved["_ot_study"]
    return {tid: study.trials[t.number] for tid, t in saved["_ot_trials"].items()}, study


def trial_runs(folder, name):
    roots, children = hierarchy(client_for(folder))
    (sweep,) = [r for r in roots if r.data.tags.get("sweep") == name]
    return sweep, {t.data.tags["trial_id"]: t for t in children[sweep.info.run_id]}, children


@pytest.fixture(scope="module", params=["nsga2", "tpe"])
def finished_study(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"study-{request.param}")
    name = f"mo-{request.param}"
    # TPE's run also searches a learning rate that diverges: that trial must count as failed.
    # One trial at a time, so the seeded sampler proposes the same points on every run.
    tpe = request.param == "tpe"
    lr = "{choice: [0.05, 1.0e+12]}" if tpe else "{loguniform: [0.01, 0.1]}"
    spec = search_spec(name, request.param, lr=lr, max_concurrent=1 if tpe else 0)
    proc = launch_cli(folder, spec)
    # The study's large learning rates make some trials diverge, which a launch reports
    # with exit status 1 and a closing line naming their logs; anything else is a failure.
    diverged = proc.returncode == 1 and "trials failed" in proc.stderr
    assert proc.returncode == 0 or diverged, proc.stdout[-3000:] + proc.stderr[-3000:]
    return folder, name, proc


def test_the_sampler_is_told_each_trials_chosen_network(finished_study):
    folder, name, proc = finished_study
    told, _ = told_to_sampler(folder, name)
    results = trial_results(folder, name)
    assert set(told) == set(results) and len(results) == 4  # num_samples, none repeated
    _, trials, children = trial_runs(folder, name)
    completed = 0
    for trial_id, frozen in told.items():
        last = results[trial_id][-1]
        if not last["schedule_done"]:
            continue
        completed += 1
        assert frozen.state == optuna.trial.TrialState.COMPLETE
        run = trials[trial_id]
        # The chosen network's record in MLflow: net{chosen_round} of this trial.
        (chosen,) = [
            n
            for n in children[run.info.run_id]
            if n.data.params["phase"] == "search"
            and int(n.data.params["round"]) == last["final_chosen_round"]
        ]
        expected = [chosen.data.metrics["accuracy"], chosen.data.metrics["mac_reduction"]]
        assert frozen.values == pytest.approx(expected, rel=1e-12)
        assert frozen.values == [run.data.metrics["accuracy"], run.data.metrics["mac_reduction"]]
        assert f"search: trial {trial_id} -> accuracy {expected[0]:.4g}" in proc.stdout
    assert completed >= 1
    # Each trial's parameters are the ones Optuna proposed.
    for trial_id, frozen in told.items():
        spec = results[trial_id][0]["config"]["spec"]
        assert frozen.params["spec/prune/rho/threshold"] == spec["prune"]["rho"]["threshold"]
    if completed == len(results):  # (a trial that diverged in its first epoch has no net run)
        check_store_matches(client_for(folder), results, name)


def test_the_scheduler_decides_as_run_does_under_optuna(finished_study):
    """Each finished trial's networks are those `run` trains in-process from its config."""
    from adprune_core.schedule import run_schedule

    folder, name, _ = finished_study
    checked = 0
    for rows_ in trial_results(folder, name).values():
        if not rows_[-1]["schedule_done"]:
            continue
        config = rows_[0]["config"]["spec"]
        config.pop("search", None)
        ran = run_schedule(spec_from_dict(config), quiet=True, echo=lambda _: None)
        sweep_widths = []
        for row in rows_:
            if not sweep_widths or sweep_widths[-1] != row["widths"]:
                sweep_widths.append(row["widths"])
        assert sweep_widths == [r["widths"] for r in ran["records"]]
        assert rows_[-1]["final_chosen_round"] == ran["summary"]["chosen_round"]
        checked += 1
    assert checked


def test_a_diverged_trial_is_told_as_failed_not_given_a_value(finished_study):
    folder, name, proc = finished_study
    told, _ = told_to_sampler(folder, name)
    results = trial_results(folder, name)
    diverged = [tid for tid, rows in results.items() if rows[-1].get("diverged")]
    if name == "mo-nsga2":
        assert not diverged
        return
    assert diverged, "the seeded TPE study drew no diverging learning rate"
    for trial_id in diverged:
        assert told[trial_id].state == optuna.trial.TrialState.FAIL
        assert told[trial_id].values is None
        assert f"search: trial {trial_id} failed (" in proc.stdout
    assert len(diverged) < len(results)


def test_the_sweep_run_logs_the_hypervolume_after_every_trial(finished_study):
    folder, name, _ = finished_study
    sweep, trials, _ = trial_runs(folder, name)
    history = client_for(folder).get_metric_history(sweep.info.run_id, "hypervolume")
    steps = sorted(m.step for m in history)
    assert steps == list(range(1, len(trials) + 1))
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert all(b >= a for a, b in zip(values, values[1:]))  # the front only grows
    assert sweep.data.metrics["hypervolume_ref_mac_reduction"] == 1.0

    pareto = subprocess.run(
        [*CLI, "pareto", "-o", str(folder / "p.parquet"), "--experiment", name],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=120,
    )
    assert pareto.returncode == 0, pareto.stderr[-2000:]
    (line,) = [x for x in pareto.stdout.splitlines() if ": hypervolume " in x]
    assert line.startswith(f"sweep {name} ") and line.endswith(f"hypervolume {values[-1]:.4g}")
    (ref,) = [x for x in pareto.stdout.splitlines() if x.startswith("hypervolume reference")]
    accuracy = sweep.data.metrics["hypervolume_ref_accuracy"]
    assert f"accuracy {accuracy:.4f}, mac_reduction 1x" in ref


def test_each_trial_ends_score_equals_rescoring_the_trials_ended_by_then(finished_study):
    """The sweep run's score after k trials, logged as they ended (each end reads only its
    own trial's networks from the store), equals a scoring of every network of the first k
    trials to end, read back at once."""
    from ray_jobs.results._hypervolume import (
        experiment_baseline,
        sweep_progress,
        sweep_reference_spec,
    )
    from ray_jobs.results._records import load_networks

    folder, name, _ = finished_study
    sweep, trials, _ = trial_runs(folder, name)
    client = client_for(folder)
    experiment = client.get_experiment(sweep.info.experiment_id).name
    sweep_id = sweep.data.tags["sweep_id"]
    ended = sorted(trials.values(), key=lambda r: (r.info.end_time, r.data.tags["trial_id"]))
    order = [r.data.tags["trial_id"] for r in ended]
    logged = client.get_metric_history(sweep.info.run_id, "hypervolume")
    by_step = {m.step: m.value for m in logged}
    networks = load_networks(client, [experiment], sweep_id=sweep_id)
    reference = sweep_reference_spec(client, experiment, sweep_id)
    baseline = experiment_baseline(client, experiment)
    assert sorted(by_step) == list(range(1, len(order) + 1))
    for count in by_step:
        chosen = set(order[:count])
        rows = [r for r in networks if r.trial in chosen]
        expected = sweep_progress(rows, reference, baseline)["hypervolume"]
        assert by_step[count] == pytest.approx(expected, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------- hypervolume


def rows(points, round_index=1):
    """Networks at (accuracy, MAC reduction) points, as the reading side loads them."""
    return [
        network_row(accuracy, mac_reduction, round_index, f"t{i}", run_id=f"r{round_index}-{i}")
        for i, (accuracy, mac_reduction) in enumerate(points)
    ]


def test_hypervolume_by_hand_against_five_points_below_net0():
    from ray_jobs.results import ReferenceSpec, parse_objectives, resolve_reference
    from ray_jobs.results._hypervolume import hypervolume

    objectives = parse_objectives("accuracy:max,mac_reduction:max")
    networks = rows([(0.9, 4.0), (0.8, 10.0), (0.7, 2.0), (0.5, 20.0)])
    net0s = rows([(0.65, 1.0)], round_index=0)
    reference = resolve_reference(ReferenceSpec(), objectives, net0s + networks)
    assert reference.point == pytest.approx((0.60, 1.0))  # net0 0.65 - 5 points, and 1x MACs
    # Boxes beyond (0.6, 1): (0.9, 4) gives 0.3 x 3; (0.8, 10) adds 0.2 x 6; (0.7, 2) is
    # dominated; (0.5, 20) is below the floor and adds nothing; net0 sits at 1x: nothing.
    value = hypervolume(net0s + networks, objectives, reference.point)
    assert value == pytest.approx(0.3 * 3 + 0.2 * 6)
    assert hypervolume(net0s, objectives, reference.point) == 0.0
    three = parse_objectives("accuracy:max,mac_reduction:max,training_complexity:min")
    cube = hypervolume(rows([(0.9, 4.0)]), three, np.array([0.5, 1.0, 3.0]))
    assert cube == pytest.approx(0.4 * 3.0 * 2.0)  # training complexity 1 against 3


# ---------------------------------------------------------------------------- resume


def saved_one_done_one_training(folder, name):
    try:
        told, _ = told_to_sampler(folder, name)
    except (AssertionError, OSError, EOFError, pickle.UnpicklingError):
        return False  # not saved yet
    states = [t.state for t in told.values()]
    # A trial Tune creates after its last save is unknown to the resumed sweep, so kill only
    # once the trial that follows the completed one is in the saved state too.
    return optuna.trial.TrialState.COMPLETE in states and optuna.trial.TrialState.RUNNING in states


@pytest.mark.slow  # a study launched, killed and resumed: about 85 s on 2 CPUs
def test_a_killed_study_resumes_without_repeating_a_trial(tmp_path):
    name = "killed"
    # Every trial trains three whole rounds (flat AD, rho never saturating) on bigger inputs:
    # long enough that the kill lands while one trains.
    spec = (
        search_spec(name, "tpe", num_samples=3, num_train=4096, max_epochs=6, max_concurrent=1)
        .replace("flat_band: 0.002", "flat_band: 1.0")
        .replace("{uniform: [0.001, 0.05]}", "{uniform: [1.0e-8, 1.0e-7]}")
        .replace("num_test: 64", "num_test: 64, input_size: 16")
    )
    (tmp_path / "spec.yaml").write_text(spec)
    driver = subprocess.Popen(
        [*CLI, "launch", "spec.yaml", "--storage", "runs"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(driver.stdout), daemon=True)
    reader.start()
    try:
        # Kill once Tune has saved a searcher state that holds a completed trial and the one
        # training after it (it saves the experiment at least every 10 s).
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not saved_one_done_one_training(tmp_path, name):
            time.sleep(0.2)
        # Not within the instant after an epoch's report, while Tune deletes the checkpoint
        # its saved state names and before it saves that state anew.
        time.sleep(0.5)
    finally:
        kill_session(driver.pid)
        driver.wait(timeout=60)
        reader.join(timeout=10)
    told_at = any(line.startswith("search: trial ") for line in lines)
    output = "".join(lines)
    assert told_at is not None, output[-3000:]
    before = trial_results(tmp_path, name)
    finished = {tid for tid, rows_ in before.items() if rows_[-1]["schedule_done"]}
    # The kill landed mid-study: a trial had finished, and not all of them.
    assert finished and len(finished) < 3, output[-2000:]
    told_before, _ = told_to_sampler(tmp_path, name)

    resumed = subprocess.run(
        [*CLI, "launch", "spec.yaml", "--storage", "runs", "--name", name, "--resume"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = trial_results(tmp_path, name)
    assert len(after) == 3 and set(before) <= set(after)  # num_samples trials, none anew
    assert all(rows_[-1]["schedule_done"] for rows_ in after.values()), resumed.stdout[-5000:]
    for trial_id in finished:  # a finished trial is not trained again
        assert len(after[trial_id]) == len(before[trial_id])
    told, study = told_to_sampler(tmp_path, name)
    assert set(told) == set(after) and len(study.trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in told.values())
    for trial_id in finished:  # the study went on: what it was told before is still there
        assert told[trial_id].values == told_before[trial_id].values
    check_store_matches(client_for(tmp_path), after, name)


# ---------------------------------------------------------------------------- bad input


GOOD = search_spec("bad")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("name: optuna", "name: hyperopt"), "search_alg.name: expected one of random, grid"),
        (("sampler: nsga2", "sampler: cmaes"), "search_alg.sampler: expected one of tpe"),
        (("[accuracy:max,", "[loss:max,"), "search_alg.objectives[0]: 'loss' is not a recorded"),
        (("[accuracy:max,", "[accuracy:up,"), "search_alg.objectives[0]: mode 'up' is not max"),
        (
            ("mac_reduction:max]", "mac_reduction:max, param_reduction:max, epochs:min]"),
            "search_alg.objectives: expected 1 to 3 objectives, got 4",
        ),
        (
            ("{uniform: [0.001, 0.05]}", "{grid: [0.001, 0.05]}"),
            "search.prune.rho.threshold: grid cannot be used with search_alg.name optuna",
        ),
        (("num_samples: 4\n", ""), "num_samples: required with search_alg.name optuna"),
        (("num_samples: 4", "num_samples: 0"), "num_samples: expected a value >= 1, got 0"),
    ],
)
def test_bad_search_alg_is_one_line_exit_2_before_ray_starts(tmp_path, change, expected):
    assert change[0] in GOOD
    proc = launch_cli(tmp_path, GOOD.replace(*change), timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and expected in line, line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlruns").exists()
    assert "Ray" not in proc.stdout


def test_objectives_parse_like_pareto_and_default_to_max():
    parsed = parse_search_objectives(["accuracy", "training_complexity:min"])
    assert [(o.column, o.mode, result_key(o)) for o in parsed] == [
        ("accuracy", "max", "final_accuracy"),
        ("training_complexity", "min", "final_training_complexity"),
    ]
    for column in TRIAL_OBJECTIVES:
        assert parse_search_objectives([column])[0].column == column
    with pytest.raises(ValueError, match="named twice"):
        parse_search_objectives(["accuracy:max", "accuracy:min"])


def test_random_search_keeps_todays_defaults_and_takes_grid():
    spec = spec_from_dict({"search": {"prune.rho.threshold": {"grid": [0.001, 0.002]}}})
    assert spec.search_alg.name == "random" and spec.num_samples == 1
    with pytest.raises(SpecError, match=r"search\.search_alg\.seed: cannot be searched over"):
        spec_from_dict({"search": {"search_alg.seed": {"choice": [1, 2]}}})
