"""Measured forward latency beside MACs: timed on a hook-free copy without disturbing the
method, recorded per network in MLflow, and usable as a Pareto objective and compare column."""

import json
import subprocess

import pyarrow.parquet as pq
import pytest
import torch
from conftest import CLI
from mlflow_store import client_for, hierarchy

from adprune_core.config import LatencySpec
from adprune_core.engine import measure_latency
from adprune_core.nets import build_model
from adprune_core.schedule import PruneSchedule
from adprune_core.schedule.closing import measure_probes
from ray_jobs.sweep import sweep_spec_from_dict as spec_from_dict

TINY = {
    "model": {"arch": "cnn2", "widths": [12, 16]},
    "data": {
        "dataset": "synthetic",
        "batch_size": 32,
        "eval_batch_size": 64,
        "synthetic": {"num_train": 128, "num_test": 64},
    },
    "prune": {
        "rho": {"threshold": 0.01, "patience": 1, "min_epochs": 2, "max_epochs": 3},
        "max_rounds": 3,
    },
}


def run_tiny(**record):
    spec = spec_from_dict({**TINY, "record": {"latency": record}} if record else TINY)
    return PruneSchedule(spec).run()


def test_measure_latency_times_batch_one_and_the_eval_batch():
    model = build_model("cnn2", [12, 16], num_classes=10, input_size=32, in_channels=3)
    figures = measure_latency(model, (3, 32, 32), 128, LatencySpec(warmup=1, repeats=5))
    assert figures.batch == 128
    assert 0 < figures.b1_ms < figures.batch_ms  # 128 images cost more than one
    assert model.training  # left as it was found


def test_latency_does_not_change_what_the_schedule_trains():
    timed, untimed = run_tiny(), run_tiny(enabled=False)
    assert [r.widths for r in timed.records] == [r.widths for r in untimed.records]
    assert [r.accuracy_history for r in timed.records] == [
        r.accuracy_history for r in untimed.records
    ]
    assert [r.ad_history for r in timed.records] == [r.ad_history for r in untimed.records]
    assert all(r.latency_ms_b1 is None for r in untimed.records)


def test_every_record_has_its_latency_and_reductions_against_net0():
    records = run_tiny(repeats=3).records
    assert len(records) >= 2
    net0 = records[0]
    assert net0.latency_reduction_b1 == 1.0 and net0.latency_reduction_batch == 1.0
    for record in records:
        assert record.latency_ms_b1 > 0 and record.latency_ms_batch > 0
        assert record.latency_reduction_b1 == net0.latency_ms_b1 / record.latency_ms_b1
        assert record.latency_reduction_batch == net0.latency_ms_batch / record.latency_ms_batch


def test_latency_is_timed_without_the_density_hooks():
    schedule = PruneSchedule(spec_from_dict(TINY))
    schedule.train_one_epoch()
    hooks = sum(len(m._forward_hooks) for m in schedule.model.modules())
    network = schedule.network
    network.monitor.reset()
    # Nothing counted: the timed forwards ran on a copy the monitor does not watch (measured
    # eval passes would otherwise count, as prune.measure: eval counts them).
    network.monitor.count_eval = network.monitor.count_train = True
    probes = measure_probes(schedule.spec, network, schedule.batches)
    assert probes["b1_ms"] > 0 and probes["batch_ms"] > 0
    copy = network.hook_free_copy()
    assert all(int(c.sum()) == 0 for c in network.monitor._elements)
    assert sum(len(m._forward_hooks) for m in schedule.model.modules()) == hooks > 0
    assert sum(len(m._forward_hooks) for m in copy.modules()) == 0
    for name, tensor in copy.state_dict().items():
        assert torch.equal(tensor, schedule.model.state_dict()[name])


def test_latency_spec_is_validated(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\nrecord: {latency: {repeats: 0}}\n")
    proc = subprocess.run([*CLI, "run", str(spec)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "record.latency.repeats" in proc.stderr and "Traceback" not in proc.stderr


def test_sweep_records_latency_on_every_net_and_trial_run(two_sweeps):
    folder, _, _ = two_sweeps
    roots, children = hierarchy(client_for(folder))
    trials = [t for root in roots for t in children[root.info.run_id]]
    assert trials
    for trial in trials:
        nets = children[trial.info.run_id]
        assert nets
        for net in nets:
            m = net.data.metrics
            assert m["latency_ms_b1"] > 0 and m["latency_ms_batch"] > 0
            assert m["latency_reduction_b1"] > 0 and m["latency_reduction_batch"] > 0
        net0 = next(n for n in nets if n.data.params["round"] == "0")
        assert net0.data.metrics["latency_reduction_b1"] == 1.0
        assert trial.data.metrics["latency_ms_b1"] in {
            n.data.metrics["latency_ms_b1"] for n in nets
        }  # the chosen (or final) network's own figure


def test_latency_is_a_pareto_objective_and_a_compare_column(two_sweeps, tmp_path):
    folder, _, _ = two_sweeps
    out = tmp_path / "front.parquet"
    proc = subprocess.run(
        [*CLI, "pareto", "-o", str(out), "--objectives", "accuracy:max,latency_ms_b1:min"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out).to_pylist()
    front = [r for r in table if r["on_front"]]
    assert front
    for row in front:  # nothing else is at least as accurate and faster
        assert not any(
            o["accuracy"] >= row["accuracy"] and o["latency_ms_b1"] < row["latency_ms_b1"]
            for o in table
        )
    proc = subprocess.run(
        [*CLI, "compare", "--sort-by", "latency_ms_b1", "--format", "json"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    latencies = [r["latency_ms_b1"] for r in rows]
    assert all(v > 0 for v in latencies) and latencies == sorted(latencies)


@pytest.mark.parametrize("objective", ["latency_ms_b1:min", "latency_reduction_batch:max"])
def test_latency_objectives_parse(objective):
    from ray_jobs.results import parse_objectives

    (_, second) = parse_objectives(f"accuracy:max,{objective}")
    assert str(second) == objective
