"""What logging trained networks as MLflow models costs a sweep: the same sweep's wall time
with ``record.models: chosen`` (the default) and with ``none``, launched alternately so that
both see the same machine load, and the writer's time per logged model.

Target: chosen / none wall time <= 1.05x.

    .venv/bin/python benchmarks/models.py                      # 3 pairs, 4 trials each
    .venv/bin/python benchmarks/models.py --pairs 1 --trials 2 --num-train 256 --repeats 1  # smoke

The cost of logging one model is timed directly, on the writer's own code path (the
recorder applying a ``net_model`` record to a fresh sqlite store), for the sweep's small cnn2
and for VGG-19 at net0 and at every width / 4 (CIFAR-shaped), as the median of a few
networks each. It is paid on the driver's writer thread, off the trials' training path.
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

from adprune_core.nets import default_widths

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


def model_logging_seconds(
    folder: Path, arch: str, widths: list[int] | None, input_shape: list[int], repeats: int
) -> tuple[float, float]:
    """Median seconds to log one network as an MLflow model through the recorder, and the
    network file's size in MiB."""
    from adprune_core.nets import NetworkInfo, build_model, default_widths, save_network
    from ray_jobs.tracking import Recorder, RunResolver, SweepInfo

    widths = widths or default_widths(arch)
    uri = f"sqlite:///{folder / f'{arch}-{sum(widths)}.db'}"
    info = SweepInfo("bench", "bench", "adprune-bench-log", uri, {}, [], arch, "synthetic")
    recorder = Recorder(RunResolver(info))
    recorder.apply({"op": "sweep_start"})
    channels, size, _ = input_shape
    network = NetworkInfo(arch, widths, input_shape, 10)
    times, size_mib = [], 0.0
    for index in range(repeats):
        fields = {"trial": f"t{index}", "net": "net0", "phase": "search", "round": 0}
        fields["widths"] = widths
        recorder.apply({"op": "epoch", **fields, "epoch": 1, "metrics": {"accuracy": 0.5}})
        path = folder / f"net-{index}.pt"
        save_network(
            path,
            build_model(
                arch, widths, num_classes=10, input_size=size, in_channels=channels
            ).state_dict(),
            network,
        )
        size_mib = path.stat().st_size / 2**20
        start = time.perf_counter()
        recorder.apply({"op": "net_model", **fields, "path": str(path)})
        times.append(time.perf_counter() - start)
    return statistics.median(times), size_mib


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
    parser.add_argument("--repeats", type=int, default=3, help="networks logged per size")
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
    print(
        f"sweep wall, chosen / none: median {ratio:.3f}x "
        f"(pairs {', '.join(f'{r:.3f}x' for r in ratios)}); "
        f"{verdict(ratio, 1.05, higher_is_better=False)}"
    )
    print(
        f"writer wall per sweep: chosen {statistics.median(writers['chosen']):.2f} s "
        f"({statistics.median(logged):g} models), none {statistics.median(writers['none']):.2f} s"
    )
    with tempfile.TemporaryDirectory(prefix="adprune-bench-log-") as tmp:
        networks = [
            ("cnn2", [16, 32], [3, 16, 16]),
            ("vgg19", None, [3, 32, 32]),
            ("vgg19", [max(1, w // 4) for w in default_widths("vgg19")], [3, 32, 32]),
        ]
        for arch, widths, shape in networks:
            seconds, mib = model_logging_seconds(Path(tmp), arch, widths, shape, args.repeats)
            label = f"{arch} {'net0' if widths is None else widths}"
            print(f"logging one model, {label} ({mib:.1f} MiB): median {seconds:.2f} s")


if __name__ == "__main__":
    main()
