"""``model.arch: torchvision:NAME``: groups, exact widths, cost and density against hand-written
maps of torchvision's own module names, and one real ``run`` that prunes."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

from adprune_core.config import ArchError
from adprune_core.engine.density import DensityMonitor
from adprune_core.nets import (
    NetworkInfo,
    arch_info,
    build_model,
    inherit_filters,
    load_network,
    net_cost,
    save_network,
)

CLI = [sys.executable, "-m", "ray_jobs.cli"]
CLASSES = 7


def _resnet18_groups():
    """Per prunable group of torchvision's resnet18, in forward order: the (ReLU module, call)
    sites its channels reach whole, and the convs whose outputs it holds. Written from
    torchvision's BasicBlock: ``relu`` call 0 follows bn1, call 1 follows the residual add."""
    groups = [([("relu", 0), ("layer1.0.relu", 1), ("layer1.1.relu", 1)], ["conv1"])]
    groups[0][1].extend(["layer1.0.conv2", "layer1.1.conv2"])
    groups += [([("layer1.0.relu", 0)], ["layer1.0.conv1"])]
    groups += [([("layer1.1.relu", 0)], ["layer1.1.conv1"])]
    for stage in (2, 3, 4):
        s = f"layer{stage}"
        groups.append(([(f"{s}.0.relu", 0)], [f"{s}.0.conv1"]))
        groups.append(
            (
                [(f"{s}.0.relu", 1), (f"{s}.1.relu", 1)],
                [f"{s}.0.conv2", f"{s}.0.downsample.0", f"{s}.1.conv2"],
            )
        )
        groups.append(([(f"{s}.1.relu", 0)], [f"{s}.1.conv1"]))
    return groups


def _mobilenet_v2_groups():
    """torchvision's mobilenet_v2: the stem group also feeds block 1's depthwise conv; each
    expansion group feeds its ReLU6 and its depthwise conv's ReLU6; the projections (no
    activation) and the classifier are not prunable."""
    groups = [
        (
            [("features.0.2", 0), ("features.1.conv.0.2", 0)],
            ["features.0.0", "features.1.conv.0.0"],
        )
    ]
    for i in range(2, 18):
        p = f"features.{i}.conv"
        groups.append(([(f"{p}.0.2", 0), (f"{p}.1.2", 0)], [f"{p}.0.0", f"{p}.1.0"]))
    groups.append(([("features.18.2", 0)], ["features.18.0"]))
    return groups


HAND_GROUPS = {"resnet18": _resnet18_groups, "mobilenet_v2": _mobilenet_v2_groups}
PINNED_GROUPS = {"resnet18": 12, "mobilenet_v2": 18}
SLOW_PINNED = {"vgg11_bn": 8, "resnet50": 37, "densenet121": 62}


def _halved(arch):
    return [max(1, w // 2) for w in arch_info(arch).default_widths]


@pytest.mark.parametrize("name", sorted(PINNED_GROUPS))
def test_group_count_is_pinned_and_net0_widths_are_the_models_own(name):
    arch = f"torchvision:{name}"
    widths = list(arch_info(arch).default_widths)
    assert len(widths) == PINNED_GROUPS[name]
    model = build_model(arch, None, num_classes=CLASSES).net
    modules = dict(model.named_modules())
    assert widths == [modules[convs[0]].out_channels for _, convs in HAND_GROUPS[name]()]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_PINNED))
def test_group_count_is_pinned_for_larger_models(name):
    arch = f"torchvision:{name}"
    assert len(arch_info(arch).default_widths) == SLOW_PINNED[name]
    net = build_model(arch, _halved(arch), num_classes=CLASSES)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, CLASSES)


@pytest.mark.parametrize("name", sorted(HAND_GROUPS))
def test_every_group_reaches_the_asked_width_and_the_net_runs(name):
    arch = f"torchvision:{name}"
    # Halved, and one odd group: widths a ratio API would round one channel short.
    widths = _halved(arch)
    widths[1] = 13
    net = build_model(arch, widths, num_classes=CLASSES)
    modules = dict(net.net.named_modules())
    for width, (_, convs) in zip(widths, HAND_GROUPS[name]()):
        assert [modules[c].out_channels for c in convs] == [width] * len(convs)
    assert net(torch.randn(3, 3, 32, 32)).shape == (3, CLASSES)


