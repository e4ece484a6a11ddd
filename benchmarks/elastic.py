"""Per-round resources against fixed resources: the same sweep, the same seeds, run one after
the other in this one run.

Each trial asks for every core for net0 (2 CPUs here); with ``resources.per_round`` it gives
back what its smaller networks do not need (1 CPU from net1 on), so two trials train their
later rounds side by side instead of one after the other. Prints the sweep wall-time ratio
(target <= 0.8x) and checks that every trial's widths and accuracies are identical, which
``train.deterministic`` guarantees whatever each network's thread count.

    .venv/bin/python benchmarks/elastic.py            # final figures: run on a quiet machine
    .venv/bin/python benchmarks/elastic.py --smoke    # seconds-long check that it runs
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

from common import launch, reproduce, trial_results, verdict

SPEC = """
name: {name}
experiment: adprune-bench
model: {{arch: vgg11, widths: {widths}}}
data:
  dataset: synthetic
  batch_size: 64
  synthetic: {{num_train: {num_train}, num_test: 256, input_size: 32, in_channels: 3}}
train: {{deterministic: true}}
prune:
  rho: {{threshold: 1.0e-9, patience: 1, min_epochs: {epochs}, max_epochs: {epochs}}}
  delta: {{flat_band: 1.0}}
  max_rounds: {max_rounds}
search:
  train.seed: {{grid: {seeds}}}
resources: {resources}
"""

# Small networks, as CPU sweeps train: their later rounds take a large part of a trial's time
# and gain little from a second thread, which is what per-round resources give back.
FULL = {
    "widths": [8, 16, 32, 32, 32, 32, 32, 32],
    "num_train": 4096,
    "epochs": 3,
    "max_rounds": 4,
}
SMOKE = {"widths": [8, 16, 16, 16, 16, 16, 16, 16], "num_train": 256, "epochs": 2, "max_rounds": 3}


def spec_text(name: str, size: dict, seeds: list[int], resources: str) -> str:
    return SPEC.format(name=name, seeds=seeds, resources=resources, **size)


def run_sweep(folder: Path, name: str, text: str) -> tuple[float, float, dict]:
    """Tune's fit time (printed by launch), the whole command's wall time, and the results."""
    started = time.perf_counter()
    out = launch(text, folder)
    wall = time.perf_counter() - started
    fit = float(re.search(r"^\d+ trials in ([\d.]+)s$", out, re.M).group(1))
    return fit, wall, trial_results(folder, name)


def outcomes(results: dict) -> dict[int, list[tuple]]:
    """Each trial's networks (widths, test accuracy per epoch), by its seed."""
    by_seed = {}
    for rows in results.values():
        seed = rows[0]["config"]["spec"]["train"]["seed"]
        by_seed[seed] = [(r["phase"], r["round"], r["widths"], r["accuracy"]) for r in rows]
    return by_seed


def shares(results: dict) -> str:
    rows = next(iter(results.values()))
    per_net = {(r["phase"], r["round"]): r["resources_cpu"] for r in rows}
    return ", ".join(f"net{rnd}: {cpu:g}" for (_, rnd), cpu in per_net.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny networks: checks it runs")
    parser.add_argument("--trials", type=int, default=4, help="more than fit at net0's size")
    parser.add_argument("--repeats", type=int, default=1, help="pairs of sweeps, alternated")
    args = parser.parse_args()
    reproduce("elastic.py" + (" --smoke" if args.smoke else ""))
    cores = os.cpu_count() or 1
    size = SMOKE if args.smoke else FULL
    seeds = list(range(args.trials))
    variants = {
        "fixed": f"{{cpu: {cores}}}",
        "per_round": f"{{cpu: {cores}, per_round: {{min_cpu: 1, step_cpu: 1}}}}",
    }
    folder = Path(tempfile.mkdtemp(prefix="adprune-bench-elastic-"))
    fits: dict[str, list[float]] = {name: [] for name in variants}
    walls: dict[str, list[float]] = {name: [] for name in variants}
    results: dict[str, dict] = {}
    for repeat in range(args.repeats):
        order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
        for name in order:
            run_name = f"{name}-{repeat}"
            fit, wall, results[name] = run_sweep(
                folder, run_name, spec_text(run_name, size, seeds, variants[name])
            )
            fits[name].append(fit)
            walls[name].append(wall)
            print(f"{name:<9} repeat {repeat}: sweep {fit:.1f}s, command {wall:.1f}s")
    print(f"{len(seeds)} trials, {cores} CPUs; net0 asks for {cores} CPUs")
    print(f"per-round shares of one trial: {shares(results['per_round'])}")
    fit_ratio = statistics.median(fits["per_round"]) / statistics.median(fits["fixed"])
    wall_ratio = statistics.median(walls["per_round"]) / statistics.median(walls["fixed"])
    target = verdict(fit_ratio, 0.8, higher_is_better=False)
    print(f"sweep wall time, per-round / fixed: {fit_ratio:.2f}x ({target})")
    print(f"whole command (with Ray start-up), per-round / fixed: {wall_ratio:.2f}x")
    same = outcomes(results["fixed"]) == outcomes(results["per_round"])
    print(f"widths and accuracies identical per trial: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
