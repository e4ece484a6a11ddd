import io
import json
import math

import pytest
import torch

from adprune_core.config import TrainingDiverged, spec_from_dict
from adprune_core.data import load_dataset
from adprune_core.schedule import (
    Decision,
    NetRecord,
    PruneSchedule,
    RoundHistory,
    ScheduleState,
    summarize,
    transition,
)


def tiny_spec(**overrides):
    base = [
        "model.arch=cnn2",
        "model.widths=[12, 16]",
        "data.dataset=synthetic",
        "data.synthetic.num_train=96",
        "data.synthetic.num_test=48",
        "data.batch_size=32",
        "prune.rho.min_epochs=2",
        "prune.rho.max_epochs=3",
        "prune.rho.threshold=0.5",  # saturates as soon as min_epochs allows
        "prune.rho.patience=1",
        "prune.delta.flat_band=1.0",  # every curve is flat: delta never stops early
        "prune.max_rounds=3",
        "prune.min_width=2",
    ]
    extra = [f"{k}={v}" for k, v in overrides.items()]
    return spec_from_dict({}, base + extra)


@pytest.fixture(scope="module")
def data():
    return load_dataset(tiny_spec().data)


def test_schedule_follows_algorithm_one(data):
    spec = tiny_spec()
    state = PruneSchedule(spec, data, "cpu").run()
    search = [r for r in state.records if r.phase == "search"]
    assert len(search) == 3 and state.stop_reason == "max_rounds" and state.chosen_round == 2
    assert search[0].widths == [12, 16]
    for prev, nxt in zip(search, search[1:]):
        # net[i+1] = clamp(round(AD_L * w_L), min_width, w_L) from the last epoch of net[i],
        # written out here with round-half-up, not with the function under test.
        densities = prev.layer_ad_history[-1]
        rule = [min(max(math.floor(ad * w + 0.5), 2), w) for w, ad in zip(prev.widths, densities)]
        assert nxt.widths == rule
        assert prev.epochs_to_rho == 2 == prev.epochs == len(prev.ad_history)
    for r in search:
        assert all(0 < ad <= 1 for ad in r.ad_history)
        assert r.ad_history[-1] == pytest.approx(sum(r.layer_ad_history[-1]) / 2)
        assert len(r.channel_ad) == 2 and len(r.channel_ad[1]) == r.widths[1]
    assert search[1].widths != search[0].widths
    expected = 0.0
    for r in state.records:
        expected += r.epochs / r.mac_reduction
        assert r.training_complexity == pytest.approx(expected)


def test_same_seed_same_widths_and_curves(data):
    first = PruneSchedule(tiny_spec(), data, "cpu").run()
    second = PruneSchedule(tiny_spec(), data, "cpu").run()
    assert [r.widths for r in first.records] == [r.widths for r in second.records]
    assert [r.ad_history for r in first.records] == [r.ad_history for r in second.records]
    other = PruneSchedule(tiny_spec(**{"train.seed": 5}), data, "cpu").run()
    assert [r.ad_history for r in other.records] != [r.ad_history for r in first.records]


@pytest.mark.parametrize("stop_after", [1, 2, 4])
def test_resume_mid_round_is_exact(data, stop_after):
    spec = tiny_spec(**{"prune.rho.threshold": 1e-9, "prune.max_rounds": 2})
    reference = PruneSchedule(spec, data, "cpu").run()

    interrupted = PruneSchedule(spec, data, "cpu")
    for _ in range(stop_after):
        interrupted.step()
    buffer = io.BytesIO()
    torch.save(interrupted.checkpoint(), buffer)
    # The state must survive JSON, the way a checkpoint directory stores it.
    checkpoint = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    checkpoint["state"] = json.loads(json.dumps(checkpoint["state"]))
    resumed = PruneSchedule.from_checkpoint(spec, checkpoint, data, "cpu").run()
    assert [r.ad_history for r in resumed.records] == [r.ad_history for r in reference.records]
    assert [r.accuracy_history for r in resumed.records] == [
        r.accuracy_history for r in reference.records
    ]


def test_final_phase_trains_the_chosen_widths(data):
    spec = tiny_spec(**{"final.epochs": 2, "prune.max_rounds": 2})
    schedule = PruneSchedule(spec, data, "cpu")
    state = schedule.run()
    final = state.records[-1]
    assert final.phase == "final" and final.epochs == 2
    assert final.widths == state.records[state.chosen_round].widths
    summary = summarize(state)
    assert summary.accuracy == final.accuracy
    assert summary.baseline_complexity == sum(r.epochs for r in state.records)


