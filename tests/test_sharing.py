"""Train each shared network once: the sharing key, the epoch store, and schedules that share
epochs with results identical to training alone."""

import dataclasses
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from adprune_core.config import SpecError, spec_from_dict, spec_to_dict
from adprune_core.config.sharing import (
    DECISION,
    NEITHER,
    TRAINING,
    key_class,
    training_fields,
    unclassed_keys,
)
from adprune_core.data import load_dataset
from adprune_core.schedule import PruneSchedule
from adprune_core.schedule.epoch_store import DamagedEntry, EpochStore, ShareSettings, StoredState
from adprune_core.schedule.sharing import network_key
from ray_jobs.sweep._sharing import SWEEP_KEY_CLASSES
from ray_jobs.sweep._spec_checks import sweep_spec_from_dict


def tiny_spec(**overrides):
    base = {
        "model.arch": "cnn2",
        "model.widths": "[12, 16]",
        "data.dataset": "synthetic",
        "data.synthetic.num_train": 96,
        "data.synthetic.num_test": 48,
        "data.batch_size": 32,
        "prune.rho.min_epochs": 2,
        "prune.rho.max_epochs": 5,
        "prune.rho.threshold": 0.01,
        "prune.rho.patience": 1,
        "prune.delta.flat_band": 0.002,
        "prune.max_rounds": 3,
        "prune.min_width": 2,
        "final.epochs": 2,
    }
    base.update(overrides)
    return spec_from_dict({}, [f"{k}={v}" for k, v in base.items()])


@pytest.fixture(scope="module")
def data():
    return load_dataset(tiny_spec().data)


# ------------------------------------------------------------------ the key


def every_leaf_spec():
    """A sweep spec where every section is present, so every leaf key is walked."""
    return sweep_spec_from_dict(
        {
            "model": {"arch": "cnn2", "widths": [4, 4]},
            "data": {"dataset": "synthetic"},
            "search": {"prune.rho.threshold": {"grid": [0.01, 0.02]}},
            "pareto": {"reference": "accuracy=net0-2"},
        }
    )


def test_every_spec_key_has_a_class():
    spec = spec_to_dict(every_leaf_spec())
    assert unclassed_keys(spec, SWEEP_KEY_CLASSES) == []
    # The check can fail: a key added without a class is reported by name.
    spec["train"]["new_knob"] = 1
    spec["brand_new_section"] = {"x": 1}
    assert unclassed_keys(spec, SWEEP_KEY_CLASSES) == ["brand_new_section.x"]


def test_an_unclassed_key_counts_as_changing_training():
    assert key_class("brand_new_section.x") == TRAINING
    assert key_class("train.some_new_knob") == TRAINING  # under a training section
    assert key_class("prune.rho.threshold") == DECISION
    assert key_class("prune.delta.flat_band") == DECISION
    assert key_class("record.latency.enabled") == NEITHER
    assert key_class("search", SWEEP_KEY_CLASSES) == NEITHER


def test_each_phase_keys_its_own_horizon():
    spec = spec_to_dict(tiny_spec())
    search, final = training_fields(spec, "search"), training_fields(spec, "final")
    assert "prune.rho.max_epochs" in search and "prune.rho.max_epochs" not in final
    assert "final.epochs" in final and "final.epochs" not in search
    assert "train.lr" in search and "prune.rho.threshold" not in search


def key_of(spec, widths=(12, 16), phase="search", round_index=0):
    return network_key(spec, phase, round_index, list(widths), torch.device("cpu"))


def test_decision_keys_share_and_training_keys_do_not():
    base = key_of(tiny_spec())
    for decision in (
        {"prune.rho.threshold": 0.5},
        {"prune.rho.patience": 3},
        {"prune.delta.flat_band": 0.1},
        {"prune.max_rounds": 9},
        {"prune.min_width": 1},
        {"name": "other"},
        {"data.root": "/elsewhere"},
    ):
        assert key_of(tiny_spec(**decision)) == base, decision
    for training in (
        {"train.lr": 0.01},
        {"train.seed": 1},
        {"prune.rho.max_epochs": 9},
        {"data.batch_size": 16},
        {"prune.measure": "eval"},
    ):
        assert key_of(tiny_spec(**training)) != base, training
    assert key_of(tiny_spec(), widths=(12, 15)) != base
    assert key_of(tiny_spec(), round_index=1) != base
    # final.epochs is the final phase's horizon only.
    assert key_of(tiny_spec(**{"final.epochs": 9})) == base
    final = key_of(tiny_spec(), phase="final")
    assert key_of(tiny_spec(**{"final.epochs": 9}), phase="final") != final


