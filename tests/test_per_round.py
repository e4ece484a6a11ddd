"""``resources.per_round``: each network's CPU/GPU share from its MACs, applied by Tune at the
round transition, with the same results as a sweep on fixed resources."""

import re

import pytest
import torch
from conftest import expected_cpu, launch_cli, tiny_spec, trial_results
from mlflow_store import check_store_matches, client_for

from adprune_core.config import SpecError
from adprune_core.data import load_dataset
from adprune_core.engine import set_thread_invariant
from adprune_core.schedule import PruneSchedule
from ray_jobs.sweep import sweep_spec_from_dict as spec_from_dict
from ray_jobs.sweep._per_round import ceil_to_step, round_resources, threads_for
from ray_jobs.sweep._spec import PerRoundSpec

PER_ROUND = "resources: {cpu: 2, per_round: {min_cpu: 1, step_cpu: 1}}\n"
FIXED = "resources: {cpu: 2}\n"
DETERMINISTIC = "train: {deterministic: true}\n"


# ---------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("full", "minimum", "step", "ratio", "share"),
    [
        (2.0, 1.0, 1.0, 0.3, 1.0),  # 0.6 CPUs round up to one
        (8.0, 1.0, 1.0, 0.3, 3.0),  # 2.4 -> 3
        (1.0, 0.125, 0.125, 0.3, 0.375),  # 0.3 GPU -> three eighths
        (1.0, 0.125, 0.125, 0.01, 0.125),  # never below the minimum
        (1.0, 0.0, 0.125, 0.25, 0.25),  # on a step: not rounded up a whole step
        (1.5, 1.0, 1.0, 1.0, 1.5),  # never above net0's share
    ],
)
def test_share_scales_with_macs_rounded_up_to_the_step(full, minimum, step, ratio, share):
    # A GPU share may go down to 0; CPUs never do (the spec refuses min_cpu: 0).
    min_cpu = minimum or step
    per_round = PerRoundSpec(min_cpu=min_cpu, step_cpu=step, min_gpu=minimum, step_gpu=step)
    got = round_resources(full, full, per_round, ratio)
    assert got.gpu == share
    assert got.cpu == max(share, min_cpu)


def test_without_per_round_every_network_keeps_net0s_share():
    assert round_resources(2.0, 0.5, None, 0.01).as_tune() == {"cpu": 2.0, "gpu": 0.5}
    assert ceil_to_step(0.375, 0.125) == 0.375 and threads_for(0.5) == 1 and threads_for(2) == 2


@pytest.mark.parametrize(
    ("resources", "key"),
    [
        ({"cpu": 1, "per_round": {"min_cpu": 2}}, "resources.per_round.min_cpu"),
        ({"gpu": 0.5, "per_round": {"min_gpu": 1}}, "resources.per_round.min_gpu"),
        ({"per_round": {"min_gpu": 0.125}}, "resources.per_round.min_gpu"),
        ({"per_round": {"step_cpu": 0}}, "resources.per_round.step_cpu"),
        ({"per_round": {"step_gpu": -0.125}}, "resources.per_round.step_gpu"),
        ({"per_round": {"min_cpu": 0}}, "resources.per_round.min_cpu"),
        ({"per_round": {"scale": "params"}}, "resources.per_round.scale"),
        ({"per_round": {"bogus": 1}}, "resources.per_round.bogus"),
    ],
)
def test_bad_per_round_is_a_spec_error_naming_the_key(resources, key):
    with pytest.raises(SpecError) as info:
        spec_from_dict({"resources": resources})
    assert str(info.value).startswith(f"{key}: ") and "\n" not in str(info.value)


def test_per_round_is_off_by_default_and_on_when_present():
    assert spec_from_dict({}).resources.per_round is None
    on = spec_from_dict({"resources": {"gpu": 1, "per_round": {"min_gpu": 0.25}}})
    assert on.resources.per_round == PerRoundSpec(min_gpu=0.25)