def test_increasing_round_goes_to_final_on_the_previous_widths(data):
    spec = tiny_spec(**{"final.epochs": 1})
    schedule = PruneSchedule(spec, data, "cpu")
    for _ in range(2):
        schedule.train_one_epoch()
    schedule.advance(Decision("next_round", "saturated", "flat", [6, 9], None, "saturated"))
    for _ in range(2):
        schedule.train_one_epoch()
    # What decide() returns when net1's curve turns upward (see test_criteria).
    schedule.advance(Decision("final", "increasing", "increasing", None, 0, "saturated"))
    assert schedule.state.phase == "final" and schedule.state.widths == [12, 16]
    state = schedule.run()
    assert [r.label for r in state.records] == ["net0", "net1", "final(net0)"]
    assert state.records[1].profile == "increasing"
    assert (state.stop_reason, state.chosen_round) == ("increasing", 0)
    assert summarize(state).widths == [12, 16]
    assert summarize(state).rounds == 2


def test_inherit_init_runs_and_prunes(data):
    state = PruneSchedule(tiny_spec(**{"prune.init": "inherit"}), data, "cpu").run()
    assert len([r for r in state.records if r.phase == "search"]) == 3


def test_divergence_is_reported(data):
    spec = tiny_spec(**{"train.lr": 1e30, "train.momentum": 0.0})
    with pytest.raises(TrainingDiverged):
        PruneSchedule(spec, data, "cpu").run()


def test_state_round_trips_through_dict(data):
    schedule = PruneSchedule(tiny_spec(), data, "cpu")
    schedule.run()
    again = ScheduleState.from_dict(json.loads(json.dumps(schedule.state.to_dict())))
    assert again == schedule.state


def closed(round_index, widths, phase="search"):
    return NetRecord(
        round_index,
        phase,
        list(widths),
        3,
        [0.5] * 3,
        [[0.5]] * 3,
        [[0.5]],
        [0.9] * 3,
        [0.1] * 3,
        0.9,
        0.1,
        10,
        100,
        0.0,
        1.0,
        1.0,
        "saturated",
        "flat",
        3,
        3.0,
    )


def test_transition_is_pure_and_moves_to_the_next_network():
    history = RoundHistory([0.5, 0.4], [[0.5], [0.4]], [0.8, 0.9], [0.2, 0.1], [[0.4]])
    state = ScheduleState([8], [8], history=history, records=[closed(0, [8])])
    moved = transition(state, Decision("next_round", "saturated", "flat", [4], None, "saturated"))
    assert (moved.phase, moved.round, moved.widths, moved.epoch) == ("search", 1, [4], 0)
    # The old state is untouched: the scheduler may hold it.
    assert (state.round, state.widths, state.epoch, len(state.records)) == (0, [8], 2, 1)
    assert transition(state, Decision("continue", "training")) is state


def test_transition_to_final_trains_the_chosen_widths_and_stop_ends():
    records = [closed(0, [8]), closed(1, [4])]
    state = ScheduleState([8], [4], round=1, records=records)
    final = transition(state, Decision("final", "increasing", "increasing", None, 0, "saturated"))
    assert (final.phase, final.widths, final.chosen_round, final.stop_reason) == (
        "final",
        [8],
        0,
        "increasing",
    )
    done = transition(final, Decision("stop", "final_done", "flat"))
    assert done.done and (done.chosen_round, done.stop_reason) == (0, "increasing")
    stopped = transition(state, Decision("stop", "max_rounds", "flat", None, 1, "saturated"))
    assert stopped.done and (stopped.chosen_round, stopped.stop_reason) == (1, "max_rounds")


def test_a_networks_record_closes_in_the_step_that_ends_it(data):
    spec = tiny_spec(**{"prune.max_rounds": 2})
    schedule = PruneSchedule(spec, data, "cpu")
    reports = []
    schedule.run(reports.append)
    ends = [r for r in reports if r.ends_network]
    # Every network's record closed with the report that ended it, whatever the decision.
    assert [r.decision for r in ends] == ["next_round", "stop"]
    assert len(ends) == len(schedule.state.records)
    for report, record in zip(ends, schedule.state.records):
        assert report.closing is not None and report.closing.profile == record.profile
        assert report.training_complexity == record.training_complexity
    assert ends[-1].schedule_done and ends[-1].summary == summarize(schedule.state)
