"""Search quality: the hypervolume a model-based multi-objective search (Optuna's NSGA-II or
TPE through Tune's OptunaSearch) reaches after N trials, against random search with the same
N trials, the same search space and the same per-trial budget, over several seeds, on digits.

Per seed, both sweeps run side by side in this run (one after the other, same machine) and
their accuracy/MAC fronts are scored against one reference point: the worst net0 accuracy of
the two sweeps, and 1x MACs. Prints each seed's ratio, then the median and the spread.

Target: median ratio > 1.0x.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
from common import launch, reproduce

from ray_jobs.results import load_networks, parse_objectives
from ray_jobs.results._hypervolume import hypervolume, net0_reference

SPEC = """
name: {name}
experiment: search-quality
model: {{arch: cnn, widths: [16, 16, 32, 32]}}
data: {{dataset: digits, batch_size: 64}}
train: {{lr: 0.05, seed: 0}}
prune:
  rho: {{threshold: 0.002, patience: 2, min_epochs: 3, max_epochs: {max_epochs}}}
  delta: {{flat_band: 0.002}}
  min_width: 2
  max_rounds: 4
search_alg:
  name: {alg}
  sampler: {sampler}
  seed: {seed}
  population_size: {population}
  startup_trials: {population}
  objectives: [accuracy:max, mac_reduction:max]
num_samples: {trials}
search:
  prune.rho.threshold: {{loguniform: [0.0003, 0.01]}}
  prune.rho.patience: {{randint: [1, 4]}}
  prune.delta.flat_band: {{loguniform: [0.0005, 0.01]}}
  train.lr: {{loguniform: [0.01, 0.2]}}
resources: {{cpu: 1}}
"""


def run_sweep(folder: Path, name: str, alg: str, args: argparse.Namespace, seed: int) -> None:
    text = SPEC.format(
        name=name,
        alg=alg,
        sampler=args.sampler,
        seed=seed,
        population=args.population,
        trials=args.trials,
        max_epochs=args.max_epochs,
    )
    launch(text, folder, "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}")


def seed_ratio(folder: Path, args: argparse.Namespace, seed: int) -> tuple[float, float, float]:
    from mlflow import MlflowClient

    model, random = f"{args.sampler}-{seed}", f"random-{seed}"
    run_sweep(folder, model, "optuna", args, seed)
    run_sweep(folder, random, "random", args, seed)
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    objectives = parse_objectives("accuracy:max,mac_reduction:max")
    both = load_networks(client, ["search-quality"], [model, random])
    reference = net0_reference(both, objectives)  # one point for both sweeps
    volumes = []
    for name in (model, random):
        rows = [r for r in both if r.sweep == name]
        volumes.append(hypervolume(rows, objectives, reference))
    ratio = volumes[0] / volumes[1] if volumes[1] > 0 else float("inf")
    print(
        f"seed {seed}: {args.sampler} {volumes[0]:.4f}, random {volumes[1]:.4f} "
        f"(reference accuracy {reference[0]:.4f}, 1x MACs): {ratio:.2f}x",
        flush=True,
    )
    return volumes[0], volumes[1], ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sampler", choices=["nsga2", "tpe", "gp"], default="nsga2")
    parser.add_argument("--trials", type=int, default=16, help="trials per sweep (N)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--population", type=int, default=4, help="NSGA-II generation size")
    parser.add_argument("--max-epochs", type=int, default=8, help="rho.max_epochs per round")
    args = parser.parse_args()
    reproduce(
        f"search_quality.py --sampler {args.sampler} --trials {args.trials} "
        f"--seeds {args.seeds} --population {args.population} --max-epochs {args.max_epochs}"
    )
    ratios = []
    with tempfile.TemporaryDirectory(prefix="adprune-search-quality-") as tmp:
        for seed in range(args.seeds):
            folder = Path(tmp) / f"seed-{seed}"
            folder.mkdir()
            ratios.append(seed_ratio(folder, args, seed)[2])
    finite = [r for r in ratios if np.isfinite(r)]
    median = statistics.median(ratios)
    spread = f"{min(finite):.2f}x-{max(finite):.2f}x" if finite else "n/a"
    print(
        f"hypervolume {args.sampler} / random after {args.trials} trials, {args.seeds} seeds: "
        f"median {median:.2f}x, spread {spread} "
        f"(stdev {statistics.pstdev(finite):.2f})"
    )
    print(f"target > 1.0x on the median: {'met' if median > 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
