"""Graph-pruned models built as ``builder(num_classes=K, **model.kwargs)``: ``model.kwargs``
reaching torchvision's builders, checked before anything trains, and carried by network files."""

import os
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
