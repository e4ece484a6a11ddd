import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from adprune_core.config import training_complexity
from adprune_core.nets import (
    ARCHS,
    build_model,
    cost_report,
    default_widths,
    net_cost,
)

VGG19_NET1 = [18, 23, 47, 25, 54, 51, 62, 61, 197, 258, 378, 322, 402, 383, 259, 134]
VGG19_NET2 = [10, 9, 30, 11, 21, 31, 22, 21, 62, 70, 113, 141, 256, 299, 194, 71]
RESNET18_NET1 = [34, 29, 41, 25, 33, 58, 78, 27, 65, 71, 83, 46, 69, 120, 191, 219, 288]
RESNET18_NET2 = [21, 16, 30, 10, 22, 24, 47, 9, 39, 26, 48, 12, 39, 41, 85, 63, 188]


def counted_macs(model: torch.nn.Module, size: int, channels: int) -> int:
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.randn(1, channels, size, size))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize(("size", "channels", "classes"), [(8, 1, 10), (16, 3, 7), (32, 3, 100)])
def test_macs_and_params_match_the_built_model_at_random_widths(arch, size, channels, classes):
    rng = random.Random(f"{arch}-{size}")
    widths = [rng.randint(1, 24) for _ in default_widths(arch)]
    model = build_model(arch, widths, num_classes=classes, input_size=size, in_channels=channels)
    cost = net_cost(arch, widths, num_classes=classes, input_size=size, in_channels=channels)
    assert cost.macs == counted_macs(model, size, channels)
    assert cost.params == sum(p.numel() for p in model.parameters())


def test_resnet_projection_shortcuts_are_counted():
    rng = random.Random(3)
    widths = [rng.randint(2, 20) for _ in default_widths("resnet34")]
    model = build_model("resnet34", widths, num_classes=10, input_size=32, in_channels=3)
    n_projections = sum(len(block.shortcut) > 0 for block in model.blocks)
    assert n_projections >= 10  # random widths rarely line up
    cost = net_cost("resnet34", widths, num_classes=10, input_size=32, in_channels=3)
    assert cost.shortcut_macs > 0
    assert cost.macs == counted_macs(model, 32, 3)


@pytest.mark.parametrize(
    ("widths", "classes", "params_x", "macs_x"),
    [(VGG19_NET1, 10, 3.1, 5.6), (VGG19_NET2, 10, 10.3, 27.4)],
)
def test_vgg19_reproduces_table_one(widths, classes, params_x, macs_x):
    report = cost_report("vgg19", widths, num_classes=classes, input_size=32, in_channels=3)
    assert round(report.param_reduction, 1) == params_x
    assert round(report.mac_reduction, 1) == macs_x


def test_resnet_table_one_only_without_shortcut_cost():
    net1 = cost_report("resnet18", RESNET18_NET1, include_shortcuts=False)
    net2 = cost_report("resnet18", RESNET18_NET2, include_shortcuts=False)
    assert round(net1.mac_reduction, 1) == 6.0
    assert round(net2.mac_reduction, 0) == 23
    counted = cost_report("resnet18", RESNET18_NET1)
    assert counted.mac_reduction < net1.mac_reduction


def test_energy_is_macs_times_4_6_pj():
    report = cost_report("vgg19", None)
    assert report.energy_j == pytest.approx(report.macs * 4.6e-12)
    assert report.param_reduction == 1.0 and report.mac_reduction == 1.0


def test_vgg19_net0_macs_by_hand():
    # Sum of O^2 * N * 9 * M over VGG-19's 16 convs at 32x32 input, plus the 512x10 head.
    cfg = [(32, 3, 64), (32, 64, 64), (16, 64, 128), (16, 128, 128), (8, 128, 256)]
    cfg += [(8, 256, 256)] * 3 + [(4, 256, 512)] + [(4, 512, 512)] * 3 + [(2, 512, 512)] * 4
    expected = sum(o * o * n * 9 * m for o, n, m in cfg) + 512 * 10
    assert net_cost("vgg19").macs == expected


@pytest.mark.parametrize(
    ("search", "final", "expected"),
    [
        ([(100, 1.0), (70, 6.0)], (210, 23.2), 120.7),  # Table II ResNet-18 CIFAR-10
        ([(25, 1.0)], (210, 5.1), 66.2),  # ResNet-18 CIFAR-100
        ([(100, 1.0), (70, 5.6)], (210, 27.4), 120.2),  # VGG-19 CIFAR-10
        ([(25, 1.0)], (210, 5.3), 64.6),  # VGG-19 CIFAR-100
    ],
)
def test_training_complexity_reproduces_table_two(search, final, expected):
    assert round(training_complexity(search, final), 1) == expected


def test_training_complexity_without_final():
    assert training_complexity([(10, 1.0), (8, 4.0)]) == 12.0
