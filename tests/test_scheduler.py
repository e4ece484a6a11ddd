"""ActivationDensityScheduler driven with the reports of a real schedule, produced by the
outer loop a sweep trial runs (:func:`adprune_core.schedule.run_loop`)."""

import copy
import pickle

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from adprune_core.config import spec_to_dict
from adprune_core.data import load_dataset
from adprune_core.schedule import EpochReport, PruneSchedule, run_loop
from adprune_core.schedule.epoch_store import ShareSettings
from ray_jobs.sweep import ActivationDensityScheduler, RoundAwareVariantGenerator
from ray_jobs.sweep import sweep_spec_from_dict as spec_from_dict

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


def record_results(overrides, share=None):
    """Per-epoch reports as Tune receives them from the trainable's loop, plus the run's own
    records."""
    spec = spec_from_dict({}, OVERRIDES + overrides)
    schedule = PruneSchedule(spec, load_dataset(spec.data), "cpu", share=share)
    results: list[dict] = []
    run_loop(schedule, lambda report: results.append(report.to_tune()))
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


def test_a_restored_scheduler_decides_the_same_and_forgets_only_its_actor_cache():
    spec, results, _ = record_results([])
    trial = make_trial(spec)
    continuous = ActivationDensityScheduler()
    generator = RoundAwareVariantGenerator(continuous)
    expected = []
    restored_at = None
    for i, result in enumerate(results):
        expected.append(continuous.on_trial_result(None, trial, result))
        if expected[-1] == TrialScheduler.PAUSE and restored_at is None:
            restored_at = i
            # Between rounds: the trial is remembered, and the search is not finished.
            assert continuous.between_rounds == {trial.trial_id}
            assert not generator.is_finished()
            snapshot = pickle.dumps(continuous)
    assert restored_at is not None
    # Tuner.restore unpickles the scheduler: the cache of paused trials starts empty
    # (ray#30838), and every later decision comes from the result and the trial's config.
    restored = pickle.loads(snapshot)
    assert restored.between_rounds == set()
    trial_b = make_trial(spec)
    trial_b.set_config(copy.deepcopy(trial.config))
    replayed = [restored.on_trial_result(None, trial_b, r) for r in results[restored_at + 1 :]]
    assert replayed == expected[restored_at + 1 :]


def test_a_trials_spec_is_parsed_once_per_config_and_again_after_a_new_one():
    spec, _, _ = record_results([])
    trial = make_trial(spec)
    scheduler = ActivationDensityScheduler()
    first = scheduler.specs.of(trial)
    assert scheduler.specs.of(trial) is first
    changed = copy.deepcopy(trial.config)
    changed["spec"]["prune"]["rho"]["threshold"] = 0.5
    trial.set_config(changed)
    second = scheduler.specs.of(trial)
    assert second.prune.rho.threshold == 0.5 and scheduler.specs.of(trial) is second
    scheduler.on_trial_complete(None, trial, {})  # a finished trial's entry is dropped
    assert scheduler.specs.of(trial) is not second
    assert "specs" not in pickle.loads(pickle.dumps(scheduler)).__getstate__()


def handmade(phase, round_index, history, widths=(10, 20), layer_ad=(0.5, 0.5)):
    """A report with the AD curve given; what the scheduler does not read is filler."""
    return EpochReport(
        phase=phase,
        round=round_index,
        epoch=len(history),
        widths=list(widths),
        ad_total=history[-1],
        layer_ad=list(layer_ad),
        ad_history=list(history),
        accuracy=0.5,
        loss=1.0,
        train_accuracy=0.5,
        params=1,
        macs=1,
        energy_j=0.0,
        param_reduction=1.0,
        mac_reduction=1.0,
        training_complexity=1.0,
        net0_widths=list(widths),
        decision="continue",
        decision_reason="training",
        profile="",
        schedule_done=False,
    ).to_tune()


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


class Controller:
    """What ``choose_trial_to_run`` reads of Tune's controller: its trials."""

    def __init__(self, *trials):
        self.trials = list(trials)

    def get_trials(self):
        return self.trials


