"""torchvision networks by name: density-monitor overhead and the cost of a pruned net.

For each of resnet18, resnet50, mobilenet_v2, vgg11_bn and densenet121 at 32x32 on
CIFAR-shaped synthetic data:

(a) monitor overhead: epoch time with the density monitor's hooks attached against not, in one
    process, adjacent pairs alternating which goes first. Target: median ratio <= 1.05x.
(b) find the groups and build a pruned net: Torch-Pruning's dependency graph and the dry run
    that finds the density sites (cold: the structure cache cleared), then a fresh model pruned
    to 0.5x net0's widths. Target: <= 5 % of one epoch on 2,048 images.

Ratios are printed next to their targets, never asserted: timings on a shared machine vary.

    .venv/bin/python benchmarks/torchvision_nets.py [--images 2048] [--models a,b] [--smoke]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from common import cifar_shaped, median, reproduce, timed, verdict

from adprune_core.data import DeviceBatches
from adprune_core.engine import DensityMonitor, train_epoch
from adprune_core.nets import arch_info, build_model
from adprune_core.nets.torchvision_nets import structure

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "vgg11_bn", "densenet121"]
BATCH = 128
CLASSES = 10
OVERHEAD_TARGET = 1.05
BUILD_TARGET = 0.05
TARGET_IMAGES = 2048


def net0(name: str) -> torch.nn.Module:
    return build_model(f"torchvision:{name}", None, num_classes=CLASSES, input_size=32)


def epoch_pair(model: torch.nn.Module, batches: DeviceBatches) -> tuple[Callable, Callable]:
    """One training epoch without and with the monitor, on the same model and optimiser."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(0)

    def plain() -> None:
        train_epoch(model, batches, optimizer, BATCH, generator)

    def monitored() -> None:
        with DensityMonitor(model) as monitor:
            train_epoch(model, batches, optimizer, BATCH, generator)
            monitor.read()  # the epoch's one host sync

    return plain, monitored


def overhead(name: str, batches: DeviceBatches, repeats: int) -> tuple[float, float]:
    """(median paired on/off ratio, median epoch time with the monitor off)."""
    plain, monitored = epoch_pair(net0(name), batches)
    plain()  # warm-up: allocator, kernels
    off, ratios = [], []
    for index in range(repeats):
        # Alternate which goes first, so drift on a shared machine hits both sides.
        first, second = (plain, monitored) if index % 2 == 0 else (monitored, plain)
        a, b = timed(first), timed(second)
        t_off, t_on = (a, b) if first is plain else (b, a)
        off.append(t_off)
        ratios.append(t_on / t_off)
    return median(ratios), median(off)


def build_time(name: str) -> tuple[float, float]:
    """(seconds to find the groups cold, seconds to build a fresh net at 0.5x widths)."""
    arch = f"torchvision:{name}"
    structure.cache_clear()  # what arch_info reads: time the graph and the dry run from cold
    find = timed(lambda: arch_info(arch))
    half = [max(1, w // 2) for w in arch_info(arch).default_widths]
    build = timed(lambda: build_model(arch, half, num_classes=CLASSES, input_size=32))
    return find, build


def one_model(name: str, batches: DeviceBatches, images: int, repeats: int) -> None:
    ratio, epoch = overhead(name, batches, repeats)
    find, build = build_time(name)
    # The target is against a 2,048-image epoch; a smaller run scales its epoch linearly.
    epoch_2048 = epoch * TARGET_IMAGES / images
    fraction = (find + build) / epoch_2048
    scaled = "" if images == TARGET_IMAGES else f" (scaled from {images} images)"
    print(
        f"{name:<13} epoch ({images} images) {epoch:7.2f}s  monitor on/off {ratio:.3f}x "
        f"({verdict(ratio, OVERHEAD_TARGET, higher_is_better=False)})"
    )
    print(
        f"{'':<13} find groups {find:.2f}s + build pruned (0.5x) {build:.2f}s = "
        f"{100 * fraction:.1f}% of a {TARGET_IMAGES}-image epoch{scaled} "
        f"({verdict(fraction, BUILD_TARGET, False)})"
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048, help="training images per epoch")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated names")
    parser.add_argument("--repeats", type=int, default=5, help="on/off pairs per model")
    parser.add_argument(
        "--smoke", action="store_true", help="quick check: resnet18, 128 images, one pair"
    )
    args = parser.parse_args()
    if args.smoke:
        args.images, args.models, args.repeats = 128, "resnet18", 1
    return args


if __name__ == "__main__":
    args = parse()
    reproduce(
        f"torchvision_nets.py --images {args.images} --models {args.models} "
        f"--repeats {args.repeats}"
    )
    torch.set_num_threads(1)  # one trial's share of the machine, and less noise
    batches = DeviceBatches(cifar_shaped(args.images), "cpu", augment=True)
    for model_name in args.models.split(","):
        one_model(model_name, batches, args.images, args.repeats)
