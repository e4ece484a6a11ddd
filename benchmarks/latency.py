"""What timing a network's forward latency costs, next to training it, and the two figures
(net0 and a pruned net) side by side.

For each arch: one training epoch's time, then ``network_latency()`` (batch 1 and the eval
batch, after warm-up, median of repeats) on the same network, with the default
``record.latency`` settings. Prints the latency figures of net0 and of a network with every
width divided by 4, and the measurement's own cost as a fraction of one epoch.

    .venv/bin/python benchmarks/latency.py [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import reproduce

from adprune_core.nets import default_widths
from adprune_core.schedule import PruneSchedule
from ray_jobs.sweep import sweep_spec_from_dict as spec_from_dict

CASES = {
    "cnn": {"dataset": "synthetic", "num_train": 2048, "size": 32},
    "vgg19": {"dataset": "synthetic", "num_train": 1024, "size": 32, "scale": 4},
}


def schedule_for(arch: str, widths: list[int], case: dict, device: str) -> PruneSchedule:
    spec = spec_from_dict(
        {
            "model": {"arch": arch, "widths": widths},
            "data": {
                "dataset": "synthetic",
                "batch_size": 128,
                "eval_batch_size": 256,
                "synthetic": {
                    "num_train": case["num_train"],
                    "num_test": 256,
                    "input_size": case["size"],
                },
            },
            "train": {"device": device},
        }
    )
    return PruneSchedule(spec)


def measure(arch: str, case: dict, device: str) -> None:
    net0 = [max(1, w // case.get("scale", 1)) for w in default_widths(arch)]
    pruned = [max(1, w // 4) for w in net0]
    for label, widths in (("net0", net0), ("pruned /4", pruned)):
        schedule = schedule_for(arch, widths, case, device)
        start = time.perf_counter()
        schedule.train_one_epoch()
        epoch_s = time.perf_counter() - start
        start = time.perf_counter()
        figures = schedule.network_latency()
        cost_s = time.perf_counter() - start
        assert figures is not None
        print(
            f"{arch:>6} {label:>9}: latency b1 {figures.b1_ms:7.3f} ms, batch {figures.batch} "
            f"{figures.batch_ms:8.2f} ms; measuring took {cost_s:5.2f} s = "
            f"{cost_s / epoch_s:5.1%} of one epoch ({epoch_s:.2f} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    reproduce("latency.py")
    print(f"threads: {torch.get_num_threads()}; record.latency defaults (2 warm-up, 5 timed)")
    for arch, case in CASES.items():
        measure(arch, case, args.device)


if __name__ == "__main__":
    main()
