"""Peak and current RSS of each trial process, per round, for the quickstart and for a
CIFAR-shaped VGG-19 at width x 0.25: nothing may grow from round to round."""

import tempfile
from pathlib import Path

from common import REPO, launch, reproduce, trial_results

from adprune_core.nets import default_widths

VGG = """
name: vgg-memory
experiment: adprune-bench
model: {{arch: vgg19, widths: {widths}}}
data:
  dataset: synthetic
  batch_size: 128
  synthetic: {{num_train: 1024, num_test: 256, input_size: 32, in_channels: 3, num_classes: 10}}
prune:
  rho: {{threshold: 1.0e-9, patience: 1, min_epochs: 2, max_epochs: 2}}
  delta: {{flat_band: 1.0}}
  max_rounds: 3
search:
  train.seed: {{grid: [0, 1]}}
resources: {{cpu: 1}}
"""


def report(folder: Path, name: str) -> None:
    for trial_id, rows in trial_results(folder, name).items():
        per_round: dict[tuple, list[float]] = {}
        for row in rows:
            per_round.setdefault((row["phase"], row["round"]), []).append(row["rss_mb"])
        ends = [values[-1] for values in per_round.values()]
        peak = max(row["max_rss_mb"] for row in rows)
        growth = ends[-1] - ends[0]
        print(
            f"{name:<11} {trial_id}: RSS at the end of each round "
            f"{', '.join(f'{e:.0f}' for e in ends)} MiB; peak {peak:.0f} MiB; "
            f"last - first round {growth:+.0f} MiB"
        )


if __name__ == "__main__":
    reproduce("memory.py")
    folder = Path(tempfile.mkdtemp(prefix="adprune-bench-"))
    launch((REPO / "sweeps" / "quickstart.yaml").read_text(), folder)
    report(folder, "quickstart")
    quarter = [max(1, w // 4) for w in default_widths("vgg19")]
    launch(VGG.format(widths=quarter), folder)
    report(folder, "vgg-memory")
