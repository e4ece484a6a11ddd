"""Sweep overhead on the embedded Ray: N trials of fixed work, 1 CPU each, on this machine's
cores, against the same schedules run one after another in-process. Also the round
transition (rho -> PAUSE -> restart on net[i+1]) and the driver's MLflow time.

Targets: parallel efficiency >= 85%; median transition <= 2 s on CPU; MLflow <= 5% of wall.

Besides the verdicts it prints where the trial slots' time went (training epochs, and the
gaps around them), and a ceiling: the same schedules in bare processes, one per core, with no
Ray and no MLflow. On a machine with few cores the driver and Ray's own processes share them
with the trials, which no scheduling can hide.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from common import launch, reproduce, trial_results, verdict

from adprune_core.data import load_dataset
from adprune_core.schedule import PruneSchedule
from ray_jobs.sweep import sweep_spec_from_dict as spec_from_dict

SPEC = """
name: overhead
experiment: adprune-bench
model: {{arch: cnn2, widths: [16, 32]}}
data:
  dataset: synthetic
  batch_size: 64
  synthetic: {{num_train: {num_train}, num_test: 256, input_size: 16, in_channels: 3}}
train: {{seed: 0}}
prune:
  rho: {{threshold: 1.0e-9, patience: 1, min_epochs: 2, max_epochs: 4}}
  delta: {{flat_band: 1.0}}
  min_width: 2
  max_rounds: 3
search:
  train.seed: {{grid: {seeds}}}
resources: {{cpu: 1}}
"""


def spec_text(trials: int, num_train: int) -> str:
    return SPEC.format(num_train=num_train, seeds=list(range(trials)))


def schedules_seconds(text: str, seeds: list[int]) -> float:
    """The schedules of ``seeds``, one after another in this process, one thread each as in
    a trial; the sum of their times (data loading excluded, as a trial caches it)."""
    torch.set_num_threads(1)
    base = yaml.safe_load(text)
    base.pop("search")
    total = 0.0
    for seed in seeds:
        spec = spec_from_dict({**base, "train": {"seed": seed}})
        data = load_dataset(spec.data)
        start = time.perf_counter()
        PruneSchedule(spec, data, "cpu").run()
        total += time.perf_counter() - start
    return total


def bare_processes_seconds(text: str, trials: int, slots: int) -> float:
    """Wall time of the same schedules split over ``slots`` plain processes (no Ray)."""
    spec_file = Path(tempfile.mkdtemp(prefix="adprune-bench-")) / "spec.yaml"
    spec_file.write_text(text)
    start = time.perf_counter()
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "--in-process", str(spec_file), *map(str, seeds)],
            stdout=subprocess.DEVNULL,
        )
        for seeds in (list(range(trials))[slot::slots] for slot in range(slots))
    ]
    for worker in workers:
        worker.wait()
    return time.perf_counter() - start


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


def slot_time(results: dict) -> dict[str, float]:
    """Trial time by kind: epochs, first-epoch setup after each (re)start, between epochs."""
    epochs = setup = between = 0.0
    for rows in results.values():
        for row, previous in zip(rows, [None, *rows[:-1]]):
            start = row["report_time"] - row["epoch_seconds"]
            epochs += row["epoch_seconds"]
            if previous is None or row["trainable_entered"] != previous["trainable_entered"]:
                setup += start - row["trainable_entered"]
            else:
                between += start - previous["report_time"]
    return {"epochs": epochs, "setup": setup, "between": between}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="trials in the sweep")
    parser.add_argument("--num-train", type=int, default=3072, help="images per epoch")
    parser.add_argument("--in-process", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:  # a bare worker of bare_processes_seconds
        spec_file, *seeds = args.in_process
        schedules_seconds(Path(spec_file).read_text(), [int(s) for s in seeds])
        return
    reproduce(f"sweep_overhead.py --trials {args.trials} --num-train {args.num_train}")
    text = spec_text(args.trials, args.num_train)
    cores = os.cpu_count() or 1
    slots = min(cores, args.trials)
    serial = schedules_seconds(text, list(range(args.trials)))
    bare = bare_processes_seconds(text, args.trials, slots)
    folder = Path(tempfile.mkdtemp(prefix="adprune-bench-"))
    start = time.perf_counter()
    out = launch(text, folder)
    process_wall = time.perf_counter() - start
    fit = float(re.search(r"(\d+) trials in ([\d.]+)s", out).group(2))
    ideal = serial / slots
    efficiency = ideal / fit
    print(
        f"{args.trials} trials x 3 rounds x 4 epochs of {args.num_train} images: in-process sum "
        f"{serial:.1f}s; sweep {fit:.1f}s on {cores} cores (ideal {ideal:.1f}s; whole command "
        f"incl. Ray start {process_wall:.1f}s)"
    )
    print(f"parallel efficiency {100 * efficiency:.0f}% ({verdict(efficiency, 0.85, True)})")
    print(
        f"ceiling on this machine: the same schedules in {slots} bare processes (no Ray, no "
        f"MLflow) take {bare:.1f}s = {100 * ideal / bare:.0f}% efficiency"
    )
    results = trial_results(folder, "overhead")
    spent = slot_time(results)
    print(
        f"trial slots ({slots} x {fit:.1f}s = {slots * fit:.1f}s): epochs {spent['epochs']:.1f}s "
        f"({spent['epochs'] / serial:.2f}x their in-process time), setup after each (re)start "
        f"{spent['setup']:.1f}s, between epochs (report + checkpoint) {spent['between']:.1f}s, "
        f"rest (worker start, transitions, idle) "
        f"{slots * fit - sum(spent.values()):.1f}s"
    )
    pairs = transitions(results)
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
        f"{100 * share / slots:.1f}% of the {slots} cores' time"
    )
    print(f"(sweep folder: {folder})")


if __name__ == "__main__":
    main()
