"""Sweep overhead on the embedded Ray: N trials of fixed work, 1 CPU each, on this machine's
cores, against the same schedules run one after another in-process. Also the round
transition (rho -> PAUSE -> restart on net[i+1]) and the driver's MLflow time.

Targets: parallel efficiency >= 85%; median transition <= 2 s on CPU; MLflow <= 5% of wall.
"""

import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import launch, reproduce, trial_results, verdict

from adprune_core.data import load_dataset
from adprune_core.schedule import PruneSchedule
from adprune_core.spec import spec_from_dict

TRIALS = 4
SPEC = """
name: overhead
experiment: adprune-bench
model: {arch: cnn2, widths: [16, 32]}
data:
  dataset: synthetic
  batch_size: 64
  synthetic: {num_train: 3072, num_test: 256, input_size: 16, in_channels: 3}
train: {seed: 0}
prune:
  rho: {threshold: 1.0e-9, patience: 1, min_epochs: 2, max_epochs: 4}
  delta: {flat_band: 1.0}
  min_width: 2
  max_rounds: 3
search:
  train.seed: {grid: [0, 1, 2, 3]}
resources: {cpu: 1}
"""


def in_process_seconds() -> float:
    """The same schedules (one per seed), one after another, one thread each as in a trial."""
    import yaml

    torch.set_num_threads(1)
    base = yaml.safe_load(SPEC)
    base.pop("search")
    total = 0.0
    for seed in range(TRIALS):
        spec = spec_from_dict({**base, "train": {"seed": seed}})
        data = load_dataset(spec.data)
        start = time.perf_counter()
        PruneSchedule(spec, data, "cpu").run()
        total += time.perf_counter() - start
    return total


def transitions(results: dict) -> list[tuple[float, float]]:
    """Per transition: (report of net[i]'s last epoch -> net[i+1]'s first epoch starts,
    the part of it spent in Tune before the trainable was entered again)."""
    gaps = []
    for rows in results.values():
        for row, following in zip(rows, rows[1:]):
            if row["decision"] == "next_round":
                restart = following["report_time"] - following["epoch_seconds"]
                in_tune = following["trainable_entered"] - row["report_time"]
                gaps.append((restart - row["report_time"], in_tune))
    return gaps


if __name__ == "__main__":
    reproduce("sweep_overhead.py")
    cores = os.cpu_count() or 1
    serial = in_process_seconds()
    folder = Path(tempfile.mkdtemp(prefix="adprune-bench-"))
    start = time.perf_counter()
    out = launch(SPEC, folder)
    process_wall = time.perf_counter() - start
    fit = float(re.search(r"(\d+) trials in ([\d.]+)s", out).group(2))
    ideal = serial / min(cores, TRIALS)
    efficiency = ideal / fit
    print(
        f"{TRIALS} trials x 3 rounds x 4 epochs: in-process sum {serial:.1f}s; sweep "
        f"{fit:.1f}s on {cores} cores (ideal {ideal:.1f}s; whole command incl. Ray start "
        f"{process_wall:.1f}s)"
    )
    print(f"parallel efficiency {100 * efficiency:.0f}% ({verdict(efficiency, 0.85, True)})")
    pairs = transitions(trial_results(folder, "overhead"))
    gaps = [total for total, _ in pairs]
    median = statistics.median(gaps)
    print(
        f"round transitions: {len(gaps)}, median {median:.2f}s, max {max(gaps):.2f}s "
        f"({verdict(median, 2.0, False)}); of which in Tune (pause, save, restart) median "
        f"{statistics.median(t for _, t in pairs):.2f}s, in the trainable's setup "
        f"{statistics.median(total - t for total, t in pairs):.2f}s"
    )
    written = re.search(r"mlflow: (\d+) records written in ([\d.]+)s of writer CPU time", out)
    cpu_s = float(written.group(2))
    share = cpu_s / fit
    print(
        f"MLflow: {written.group(1)} records in {cpu_s:.2f}s of writer CPU time = "
        f"{100 * share:.1f}% of the sweep's wall ({verdict(share, 0.05, False)}); "
        f"{100 * share / min(cores, TRIALS):.1f}% of the {min(cores, TRIALS)} cores' time"
    )
    print(f"(sweep folder: {folder})")