def _hand_macs(model: nn.Module, size: int) -> int:
    """MACs per image from each conv's and Linear's own shapes: no FLOP counter involved."""
    total = 0

    def conv_hook(m, _inputs, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1]
        total += out[0].numel() * (m.in_channels // m.groups) * k

    def linear_hook(m, _inputs, _out):
        nonlocal total
        total += m.in_features * m.out_features

    handles = [
        m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name", sorted(HAND_GROUPS))
def test_macs_agree_with_an_independent_count(name):
    arch = f"torchvision:{name}"
    widths = _halved(arch)
    cost = net_cost(arch, widths, num_classes=CLASSES, input_size=32, in_channels=3)
    model = build_model(arch, widths, num_classes=CLASSES)
    assert cost.macs == _hand_macs(model, 32)
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert cost.macs < net_cost(arch, None, num_classes=CLASSES).macs


@pytest.mark.parametrize("name", sorted(HAND_GROUPS))
def test_densities_equal_plain_hooks_on_the_real_activation_inputs(name):
    arch = f"torchvision:{name}"
    torch.manual_seed(0)
    net = build_model(arch, _halved(arch), num_classes=CLASSES).train()
    # Plain pre-hooks see each activation's input before an in-place ReLU overwrites it.
    seen: dict[tuple[str, int], list[torch.Tensor]] = {}
    calls: dict[str, int] = {}

    def pre_hook(module_name):
        def hook(_m, inputs):
            k = calls.get(module_name, 0)
            calls[module_name] = k + 1
            positives = (inputs[0].detach() > 0).sum(dim=(0, 2, 3)).double()
            per_channel = inputs[0].numel() // inputs[0].shape[1]
            seen.setdefault((module_name, k), []).append(positives / per_channel)

        return hook

    handles = [
        m.register_forward_pre_hook(pre_hook(n))
        for n, m in net.net.named_modules()
        if isinstance(m, (nn.ReLU, nn.ReLU6))
    ]
    with DensityMonitor(net) as monitor:
        for _ in range(2):
            calls.clear()
            net(torch.randn(4, 3, 32, 32))
    for h in handles:
        h.remove()
    reading = monitor.read()
    for layer, (sites, _) in enumerate(HAND_GROUPS[name]()):
        # Same batch size each pass, so the mean over passes is the pooled density.
        per_site = {s: torch.stack(seen[s]).mean(0) for s in sites}
        best = max(sites, key=lambda s: per_site[s].mean().item())  # the documented max rule
        assert reading.layers[layer] == pytest.approx(per_site[best].mean().item(), abs=1e-9)
        assert reading.channels[layer] == pytest.approx(per_site[best].tolist(), abs=1e-9)


def test_an_unknown_torchvision_name_is_an_arch_error():
    with pytest.raises(ArchError, match="unknown torchvision model 'resnet_nope'"):
        arch_info("torchvision:resnet_nope")


def test_a_width_a_group_cannot_take_is_an_arch_error():
    widths = list(arch_info("torchvision:resnet18").default_widths)
    widths[0] = 65
    with pytest.raises(ArchError, match="has 64 channels, asked 65"):
        build_model("torchvision:resnet18", widths)


SPEC = """
name: tv
model: {{arch: "{arch}"}}
data:
  dataset: synthetic
  batch_size: 32
  synthetic: {{num_train: 64, num_test: 32, input_size: 32, in_channels: 3, num_classes: 4}}
prune:
  rho: {{threshold: 0.5, patience: 1, min_epochs: 1, max_epochs: 2}}
  max_rounds: 2
record:
  latency: {{enabled: false}}
"""


def _run(tmp_path, arch, *extra):
    (tmp_path / "spec.yaml").write_text(SPEC.format(arch=arch))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run(
        [*CLI, "run", "spec.yaml", *extra],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )


def test_an_unknown_torchvision_name_is_one_line_and_exit_2(tmp_path):
    proc = _run(tmp_path, "torchvision:resnet_nope")
    assert proc.returncode == 2, proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and "resnet_nope" in lines[0], lines


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_a_two_round_run_prunes(tmp_path, name):
    proc = _run(tmp_path, f"torchvision:{name}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = dict(re.findall(r"^(net\d)\*?\s+(\[[\d, ]+\])", proc.stdout, re.MULTILINE))
    net0, net1 = json.loads(rows["net0"]), json.loads(rows["net1"])
    assert net0 == list(arch_info(f"torchvision:{name}").default_widths)
    assert len(net1) == len(net0) and all(b <= a for a, b in zip(net0, net1))
    assert sum(net1) < sum(net0)


def test_inherit_keeps_a_random_subset_of_the_parents_channels():
    arch = "torchvision:resnet18"
    torch.manual_seed(0)
    parent = build_model(arch, None, num_classes=CLASSES)
    child = build_model(arch, _halved(arch), num_classes=CLASSES)
    inherit_filters(parent, child, torch.Generator().manual_seed(3))
    # The stem reads the 3 image channels whole: each child filter is one of the parent's.
    p, c = parent.net.conv1.weight, child.net.conv1.weight
    matches = [[torch.equal(row, prow) for prow in p] for row in c]
    assert all(sum(m) == 1 for m in matches)
    kept = [m.index(True) for m in matches]
    assert kept == sorted(kept) and kept != list(range(len(kept)))  # random, in order
    # The classifier keeps the same subset of the last group's channels.
    last = child.widths[-1]
    assert child.net.fc.weight.shape == (CLASSES, last)
    assert child(torch.randn(2, 3, 32, 32)).shape == (2, CLASSES)


def test_a_model_with_no_relu_family_activation_is_an_arch_error():
    # efficientnet_b0 uses SiLU everywhere, its squeeze-excitation included.
    with pytest.raises(ArchError, match="efficientnet_b0 has no ReLU/ReLU6"):
        arch_info("torchvision:efficientnet_b0")


def test_a_width_list_of_the_wrong_length_is_one_line_and_exit_2(tmp_path):
    proc = _run(tmp_path, "torchvision:resnet18", "--set", "model.widths=[64,64]")
    assert proc.returncode == 2, proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert lines == [
        "error: model.widths: torchvision:resnet18 has 12 prunable layers, got 2 widths"
    ]


def test_a_saved_network_loads_and_exports_with_torch_alone(tmp_path):
    arch = "torchvision:resnet18"
    net = build_model(arch, _halved(arch), num_classes=CLASSES).eval()
    with DensityMonitor(net):  # attached and detached: no hook may stay behind
        net.train()(torch.randn(2, 3, 32, 32))
    net.eval()
    info = NetworkInfo(arch, net.widths, [3, 32, 32], CLASSES)
    loaded, _ = load_network(save_network(tmp_path / "net.pt", net.state_dict(), info))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), net(x))
    exported = torch.export.export(loaded, (x,))
    torch.export.save(exported, tmp_path / "net.pt2")
    assert torch.allclose(torch.export.load(tmp_path / "net.pt2").module()(x), net(x), atol=1e-5)
