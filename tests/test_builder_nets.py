"""Graph-pruned models built as ``builder(num_classes=K, **model.kwargs)``: ``model.kwargs``
reaching torchvision's builders, checked before anything trains, and carried by network files."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
import torchvision
import yaml
from torch import nn

from adprune_core.config import ArchError, SpecError, spec_from_dict
from adprune_core.nets import NetworkInfo, arch_info, build_model, load_network, save_network

CLI = [sys.executable, "-m", "ray_jobs.cli"]
CLASSES = 5
HALF = {"width_mult": 0.5}


def _first_convs(model: nn.Module) -> list[int]:
    """Out channels of mobilenet_v2's group roots, read off torchvision's own modules: the
    stem, each block's expansion conv, and the last 1x1 conv (the projections are not
    prunable)."""
    features = model.features
    widths = [features[0][0].out_channels]
    widths += [features[i].conv[0][0].out_channels for i in range(2, 18)]
    return widths + [features[18][0].out_channels]


def test_kwargs_reach_the_torchvision_builder():
    half = list(arch_info("torchvision:mobilenet_v2", HALF).default_widths)
    full = list(arch_info("torchvision:mobilenet_v2").default_widths)
    expected = _first_convs(torchvision.models.mobilenet_v2(num_classes=CLASSES, width_mult=0.5))
    assert half == expected
    assert half != full and len(half) == len(full)
    net = build_model("torchvision:mobilenet_v2", None, num_classes=CLASSES, kwargs=HALF)
    assert _first_convs(net.net) == half
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, CLASSES)


def test_a_network_file_carries_the_kwargs(tmp_path):
    arch = "torchvision:mobilenet_v2"
    widths = [max(1, w // 2) for w in arch_info(arch, HALF).default_widths]
    net = build_model(arch, widths, num_classes=CLASSES, kwargs=HALF).eval()
    info = NetworkInfo(arch, widths, [3, 32, 32], CLASSES, kwargs=dict(HALF))
    loaded, read = load_network(save_network(tmp_path / "net.pt", net.state_dict(), info))
    assert read.kwargs == HALF
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), net(x))


def test_an_unknown_kwarg_is_an_arch_error_naming_model_and_key():
    with pytest.raises(ArchError, match=r"torchvision:resnet18 takes no keyword argument 'nope'"):
        arch_info("torchvision:resnet18", {"nope": 1})


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("{arch: cnn2, kwargs: {dropout: 0.1}}", "model.kwargs: cnn2 is a built-in arch"),
        (
            '{arch: "torchvision:resnet18", kwargs: {num_classes: 3}}',
            "model.kwargs: num_classes of torchvision:resnet18 is set by the data",
        ),
        ('{arch: "torchvision:resnet18", kwargs: {3: 1}}', "model.kwargs"),
    ],
)
def test_the_spec_rejects_kwargs_no_builder_takes(model, message):
    with pytest.raises(SpecError, match=message):
        spec_from_dict(yaml.safe_load(f"model: {model}\n"))


def test_the_spec_defaults_kwargs_to_empty():
    assert spec_from_dict({"model": {"arch": "cnn2"}}).model.kwargs == {}


SPEC = """
name: tv
model: {{arch: "{arch}", kwargs: {kwargs}}}
data:
  dataset: synthetic
  batch_size: 32
  synthetic: {{num_train: 32, num_test: 16, input_size: 32, in_channels: 3, num_classes: 4}}
prune:
  rho: {{threshold: 0.5, patience: 1, min_epochs: 1, max_epochs: 1}}
  max_rounds: 2
record:
  latency: {{enabled: false}}
"""


def run_cli(tmp_path, arch, kwargs="{}", *extra):
    (tmp_path / "spec.yaml").write_text(SPEC.format(arch=arch, kwargs=kwargs))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), str(tmp_path)])}
    return subprocess.run(
        [*CLI, "run", "spec.yaml", *extra],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )


def one_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "epoch" not in lines[0]
    return lines[0]


def test_an_unknown_kwarg_is_one_line_and_exit_2_before_training(tmp_path):
    line = one_line(run_cli(tmp_path, "torchvision:resnet18", "{nope: 1}"))
    assert line == "error: model.kwargs: torchvision:resnet18 takes no keyword argument 'nope'"


def test_kwargs_on_a_builtin_arch_are_one_line_and_exit_2(tmp_path):
    line = one_line(run_cli(tmp_path, "cnn2", "{nope: 1}"))
    assert "model.kwargs: cnn2 is a built-in arch and takes no model.kwargs" in line


# ------------------------------------------------------------------ a plain nn.Module factory

USER_NETS = '''
from torch import nn


class OnlyLargeImages(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        if x.shape[-1] < 64:
            raise ValueError("this model takes images of 64 pixels or more")
        return self.head(self.conv(x).relu().mean((2, 3)))


def untraceable(num_classes):
    return OnlyLargeImages(num_classes)

from adprune_core.nets import LayerReLU


def build(num_classes, width=8):
    """A user's own builder: the torchvision calling convention, no LayerReLU."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )


def with_layer_relu(num_classes):
    return nn.Sequential(nn.Conv2d(3, 4, 3), LayerReLU(), nn.Flatten(), nn.LazyLinear(num_classes))


def layer_relu_protocol(widths, num_classes, in_channels, input_size):
    raise AssertionError("never built: its kwargs are refused first")


layer_relu_protocol.default_widths = [4]


def old_style_no_widths(widths, num_classes, in_channels, input_size):
    raise AssertionError("called the torchvision way, it fails on its missing arguments")
'''


@pytest.fixture
def user_nets(tmp_path, monkeypatch):
    """A module of factories, under a name of its own per test (the arch caches key on it)."""
    name = f"user_nets_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(USER_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_a_plain_factory_is_pruned_through_its_graph_with_kwargs(user_nets):
    arch = f"{user_nets}:build"
    assert list(arch_info(arch).default_widths) == [8, 16]
    assert list(arch_info(arch, {"width": 6}).default_widths) == [6, 12]
    net = build_model(arch, [5, 7], num_classes=CLASSES, kwargs={"width": 6})
    assert [net.net[0].out_channels, net.net[3].out_channels] == [5, 7]
    assert net.net[8].in_features == 7
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, CLASSES)


def test_a_torchvision_builder_by_import_path_is_the_same_as_by_name():
    by_path = arch_info("torchvision.models:resnet18")
    by_name = arch_info("torchvision:resnet18")
    assert by_path.default_widths == by_name.default_widths
    widths = [max(1, w // 4) for w in by_name.default_widths]
    torch.manual_seed(1)
    a = build_model("torchvision.models:resnet18", widths, num_classes=CLASSES)
    torch.manual_seed(1)
    b = build_model("torchvision:resnet18", widths, num_classes=CLASSES)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_a_factory_with_layer_relus_but_no_default_widths_is_an_arch_error(user_nets):
    with pytest.raises(ArchError, match="has LayerReLU modules but the factory has no default"):
        arch_info(f"{user_nets}:with_layer_relu")


def test_a_layer_relu_protocol_factory_takes_no_kwargs(user_nets):
    from adprune_core.config import PluginError

    with pytest.raises(PluginError, match=r"model.kwargs: .*has default_widths.* takes none"):
        arch_info(f"{user_nets}:layer_relu_protocol", {"width": 3})
    assert arch_info(f"{user_nets}:layer_relu_protocol").default_widths == (4,)


def test_a_factory_with_no_default_widths_says_which_protocol_it_was_given(user_nets):
    with pytest.raises(ArchError, match=r"model.arch: .*has no default widths, so it was called"):
        arch_info(f"{user_nets}:old_style_no_widths")


def test_a_model_torch_pruning_cannot_trace_is_one_line_naming_it(tmp_path, user_nets):
    line = one_line(run_cli(tmp_path, f"{user_nets}:untraceable"))
    assert line.startswith("error: ") and f"{user_nets}:untraceable" in line
    assert "Torch-Pruning cannot trace this model" in line and "64 pixels" in line


def test_an_unknown_kwarg_of_a_users_factory_is_one_line_and_exit_2(tmp_path, user_nets):
    line = one_line(run_cli(tmp_path, f"{user_nets}:build", "{depth: 3}"))
    assert line == f"error: model.kwargs: {user_nets}:build takes no keyword argument 'depth'"


@pytest.mark.slow  # a real two-round run: about 15 s on 2 CPUs
def test_a_run_of_a_users_factory_with_kwargs_prunes(tmp_path, user_nets):
    proc = run_cli(tmp_path, f"{user_nets}:build", "{width: 6}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = dict(re.findall(r"^(net\d)\*?\s+(\[[\d, ]+\])", proc.stdout, re.MULTILINE))
    assert json.loads(rows["net0"]) == [6, 12]
    net1 = json.loads(rows["net1"])
    assert all(b <= a for a, b in zip([6, 12], net1)) and sum(net1) < 18


# ------------------------------------------------------------------ prune.group_density


def _site_densities(net, batches):
    """Per (ReLU module, call): per-channel density of the activation's input over the passes,
    from plain pre-hooks (the input is what an in-place ReLU overwrites)."""
    seen: dict[tuple[str, int], list[torch.Tensor]] = {}
    calls: dict[str, int] = {}

    def pre_hook(name):
        def hook(_m, inputs):
            k = calls.get(name, 0)
            calls[name] = k + 1
            x = inputs[0].detach()
            seen.setdefault((name, k), []).append((x > 0).double().mean(dim=(0, 2, 3)))

        return hook

    handles = [
        m.register_forward_pre_hook(pre_hook(n))
        for n, m in net.net.named_modules()
        if isinstance(m, nn.ReLU)
    ]
    for x in batches:
        calls.clear()
        net(x)
    for h in handles:
        h.remove()
    return {site: torch.stack(values).mean(0) for site, values in seen.items()}


@pytest.mark.parametrize("rule", ["max", "mean"])
def test_group_density_merges_a_groups_sites_by_the_rule(rule):
    from adprune_core.engine.density import DensityMonitor

    torch.manual_seed(0)
    arch = "torchvision:resnet18"
    net = build_model(arch, [max(1, w // 4) for w in arch_info(arch).default_widths]).train()
    batches = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    with DensityMonitor(net, group_density=rule) as monitor:
        for x in batches:
            net(x)
    reading = monitor.read()
    # Re-running the same batches in train mode moves BN statistics only; outputs use batch
    # statistics, so the plain hooks see the same activations.
    per_site = _site_densities(net, batches)
    # Group 0 of resnet18: the stem ReLU and layer1's two block outputs (README, test above).
    stem = [("relu", 0), ("layer1.0.relu", 1), ("layer1.1.relu", 1)]
    densities = [per_site[s].mean().item() for s in stem]
    expected = max(densities) if rule == "max" else sum(densities) / len(densities)
    assert reading.layers[0] == pytest.approx(expected, abs=1e-9)
    assert max(densities) - min(densities) > 1e-3  # the rules differ on this group
    if rule == "mean":
        mean_channels = torch.stack([per_site[s] for s in stem]).mean(0)
        assert reading.channels[0] == pytest.approx(mean_channels.tolist(), abs=1e-9)
    # A group with one site reads that site under either rule.
    assert reading.layers[1] == pytest.approx(per_site[("layer1.0.relu", 0)].mean().item())


def test_group_density_is_a_spec_key_defaulting_to_max():
    assert spec_from_dict({}).prune.group_density == "max"
    assert spec_from_dict({"prune": {"group_density": "mean"}}).prune.group_density == "mean"
    with pytest.raises(SpecError, match=r"prune\.group_density"):
        spec_from_dict({"prune": {"group_density": "median"}})


# ------------------------------------------------------------------ cost --groups


def cost_cli(*args):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run(
        [*CLI, "cost", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.slow  # two CLI processes that load torchvision: about 20 s on 2 CPUs
def test_cost_groups_lists_resnet18s_groups_in_forward_order():
    from test_torchvision_nets import _resnet18_groups

    proc = cost_cli("--arch", "torchvision:resnet18", "--groups", "--json")
    assert proc.returncode == 0, proc.stderr
    groups = json.loads(proc.stdout)["groups"]
    hand = _resnet18_groups()  # written from torchvision's BasicBlock, in forward order
    assert [g["layers"] for g in groups] == [convs for _, convs in hand]
    assert [g["sites"] for g in groups] == [[f"{m}#{c}" for m, c in sites] for sites, _ in hand]
    model = torchvision.models.resnet18(num_classes=10)
    modules = dict(model.named_modules())
    assert [g["width"] for g in groups] == [modules[c].out_channels for _, (c, *_) in hand]
    text = cost_cli("--arch", "torchvision:resnet18", "--groups")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "torchvision:resnet18: 12 prunable groups, in forward order"
    assert lines[2].split() == ["0", "64", "conv1,", "layer1.0.conv2,", "layer1.1.conv2"]


def test_cost_groups_of_a_builtin_arch_is_one_line_and_exit_2():
    proc = cost_cli("--arch", "cnn2", "--groups")
    assert proc.returncode == 2
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and "cnn2: --groups lists the groups of a torchvision:NAME" in lines[0]