def test_the_thread_count_keys_only_where_results_depend_on_it():
    spec, deterministic = tiny_spec(), tiny_spec(**{"train.deterministic": "true"})
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, one_det = key_of(spec), key_of(deterministic)
        torch.set_num_threads(2)
        two, two_det = key_of(spec), key_of(deterministic)
    finally:
        torch.set_num_threads(threads)
    assert one != two
    assert one_det == two_det


# ------------------------------------------------------------------ the store


def test_a_claimed_epoch_is_waited_for_and_then_loaded(tmp_path):
    store = EpochStore(ShareSettings(tmp_path, poll_s=0.01))
    assert store.obtain("ab" * 10, 1, torch.device("cpu")) is None  # ours to train: claimed
    got = {}
    waiter = threading.Thread(
        target=lambda: got.update(entry=store.obtain("ab" * 10, 1, torch.device("cpu")))
    )
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # waits while the claim is held
    store.save("ab" * 10, 1, {"w": torch.ones(2), "trainer": "first"})
    waiter.join(10)
    assert got["entry"]["trainer"] == "first"
    assert torch.equal(got["entry"]["w"], torch.ones(2))


def test_a_dead_holders_claim_is_taken_over(tmp_path):
    store = EpochStore(ShareSettings(tmp_path))
    claim = tmp_path / "cd" / ("cd" * 10) / "0001.claim"
    claim.parent.mkdir(parents=True)
    claim.write_text(f'{{"host": "{store.host}", "pid": 999999999}}')
    assert store.obtain("cd" * 10, 1, torch.device("cpu")) is None  # taken over: ours


def test_a_claim_this_process_left_behind_is_taken_over(tmp_path):
    # A trial ended mid-epoch in a worker Tune reuses: the pid is alive, the claim is not held.
    store = EpochStore(ShareSettings(tmp_path))
    claim = tmp_path / "cd" / ("cd" * 10) / "0001.claim"
    claim.parent.mkdir(parents=True)
    claim.write_text(f'{{"host": "{store.host}", "pid": {os.getpid()}}}')
    assert store.obtain("cd" * 10, 1, torch.device("cpu")) is None


def test_a_live_holders_claim_is_waited_for(tmp_path):
    store = EpochStore(ShareSettings(tmp_path, poll_s=0.01))
    assert store.obtain("bb" * 10, 1, torch.device("cpu")) is None  # held here
    other = EpochStore(ShareSettings(tmp_path, poll_s=0.01, claim_timeout_s=0.5))
    started = time.monotonic()
    assert other.obtain("bb" * 10, 1, torch.device("cpu")) is None  # only after the timeout
    assert time.monotonic() - started >= 0.5


def test_the_store_names_the_trial_training_an_epoch_in_another_process(tmp_path):
    key = "dd" * 10
    here = EpochStore(ShareSettings(tmp_path, trainer="here"))
    assert here.obtain(key, 1, torch.device("cpu")) is None  # claimed by this process
    assert here.trained_elsewhere(key, 1) is None  # its own claim: nothing to wait for
    claim = tmp_path / "dd" / key / "0002.claim"
    claim.write_text(f'{{"host": "{here.host}", "pid": {os.getppid()}, "trainer": "t-2"}}')
    assert here.trained_elsewhere(key, 2) == "t-2"  # a live process of this host holds it
    claim.write_text(f'{{"host": "{here.host}", "pid": 999999999, "trainer": "t-2"}}')
    assert here.trained_elsewhere(key, 2) is None  # its holder is gone: ours to take over
    here.save(key, 1, {"w": torch.ones(1)})
    assert here.trained_elsewhere(key, 1) is None  # stored: loaded, not waited for
    assert here.trained_elsewhere(key, 3) is None  # nobody trains it


def test_the_store_keeps_to_its_size_by_evicting_the_least_recently_used(tmp_path):
    entry = {"w": torch.zeros(1000)}  # ~4 kB each
    store = EpochStore(ShareSettings(tmp_path, max_bytes=10_000))
    for epoch in range(1, 6):
        store.save("ef" * 10, epoch, entry)
    kept = sorted(p.name for p in tmp_path.rglob("*.pt"))
    assert 1 <= len(kept) <= 2 and kept[-1] == "0005.pt"
    assert sum(p.stat().st_size for p in tmp_path.rglob("*.pt")) <= 10_000


def test_a_damaged_entry_is_trained_again(tmp_path):
    store = EpochStore(ShareSettings(tmp_path))
    path = tmp_path / "aa" / ("aa" * 10) / "0001.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    assert store.obtain("aa" * 10, 1, torch.device("cpu")) is None
    assert not path.exists()


