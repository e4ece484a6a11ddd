"""What logging trained networks as MLflow models costs a sweep: the same sweep's wall time
with ``record.models: chosen`` (the default) and with ``none``, launched alternately so that
both see the same machine load, and the writer's time per logged model.

Target: chosen / none wall time <= 1.05x.

    .venv/bin/python benchmarks/models.py                      # 3 pairs, 4 trials each
    .venv/bin/python benchmarks/models.py --pairs 1 --trials 2 --num-train 256   # smoke run

The cost per model is the driver's writer-thread time (the closing line of each launch:
"N records written in X s of writer CPU time (Y s wall)") with ``chosen`` minus that with
``none``, over the models logged.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from common import launch, reproduce, verdict
from mlflow import MlflowClient

SPEC = """
name: {name}
experiment: adprune-bench-models
model: {{arch: cnn2, widths: [16, 32]}}
data:
  dataset: synthetic
  batch_size: 64
  synthetic: {{num_train: {num_train}, num_test: 256, input_size: 16, in_channels: 3}}
train: {{seed: 0}}
prune:
  rho: {{threshold: 1.0e-9, patience: 1, min_epochs: 2, max_epochs: 3}}
  delta: {{flat_band: 1.0}}
  min_width: 2
  max_rounds: 3
final: {{epochs: 1}}
record: {{models: {models}}}
search:
  train.seed: {{grid: {seeds}}}
resources: {{cpu: 1}}
"""

WRITER = re.compile(r"(\d+) records written in ([\d.]+)s of writer CPU time \(([\d.]+)s wall\)")


def one_sweep(folder: Path, models: str, trials: int, num_train: int) -> tuple[float, float, int]:
    """Wall seconds of one launch, its writer's wall seconds, and the models it logged."""
    name = f"{models}-{time.monotonic_ns()}"
    text = SPEC.format(name=name, num_train=num_train, models=models, seeds=list(range(trials)))
    start = time.perf_counter()
    output = launch(text, folder)
    wall = time.perf_counter() - start
    match = WRITER.search(output)
    writer_wall = float(match.group(3)) if match else float("nan")
    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("adprune-bench-models").experiment_id],
        filter_string=f"tags.sweep = '{name}' and tags.`adprune.kind` = 'net'",
    )
    logged = sum(1 for r in runs if r.data.tags.get("adprune.model_uri"))
    return wall, writer_wall, logged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="chosen/none pairs, alternating")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--num-train", type=int, default=2048)
    args = parser.parse_args()
    reproduce("models.py")
    walls: dict[str, list[float]] = {"chosen": [], "none": []}
    writers: dict[str, list[float]] = {"chosen": [], "none": []}
    logged = []
    with tempfile.TemporaryDirectory(prefix="adprune-bench-models-") as tmp:
        folder = Path(tmp)
        for pair in range(args.pairs):
            # Alternate which goes first, so neither always meets a warmer machine.
            order = ("chosen", "none") if pair % 2 == 0 else ("none", "chosen")
            for models in order:
                wall, writer, count = one_sweep(folder, models, args.trials, args.num_train)
                walls[models].append(wall)
                writers[models].append(writer)
                if models == "chosen":
                    logged.append(count)
                print(
                    f"pair {pair + 1} {models:6s}: {wall:6.1f} s, writer {writer:5.2f} s, "
                    f"{count} models"
                )
    ratio = statistics.median(walls["chosen"]) / statistics.median(walls["none"])
    ratios = [c / n for c, n in zip(walls["chosen"], walls["none"])]
    per_model = [(c - n) / max(k, 1) for c, n, k in zip(writers["chosen"], writers["none"], logged)]
    print(
        f"sweep wall, chosen / none: median {ratio:.3f}x "
        f"(pairs {', '.join(f'{r:.3f}x' for r in ratios)}); "
        f"{verdict(ratio, 1.05, higher_is_better=False)}"
    )
    print(
        f"writer wall per logged model: median {statistics.median(per_model):.3f} s "
        f"({statistics.median(logged)} models per sweep; off the training path, on the "
        "driver's writer thread)"
    )


if __name__ == "__main__":
    main()
