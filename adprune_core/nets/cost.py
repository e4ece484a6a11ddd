"""Analytic cost of a network from its widths: parameters, MACs, energy, training complexity.

Counted from the architecture description alone, never from a built module, so the tests can
check it independently against ``FlopCounterMode`` and ``nn.Module.parameters()``. An arch
without such a description (a plugin's factory) is counted on a dry forward pass instead
(:mod:`adprune_core.nets.flop_cost`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from adprune_core.config.archs import (
    POOL,
    RESNET_BLOCKS,
    builtin_default_widths,
    builtin_family,
    layout_for,
    pool_fits,
    validate_widths,
)

ENERGY_PER_MAC_J = 4.6e-12  # 45 nm CMOS, fp32 MAC (the paper's E_MAC)
# Families counted from their description; any other arch (a plugin's factory) is counted on
# a dry forward pass by adprune_core.nets.flop_cost.
ANALYTIC_FAMILIES = ("vgg", "cnn", "resnet")


@dataclass(frozen=True)
class LayerCost:
    name: str
    params: int
    macs: int


@dataclass(frozen=True)
class NetCost:
    params: int
    macs: int
    shortcut_params: int
    shortcut_macs: int

    @property
    def energy_j(self) -> float:
        return self.macs * ENERGY_PER_MAC_J

    def without_shortcuts(self) -> NetCost:
        return NetCost(self.params - self.shortcut_params, self.macs - self.shortcut_macs, 0, 0)


@dataclass(frozen=True)
class CostReport:
    """A network's cost next to its arch's net0 at the same input size and classes."""

    params: int
    macs: int
    energy_j: float
    param_reduction: float
    mac_reduction: float
    baseline_params: int
    baseline_macs: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def conv_cost(
    name: str, in_ch: int, out_ch: int, size: int, kernel: int, stride: int
) -> tuple[LayerCost, LayerCost, int]:
    """Conv (no bias) plus its BN; #MAC = O^2 * N * k^2 * M. Returns the output size too."""
    out_size = _conv_out(size, kernel, stride, kernel // 2)
    weights = kernel * kernel * in_ch * out_ch
    conv = LayerCost(name, weights, out_size * out_size * weights)
    bn = LayerCost(f"{name}.bn", 2 * out_ch, 0)  # BN's affine weight and bias; FLOPs not counted
    return conv, bn, out_size


def head_cost(in_features: int, num_classes: int) -> LayerCost:
    return LayerCost("head", in_features * num_classes + num_classes, in_features * num_classes)


def plain_layers(
    arch: str, widths: Sequence[int], num_classes: int, input_size: int, in_channels: int
) -> list[LayerCost]:
    layers: list[LayerCost] = []
    in_ch, size = in_channels, input_size
    for item in layout_for(arch):
        if item == POOL:
            size = size // 2 if pool_fits(size) else size
            continue
        conv, bn, size = conv_cost(f"conv{item}", in_ch, widths[item], size, 3, 1)
        layers += [conv, bn]
        in_ch = widths[item]
    return layers + [head_cost(in_ch, num_classes)]


def resnet_layers(
    arch: str, widths: Sequence[int], num_classes: int, input_size: int, in_channels: int
) -> list[LayerCost]:
    conv, bn, size = conv_cost("conv0", in_channels, widths[0], input_size, 3, 1)
    layers = [conv, bn]
    in_ch, block = widths[0], 0
    for stage, count in enumerate(RESNET_BLOCKS[arch]):
        for b in range(count):
            stride = 2 if stage > 0 and b == 0 else 1
            mid, out = widths[1 + 2 * block], widths[2 + 2 * block]
            c1, b1, mid_size = conv_cost(f"conv{1 + 2 * block}", in_ch, mid, size, 3, stride)
            c2, b2, _ = conv_cost(f"conv{2 + 2 * block}", mid, out, mid_size, 3, 1)
            layers += [c1, b1, c2, b2]
            if stride != 1 or in_ch != out:
                sc, sb, _ = conv_cost(f"shortcut{block}", in_ch, out, size, 1, stride)
                layers += [sc, sb]
            in_ch, size, block = out, mid_size, block + 1
    return layers + [head_cost(in_ch, num_classes)]


def layer_costs(
    arch: str,
    widths: Sequence[int] | None = None,
    *,
    num_classes: int = 10,
    input_size: int = 32,
    in_channels: int = 3,
) -> list[LayerCost]:
    widths = validate_widths(arch, builtin_default_widths(arch), widths)
    counter = resnet_layers if builtin_family(arch) == "resnet" else plain_layers
    return counter(arch, widths, num_classes, input_size, in_channels)


def net_cost(
    arch: str,
    widths: Sequence[int] | None = None,
    *,
    num_classes: int = 10,
    input_size: int = 32,
    in_channels: int = 3,
    kwargs: Mapping[str, Any] | None = None,
) -> NetCost:
    if builtin_family(arch) not in ANALYTIC_FAMILIES or kwargs:
        # Loads torch: a plugin's network is counted on a dry forward pass (and a built-in
        # arch given model.kwargs raises its one-line error there).
        from adprune_core.nets.flop_cost import counted_cost
        from adprune_core.nets.models import check_widths
        from adprune_core.nets.prunable import kwargs_key

        checked = tuple(check_widths(arch, widths, kwargs))
        params, macs = counted_cost(
            arch, checked, num_classes, input_size, in_channels, kwargs_key(kwargs)
        )
        return NetCost(params=params, macs=macs, shortcut_params=0, shortcut_macs=0)
    layers = layer_costs(
        arch, widths, num_classes=num_classes, input_size=input_size, in_channels=in_channels
    )
    shortcut = [layer for layer in layers if layer.name.startswith("shortcut")]
    return NetCost(
        params=sum(layer.params for layer in layers),
        macs=sum(layer.macs for layer in layers),
        shortcut_params=sum(layer.params for layer in shortcut),
        shortcut_macs=sum(layer.macs for layer in shortcut),
    )


def cost_report(
    arch: str,
    widths: Sequence[int] | None,
    *,
    num_classes: int = 10,
    input_size: int = 32,
    in_channels: int = 3,
    baseline_widths: Sequence[int] | None = None,
    include_shortcuts: bool = True,
    kwargs: Mapping[str, Any] | None = None,
) -> CostReport:
    """Cost and reductions against ``baseline_widths`` (default: the arch's net0).

    ``include_shortcuts=False`` drops projection shortcuts from both sides: that is the only
    way the paper's ResNet reductions come out, since its pruned blocks need projections.
    """
    shape = {"num_classes": num_classes, "input_size": input_size, "in_channels": in_channels}
    cost = net_cost(arch, widths, **shape, kwargs=kwargs)
    base = net_cost(arch, baseline_widths, **shape, kwargs=kwargs)
    if not include_shortcuts:
        cost, base = cost.without_shortcuts(), base.without_shortcuts()
    return CostReport(
        params=cost.params,
        macs=cost.macs,
        energy_j=cost.energy_j,
        param_reduction=base.params / cost.params,
        mac_reduction=base.macs / cost.macs,
        baseline_params=base.params,
        baseline_macs=base.macs,
    )


def describe_cost(
    arch: str,
    widths: Sequence[int] | None,
    *,
    num_classes: int = 10,
    input_size: int = 32,
    in_channels: int = 3,
    include_shortcuts: bool = True,
    as_json: bool = False,
) -> str:
    """What ``adprune-sweep cost`` prints: the cost report as text lines, or as JSON with
    what it was computed for."""
    report = cost_report(
        arch,
        widths,
        num_classes=num_classes,
        input_size=input_size,
        in_channels=in_channels,
        include_shortcuts=include_shortcuts,
    )
    if not as_json:
        return cost_text(arch, report, num_classes, input_size, in_channels)
    payload = {
        "arch": arch,
        "widths": None if widths is None else list(widths),
        "num_classes": num_classes,
        "input_size": input_size,
        "in_channels": in_channels,
        "include_shortcuts": include_shortcuts,
        **report.as_dict(),
    }
    return json.dumps(payload, indent=2)


def cost_text(
    arch: str, report: CostReport, num_classes: int, input_size: int, in_channels: int
) -> str:
    """``report`` as the lines ``adprune-sweep cost`` prints."""
    return "\n".join(
        [
            f"arch        {arch}  ({num_classes} classes, "
            f"{input_size}x{input_size}x{in_channels} input)",
            f"params      {report.params:,}  (net0 {report.baseline_params:,})",
            f"MACs        {report.macs:,}  (net0 {report.baseline_macs:,})",
            f"energy      {report.energy_j * 1e6:.3f} uJ per image "
            f"at {ENERGY_PER_MAC_J * 1e12:.1f} pJ/MAC",
            f"params red. {report.param_reduction:.1f}x",
            f"MACs red.   {report.mac_reduction:.1f}x",
        ]
    )