def test_after_a_loaded_epoch_the_look_gives_a_going_on_trainer_time_to_claim_the_next(
    data, tmp_path
):
    spec = tiny_spec()
    run_shared(spec, data, tmp_path, "a")  # every epoch of net0 is stored
    follower = PruneSchedule(spec, data, "cpu", share=ShareSettings(tmp_path, poll_s=0.01))
    follower.step()
    assert follower.sharing.last_loaded
    key = follower.sharing.key
    for path in (tmp_path / key[:2] / key).glob("0002.*"):
        path.unlink()  # epoch 2 is not stored: its trainer is about to claim it
    claim = tmp_path / key[:2] / key / "0002.claim"
    host = follower.sharing.store.host

    def claim_later():
        time.sleep(0.2)
        claim.write_text(f'{{"host": "{host}", "pid": {os.getppid()}, "trainer": "a"}}')

    assert follower.sharing.trained_elsewhere(2) is None  # a bare look: not claimed yet
    writer = threading.Thread(target=claim_later)
    writer.start()
    assert follower.sharing.trained_elsewhere(2, grace_s=5.0) == "a"
    writer.join()
    claim.unlink()
    started = time.monotonic()
    assert follower.sharing.trained_elsewhere(2, grace_s=0.3) is None  # nobody claims it
    assert time.monotonic() - started >= 0.3
    # Only a trainer that said it goes on is waited for: one that left the network is not.
    (tmp_path / key[:2] / key / "0001.next").unlink()
    started = time.monotonic()
    assert follower.sharing.trained_elsewhere(2, grace_s=5.0) is None
    assert time.monotonic() - started < 1.0


def test_a_stored_state_is_read_when_needed_even_after_its_eviction(tmp_path):
    store = EpochStore(ShareSettings(tmp_path))
    key, cpu = "ab" * 10, torch.device("cpu")
    for epoch in (1, 2):
        store.save(key, epoch, {"ad_total": 0.5, "network": {"w": torch.full((3,), epoch)}})
    looked = store.obtain(key, 1, cpu)
    assert looked["ad_total"] == 0.5 and isinstance(looked["network"], StoredState)
    for path in (tmp_path / "ab" / key).iterdir():
        path.unlink()  # evicted after the look: the open file still holds the state
    assert torch.equal(looked["network"].read()["w"], torch.full((3,), 1))
    # A state found damaged only when read: its files go, so that a retry trains the epoch.
    store.save(key, 2, {"ad_total": 0.4, "network": {"w": torch.zeros(3)}})
    damaged = store.obtain(key, 2, cpu)
    (tmp_path / "ab" / key / "0002.pt").write_bytes(b"not a torch file")
    with pytest.raises(DamagedEntry):
        damaged["network"].read()
    assert store.obtain(key, 2, cpu) is None  # the caller now holds the claim to train it


# ------------------------------------------------------------------ schedules


def curves(state):
    return [
        (r.phase, r.round, r.widths, r.ad_history, r.accuracy_history, r.training_complexity)
        for r in state.records
    ]


def run_shared(spec, data, root, trainer):
    schedule = PruneSchedule(spec, data, "cpu", share=ShareSettings(root, trainer=trainer))
    reports = []
    state = schedule.run(reports.append)
    return state, reports


@pytest.mark.parametrize("init", ["random", "inherit"])
def test_schedules_that_share_give_the_results_of_training_alone(data, tmp_path, init):
    thresholds = [0.5, 1e-9, 0.5]  # the third repeats the first: everything is shared
    specs = [tiny_spec(**{"prune.rho.threshold": t, "prune.init": init}) for t in thresholds]
    alone = [PruneSchedule(spec, data, "cpu").run() for spec in specs]
    shared = [run_shared(spec, data, tmp_path, f"t{i}") for i, spec in enumerate(specs)]
    for by_itself, (state, _) in zip(alone, shared):
        assert curves(state) == curves(by_itself)
        assert state.chosen_round == by_itself.chosen_round
        assert state.stop_reason == by_itself.stop_reason
    first, second, third = (reports for _, reports in shared)
    # The closing probes are shared too: the repeat takes the trainer's measured latency
    # and Fig. 3 maps rather than timing the same network again.
    first_records, third_records = shared[0][0].records, shared[2][0].records
    assert [r.latency_ms_b1 for r in third_records] == [r.latency_ms_b1 for r in first_records]
    assert all(r.latency_ms_b1 for r in first_records)
    assert third_records[-1].activation_maps == first_records[-1].activation_maps
    assert not any(r.shared for r in first)
    assert all(r.shared and r.trained_by == "t0" for r in third)
    # The thresholds part ways: the second trial loads net0's epochs up to where its own
    # decision ended the round, then trains what the first never did.
    assert second[0].shared and second[0].trained_by == "t0"
    assert not all(r.shared for r in second)
    last = {(r.phase, r.round): r.shared_epochs for r in third}
    assert all(n > 0 for n in last.values())
    # The tally in net0-epochs: all of a schedule's epochs are its Eq. 1 training complexity;
    # the trained part is what it did not load.
    for reports in (first, second, third):
        end = reports[-1]
        assert end.net0_epochs == pytest.approx(end.training_complexity)
        assert end.trial_shared_epochs == sum(r.shared for r in reports)
    assert first[-1].net0_epochs_trained == pytest.approx(first[-1].net0_epochs)
    assert third[-1].net0_epochs_trained == 0.0
    assert 0 < second[-1].net0_epochs_trained < second[-1].net0_epochs


