"""Search quality: the hypervolume a model-based multi-objective search (Optuna's NSGA-II or
TPE through Tune's OptunaSearch) reaches after N trials, against random search with the same
N trials, the same search space and the same per-trial budget, over several seeds, on digits.

Per seed, both sweeps run side by side in this run (one after the other, same machine) and
their accuracy/MAC fronts are scored against one shared reference point, the product's
default: 5 points below the earliest net0 of the two sweeps, and 1x MACs (a floor at net0's
own accuracy scored nearly every network 0, so one or two networks decided each number).
Also reports each sweep's best MAC reduction within 1 point of its own net0. Prints each
seed's ratios, then the medians and the spread.

Target: median hypervolume ratio > 1.0x.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
from common import launch, reproduce

from ray_jobs.results import (
    ReferenceSpec,
    load_networks,
    parse_objectives,
    reductions_at_loss,
    resolve_reference,
)
from ray_jobs.results._hypervolume import hypervolume

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


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def seed_ratio(folder: Path, args: argparse.Namespace, seed: int) -> tuple[float, float]:
    """(hypervolume ratio, ratio of the MAC reductions at 1 point of loss), model / random."""
    from mlflow import MlflowClient

    model, random = f"{args.sampler}-{seed}", f"random-{seed}"
    run_sweep(folder, model, "optuna", args, seed)
    run_sweep(folder, random, "random", args, seed)
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    objectives = parse_objectives("accuracy:max,mac_reduction:max")
    both = load_networks(client, ["search-quality"], [model, random])
    reference = resolve_reference(ReferenceSpec(), objectives, both)  # one for both sweeps
    volumes, at_one = [], []
    for name in (model, random):
        rows = [r for r in both if r.sweep == name]
        volumes.append(hypervolume(rows, objectives, reference.point))
        (found,) = reductions_at_loss(rows, (1.0,))
        at_one.append(found.network.mac_reduction if found.network else float("nan"))
    hv, red = ratio(*volumes), ratio(*at_one)
    print(
        f"seed {seed}: hypervolume {args.sampler} {volumes[0]:.4f}, random {volumes[1]:.4f} "
        f"({hv:.2f}x); MAC reduction at 1 pt {at_one[0]:.1f}x vs {at_one[1]:.1f}x ({red:.2f}x); "
        f"reference {reference.describe()}",
        flush=True,
    )
    return hv, red


def summary(label: str, ratios: list[float]) -> float:
    finite = [r for r in ratios if np.isfinite(r)]
    median = statistics.median(ratios)
    spread = f"{min(finite):.2f}x-{max(finite):.2f}x" if finite else "n/a"
    stdev = f"{statistics.pstdev(finite):.2f}" if finite else "n/a"
    print(f"{label}: median {median:.2f}x, spread {spread} (stdev {stdev})")
    return median


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
    hv_ratios, loss_ratios = [], []
    with tempfile.TemporaryDirectory(prefix="adprune-search-quality-") as tmp:
        for seed in range(args.seeds):
            folder = Path(tmp) / f"seed-{seed}"
            folder.mkdir()
            hv, red = seed_ratio(folder, args, seed)
            hv_ratios.append(hv)
            loss_ratios.append(red)
    what = f"{args.sampler} / random after {args.trials} trials, {args.seeds} seeds"
    median = summary(f"hypervolume {what}", hv_ratios)
    summary(f"MAC reduction at 1 pt of loss {what}", loss_ratios)
    print(f"target > 1.0x on the hypervolume median: {'met' if median > 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
