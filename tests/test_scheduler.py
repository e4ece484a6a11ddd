"""ActivationDensityScheduler driven with results recorded from a real in-process schedule."""

import copy

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from adprune_core.config import spec_from_dict, spec_to_dict
from adprune_core.data import load_dataset
from adprune_core.schedule import PruneSchedule
from ray_jobs.sweep import ActivationDensityScheduler
from ray_jobs.sweep._trainable import epoch_metrics

OVERRIDES = [
    "model.arch=cnn2",
    "model.widths=[12, 16]",
    "data.dataset=synthetic",
    "data.synthetic.num_train=96",
    "data.synthetic.num_test=48",
    "data.batch_size=32",
    "prune.rho.min_epochs=2",
    "prune.rho.max_epochs=4",
    "prune.rho.threshold=0.02",
    "prune.rho.patience=1",
    "prune.max_rounds=3",
    "prune.min_width=2",
]


def record_results(overrides):
    """Per-epoch reports exactly as the trainable sends them, plus the run's own records."""
    spec = spec_from_dict({}, OVERRIDES + overrides)
    schedule = PruneSchedule(spec, load_dataset(spec.data), "cpu")
    results = []
    while not schedule.state.done:
        result = schedule.train_one_epoch()
        decision = schedule.decide()
        if decision.action == "stop":
            schedule.advance(decision)
        results.append(epoch_metrics(schedule, result, decision))
        if decision.action != "stop":
            schedule.advance(decision)
    return spec, results, schedule.state


def make_trial(spec):
    config = {"spec": {k: v for k, v in spec_to_dict(spec).items() if k != "search"}}
    return Trial("adprune_trainable", config=config, stub=True)


@pytest.mark.parametrize("final_epochs", [0, 2])
def test_scheduler_replays_the_runs_decisions(final_epochs):
    spec, results, state = record_results([f"final.epochs={final_epochs}"])
    trial = make_trial(spec)
    scheduler = ActivationDensityScheduler()
    actions = [scheduler.on_trial_result(None, trial, r) for r in results]
    search = [r for r in state.records if r.phase == "search"]
    pauses = [i for i, a in enumerate(actions) if a == TrialScheduler.PAUSE]
    # One PAUSE per round boundary (plus one into the final phase), STOP only at the very end.
    assert len(pauses) == len(search) - 1 + (1 if final_epochs else 0)
    assert actions[-1] == TrialScheduler.STOP
    assert set(actions[:-1]) <= {TrialScheduler.CONTINUE, TrialScheduler.PAUSE}
    # The epoch of each PAUSE is the epoch the in-process run ended that round.
    boundaries = []
    epoch = 0
    for record in state.records[:-1]:
        epoch += record.epochs
        boundaries.append(epoch - 1)
    assert pauses == boundaries


def test_pause_puts_the_next_widths_into_the_trial_config():
    spec, results, state = record_results([])
    trial = make_trial(spec)
    scheduler = ActivationDensityScheduler()
    first_pause = next(
        r for r in results if scheduler.on_trial_result(None, trial, r) == TrialScheduler.PAUSE
    )
    transition = trial.config["transition"]
    assert transition["decision"]["action"] == "next_round"
    assert transition["decision"]["next_widths"] == state.records[1].widths
    assert (transition["from_round"], transition["at_epoch"]) == (0, first_pause["epoch"])
    assert trial.config["spec"] == make_trial(spec).config["spec"]  # spec itself untouched


def test_scheduler_is_stateless():
    spec, results, _ = record_results([])
    trial_a, trial_b = make_trial(spec), make_trial(spec)
    continuous = ActivationDensityScheduler()
    expected = [continuous.on_trial_result(None, trial_a, r) for r in results]
    # A fresh scheduler per result, as after Tuner.restore, decides the same way.
    fresh = [ActivationDensityScheduler().on_trial_result(None, trial_b, r) for r in results]
    assert fresh == expected


def handmade(phase, round_index, history, widths=(10, 20), layer_ad=(0.5, 0.5)):
    return {
        "phase": phase,
        "round": round_index,
        "epoch": len(history),
        "widths": list(widths),
        "ad_history": list(history),
        "layer_ad": list(layer_ad),
    }


def test_increasing_round_stops_or_moves_to_final():
    spec = spec_from_dict({}, ["prune.rho.patience=1", "prune.rho.min_epochs=2"])
    rising = [0.30, 0.35, 0.40, 0.4001]
    trial = make_trial(spec)
    scheduler = ActivationDensityScheduler()
    assert scheduler.on_trial_result(None, trial, handmade("search", 2, rising)) == "STOP"
    spec_final = spec_from_dict({}, ["prune.rho.patience=1", "final.epochs=3"])
    trial = make_trial(spec_final)
    action = scheduler.on_trial_result(None, trial, handmade("search", 2, rising))
    assert action == TrialScheduler.PAUSE
    decision = trial.config["transition"]["decision"]
    assert (decision["action"], decision["chosen_round"]) == ("final", 1)
    assert scheduler.on_trial_result(None, trial, handmade("final", 2, [0.4] * 2)) == "CONTINUE"
    assert scheduler.on_trial_result(None, trial, handmade("final", 2, [0.4] * 3)) == "STOP"


def test_result_without_scheduler_fields_is_an_error():
    spec = spec_from_dict({})
    result = handmade("search", 0, [0.5])
    del result["layer_ad"]
    with pytest.raises(ValueError, match="layer_ad"):
        ActivationDensityScheduler().on_trial_result(None, make_trial(spec), copy.deepcopy(result))