def test_a_schedule_loading_stored_epochs_reads_only_the_states_it_needs(data, tmp_path):
    """A run of stored epochs is reported from their measures; only the epoch the network
    closes at is read whole. The others' states are damaged here, and nothing is trained."""
    spec = tiny_spec(**{"prune.rho.threshold": 1e-9, "prune.max_rounds": 1, "final.epochs": 0})
    alone, _ = run_shared(spec, data, tmp_path, "a")
    folder = tmp_path / key_of(spec)[:2] / key_of(spec)
    states = sorted(folder.glob("*.pt"))
    assert len(states) >= 3
    for path in states[:-1]:
        path.write_bytes(b"not a torch file")
    state, reports = run_shared(spec, data, tmp_path, "b")
    assert curves(state) == curves(alone)
    assert all(r.shared for r in reports) and reports[-1].net0_epochs_trained == 0.0


def test_a_resumed_schedule_keeps_sharing(data, tmp_path):
    spec = tiny_spec()
    PruneSchedule(spec, data, "cpu", share=ShareSettings(tmp_path, trainer="a")).run()
    interrupted = PruneSchedule(spec, data, "cpu", share=ShareSettings(tmp_path, trainer="b"))
    interrupted.step()  # net0 epoch 1 of 2: loaded from the store
    checkpoint = interrupted.checkpoint()
    resumed = PruneSchedule.from_checkpoint(
        spec, checkpoint, data, "cpu", share=ShareSettings(tmp_path, trainer="b")
    )
    reports = []
    resumed.run(reports.append)
    assert all(r.shared for r in reports)
    assert (reports[0].round, reports[0].epoch) == (0, 2)
    assert reports[0].shared_epochs == 2  # the one before the stop counts too


def test_without_a_store_nothing_is_shared(data):
    reports = []
    PruneSchedule(tiny_spec(), data, "cpu").run(reports.append)
    assert reports and not any(r.shared or r.shared_epochs or r.trained_by for r in reports)
    assert dataclasses.asdict(reports[0])["shared"] is False


# ------------------------------------------------------------------ the spec key


def test_share_false_is_short_for_off_and_on_is_the_default():
    assert sweep_spec_from_dict({}).share.enabled is True
    assert sweep_spec_from_dict({"share": False}).share.enabled is False
    assert sweep_spec_from_dict({"share": {"max_gib": 0.5}}).share.max_gib == 0.5


@pytest.mark.parametrize(
    ("share", "key"),
    [({"max_gib": 0}, "share.max_gib"), ({"nope": 1}, "share.nope"), ("yes", "share")],
)
def test_a_bad_share_key_is_named(share, key):
    with pytest.raises(SpecError) as info:
        sweep_spec_from_dict({"share": share})
    assert str(info.value).startswith(key), str(info.value)
    assert "\n" not in str(info.value)


def test_share_cannot_be_searched():
    with pytest.raises(SpecError, match="share"):
        sweep_spec_from_dict({"search": {"share.enabled": {"grid": [True, False]}}})


def test_a_store_that_cannot_be_created_is_one_launch_error(tmp_path):
    from ray_jobs.sweep._errors import LaunchError
    from ray_jobs.sweep._sharing import share_config

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    spec = sweep_spec_from_dict({"share": {"root": str(blocker / "store")}})
    with pytest.raises(LaunchError, match=r"^share.root: cannot create .*a-file/store"):
        share_config(spec, str(tmp_path / "runs"), "s")
    made = share_config(sweep_spec_from_dict({}), str(tmp_path / "runs"), "s")
    assert made is not None and Path(made["root"]).is_dir()