def awaiting(result, key, epoch, trainer):
    return {**result, "awaits_key": key, "awaits_epoch": epoch, "awaits_trainer": trainer}


def test_a_trial_waiting_for_anothers_epochs_holds_no_slot_until_its_own_decision_leaves(
    tmp_path,
):
    # Same network, so the same epochs: the waiter saturates after min_epochs, the carrier
    # never does.
    carrier_spec, carried, _ = record_results(
        ["prune.rho.threshold=1e-9", "prune.max_rounds=1"], ShareSettings(tmp_path, trainer="c")
    )
    waiter_spec, alone, waiter_state = record_results(
        ["prune.rho.threshold=0.9", "prune.rho.min_epochs=3"]
    )
    carrier, waiter = make_trial(carrier_spec), make_trial(waiter_spec)
    carrier.set_status(Trial.RUNNING)
    controller = Controller(waiter, carrier)
    scheduler = ActivationDensityScheduler()
    key = carried[0]["share_key"]
    assert key and carried[0]["epoch"] == 1
    fork_epoch = waiter_state.records[0].epochs  # where the waiter alone leaves net0
    assert fork_epoch == 3 and len([r for r in carried if r["round"] == 0]) > fork_epoch

    assert scheduler.on_trial_result(None, carrier, carried[0]) == TrialScheduler.CONTINUE
    # The waiter got epoch 1 and another trial trains epoch 2: it is PAUSEd, though its own
    # decision continues, and holds no slot while the carrier is short of its exit.
    assert alone[0]["decision"] == "continue"
    wait = awaiting(carried[0], key, 2, carrier.trial_id)
    assert scheduler.on_trial_result(None, waiter, wait) == TrialScheduler.PAUSE
    assert waiter.trial_id in scheduler.between_rounds  # its actor stays cached
    waiter.set_status(Trial.PAUSED)
    for result in carried[: fork_epoch - 1]:  # epochs 1 .. fork_epoch - 1
        scheduler.on_trial_result(None, carrier, result)
        assert scheduler.choose_trial_to_run(controller) is None
    # The carrier's report of the waiter's own exit epoch frees it, at exactly that epoch.
    scheduler.on_trial_result(None, carrier, carried[fork_epoch - 1])
    assert scheduler.choose_trial_to_run(controller) is waiter


def test_a_waiting_trial_goes_on_once_the_trainer_stops_training_its_network(tmp_path):
    spec, carried, _ = record_results([], ShareSettings(tmp_path, trainer="c"))
    carrier, waiter = make_trial(spec), make_trial(spec)
    carrier.set_status(Trial.RUNNING)
    scheduler = ActivationDensityScheduler()
    scheduler.on_trial_result(None, carrier, carried[0])
    wait = awaiting(carried[0], carried[0]["share_key"], 2, carrier.trial_id)
    assert scheduler.on_trial_result(None, waiter, wait) == TrialScheduler.PAUSE
    waiter.set_status(Trial.PAUSED)
    assert scheduler.choose_trial_to_run(Controller(waiter, carrier)) is None
    carrier.set_status(Trial.ERROR)  # its worker died: Tune retries it later
    assert scheduler.choose_trial_to_run(Controller(waiter, carrier)) is waiter


def test_a_trial_is_not_paused_for_an_epoch_trained_where_it_leaves_already(tmp_path):
    spec, carried, _ = record_results(
        ["prune.rho.threshold=1e-9", "prune.max_rounds=1"], ShareSettings(tmp_path, trainer="c")
    )
    waiter_spec, _, waiter_state = record_results(["prune.rho.threshold=0.9"])
    carrier, waiter = make_trial(spec), make_trial(waiter_spec)
    scheduler = ActivationDensityScheduler()
    fork_epoch = waiter_state.records[0].epochs
    for result in carried[: fork_epoch + 1]:
        scheduler.on_trial_result(None, carrier, result)
    wait = awaiting(carried[0], carried[0]["share_key"], 2, carrier.trial_id)
    assert scheduler.on_trial_result(None, waiter, wait) == TrialScheduler.CONTINUE