# ---------------------------------------------------------------------------- in a sweep


def run_sweep(folder, name, resources):
    # Two trials: with 2 CPUs for net0, only one fits at a time.
    spec = tiny_spec(name) + resources + DETERMINISTIC
    folder.mkdir()
    proc = launch_cli(folder, spec, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, trial_results(folder, name)


def by_threshold(results):
    """Each trial's networks as (phase, round, epoch, widths, accuracy, AD), by its searched
    value (trial ids differ between sweeps)."""
    out = {}
    for rows in results.values():
        threshold = rows[0]["config"]["spec"]["prune"]["rho"]["threshold"]
        out[threshold] = [
            (r["phase"], r["round"], r["epoch"], r["widths"], r["accuracy"], r["ad_total"])
            for r in rows
        ]
    return out


def test_per_round_resources_change_shares_but_not_results(tmp_path):
    fixed_out, fixed = run_sweep(tmp_path / "fixed", "fixed", FIXED)
    elastic_out, elastic = run_sweep(tmp_path / "elastic", "elastic", PER_ROUND)

    # Same seeds, same widths and accuracies, epoch by epoch, whatever the threads.
    assert by_threshold(fixed) == by_threshold(elastic)
    assert len(fixed) == 2 and all(rows[-1]["schedule_done"] for rows in fixed.values())

    fixed_rows = [r for rows in fixed.values() for r in rows]
    elastic_rows = [r for rows in elastic.values() for r in rows]
    assert {r["resources_cpu"] for r in fixed_rows} == {2.0}
    assert all(r["resources_cpu"] == expected_cpu(r) for r in elastic_rows)
    assert {r["resources_cpu"] for r in elastic_rows if r["round"] == 0} == {2.0}
    assert 1.0 in {r["resources_cpu"] for r in elastic_rows}, "no network was given less"

    # Shown in the progress lines and the trial table; recorded on every net[i] run.
    assert re.search(r"^\[\w+\] net1 .* cpu 1(  ->|$)", elastic_out, re.M), elastic_out[-2000:]
    assert re.search(r"^\[\w+\] net1 .* cpu 2(  ->|$)", fixed_out, re.M), fixed_out[-2000:]
    for rows in elastic.values():
        shares = [str(int(expected_cpu(r))) for r in rows if r["decision"] != "continue"]
        assert re.search(rf"^{rows[0]['trial_id']} .* {','.join(shares)} ", elastic_out, re.M)
    check_store_matches(client_for(tmp_path / "elastic"), elastic, "elastic")
    check_store_matches(client_for(tmp_path / "fixed"), fixed, "fixed")


# ---------------------------------------------------------------------------- thread counts


def train_on_threads(threads):
    """Net0's weights after one epoch of a small VGG trained on ``threads`` threads with
    ``train.deterministic`` (32x32 inputs: BatchNorm over 1x1 maps, which sums across
    threads, is not reached)."""
    spec = spec_from_dict(
        {
            "model": {"arch": "vgg11", "widths": [8, 16, 32, 32, 32, 32, 32, 32]},
            "data": {
                "dataset": "synthetic",
                "batch_size": 32,
                "synthetic": {"num_train": 128, "num_test": 32, "input_size": 32},
            },
            "train": {"deterministic": True},
        }
    )
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        schedule = PruneSchedule(spec, load_dataset(spec.data), "cpu")
        schedule.train_one_epoch()
        return {k: v.clone() for k, v in schedule.model.state_dict().items()}
    finally:
        torch.set_num_threads(before)
        set_thread_invariant(False)  # process-wide flags: leave them as they were


def test_deterministic_training_gives_the_same_bits_on_one_and_two_threads():
    one, two = train_on_threads(1), train_on_threads(2)
    differing = [k for k in one if not torch.equal(one[k], two[k])]
    assert one.keys() == two.keys() and not differing, differing
