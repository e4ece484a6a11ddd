"""Networks from outside this package: a factory named by an import path or an entry point.

``model.arch: "mypkg.nets:build"`` (or the name of an entry point in the group
``adprune_sweep.models``) names a factory::

    build(widths: list[int], num_classes: int, in_channels: int, input_size: int) -> nn.Module

with its net0 widths as a ``default_widths`` attribute of the factory, or of its module. The
prunable layers are the module's :class:`~adprune_core.nets.LayerReLU` modules, in the order
the forward pass runs them. Every network a factory builds is checked in one dry forward pass
before it trains; each failure is one :class:`PluginError` line naming the factory.

A factory with no ``default_widths`` (on itself or its module) is the other protocol: a plain
``nn.Module`` builder called as ``factory(num_classes=K, **model.kwargs)`` and pruned through
its dependency graph, like ``torchvision:NAME`` (:mod:`adprune_core.nets.torchvision_nets`).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from adprune_core.config import DataShape
from adprune_core.config.archs import MAX_WIDTH
from adprune_core.config.errors import PluginError
from adprune_core.config.plugin_loading import MODEL_GROUP, first_line, load_object
from adprune_core.nets.prunable import ArchInfo, Group, LayerReLU, PrunableNet

PLUGIN_FAMILY = "plugin"
DRY_BATCH = 2  # BatchNorm in eval mode takes any batch; 2 keeps a squeeze() bug visible


# ---------------------------------------------------------------------------- models


@functools.cache
def plugin_arch_info(name: str, kwargs: str = "{}") -> ArchInfo | None:
    """The :class:`ArchInfo` of a factory named by ``name``, None if ``name`` names none.
    A factory with ``default_widths`` follows the LayerReLU protocol; one without is a plain
    ``nn.Module`` builder, pruned through its dependency graph like ``torchvision:NAME``.
    ``kwargs`` is ``model.kwargs`` as canonical JSON."""
    factory = load_object(name, MODEL_GROUP, "model.arch")
    if factory is None:
        return None
    if not callable(factory):
        raise PluginError("model.arch", f"{name}: is a {type(factory).__name__}, not a factory")
    if not has_default_widths(factory):
        # Imported here: torch_pruning and torchvision load only for a graph-pruned model.
        from adprune_core.nets.torchvision_nets import Source, graph_arch_info

        return graph_arch_info(Source(name, kwargs))
    if json.loads(kwargs):
        raise PluginError(
            "model.kwargs", f"{name}: a LayerReLU factory (it has default_widths) takes none"
        )
    widths = factory_default_widths(name, factory)
    return ArchInfo(
        name,
        PLUGIN_FAMILY,
        widths,
        lambda w, shape: build_plugin_net(name, factory, w, shape),
    )


def has_default_widths(factory: Callable[..., Any]) -> bool:
    """What tells the two protocols apart: ``default_widths`` on the factory or its module."""
    module = sys.modules.get(getattr(factory, "__module__", ""))
    return any(getattr(o, "default_widths", None) is not None for o in (factory, module))


def factory_default_widths(name: str, factory: Callable[..., Any]) -> tuple[int, ...]:
    """net0's widths: ``factory.default_widths``, else the module's ``default_widths``."""
    widths = getattr(factory, "default_widths", None)
    if widths is None:
        module = sys.modules.get(getattr(factory, "__module__", ""))
        widths = getattr(module, "default_widths", None)
    if widths is None:
        raise PluginError(
            "model.arch",
            f"{name}: no default widths (set {getattr(factory, '__name__', 'factory')}"
            ".default_widths = [...], or default_widths in its module)",
        )
    if callable(widths):
        widths = call_plugin(name, widths, "default_widths()")
    if not (isinstance(widths, (list, tuple)) and widths and all(_is_width(w) for w in widths)):
        raise PluginError(
            "model.arch",
            f"{name}: default_widths must be a non-empty list of integers in [1, {MAX_WIDTH}], "
            f"got {str(widths)[:40]}",
        )
    return tuple(widths)


def _is_width(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WIDTH


def call_plugin(name: str, function: Callable[..., Any], what: str, *args: Any) -> Any:
    try:
        return function(*args)
    except Exception as err:  # the plugin's own bug: name it in one line
        raise PluginError("model.arch", f"{name}: {what} raised {first_line(err)}") from None


class PluginNet(PrunableNet):
    """A factory's network behind what the schedule needs: its widths, its LayerReLUs in
    forward order and, when the network declares them, its channel groups."""

    def __init__(
        self, arch: str, widths: Sequence[int], net: nn.Module, relu_order: list[LayerReLU]
    ) -> None:
        super().__init__(arch, widths)
        self.net = net
        # A plain list, not a ModuleList: the ReLUs are registered once, under self.net.
        self._relu_order = list(relu_order)
        # The user's module names, seen from here under "net."; filter inheritance needs them.
        for module_name, (in_group, out_group) in declared_groups(arch, net, len(widths)).items():
            self._tag(f"net.{module_name}", in_group, out_group)

    def prunable_relus(self) -> list[LayerReLU]:
        return list(self._relu_order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def declared_groups(arch: str, net: nn.Module, layers: int) -> dict[str, tuple[Group, Group]]:
    """``net.channel_groups`` (module name -> (input group, output group)), checked."""
    groups = getattr(net, "channel_groups", None)
    if groups is None:
        return {}
    if not isinstance(groups, dict):
        raise PluginError("model.arch", f"{arch}: channel_groups must be a dict")
    names = dict(net.named_modules())
    checked: dict[str, tuple[Group, Group]] = {}
    for module_name, pair in groups.items():
        if module_name not in names:
            raise PluginError(
                "model.arch", f"{arch}: channel_groups names {module_name!r}, not a module of it"
            )
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise PluginError(
                "model.arch", f"{arch}: channel_groups[{module_name!r}] must be (in, out)"
            )
        for group in pair:
            if group is not None and not (isinstance(group, int) and 0 <= group < layers):
                raise PluginError(
                    "model.arch",
                    f"{arch}: channel_groups[{module_name!r}] has group {group!r}; "
                    f"expected None or a layer index in [0, {layers})",
                )
        checked[module_name] = (pair[0], pair[1])
    return checked


def build_plugin_net(
    name: str,
    factory: Callable[..., Any],
    widths: Sequence[int],
    shape: DataShape,
) -> PluginNet:
    """Build with the factory, then check it in one dry forward pass. A factory takes
    ``(widths, num_classes, in_channels, input_size)``: the plugin protocol's own order."""
    num_classes, input_size, in_channels = shape.num_classes, shape.input_size, shape.in_channels
    net = call_plugin(
        name, factory, "the factory", list(widths), num_classes, in_channels, input_size
    )
    if not isinstance(net, nn.Module):
        raise PluginError(
            "model.arch", f"{name}: the factory returned a {type(net).__name__}, not an nn.Module"
        )
    relus = [m for m in net.modules() if isinstance(m, LayerReLU)]
    if len(relus) != len(widths):
        raise PluginError(
            "model.arch",
            f"{name}: built {len(relus)} LayerReLU modules for {len(widths)} widths "
            "(one LayerReLU closes each prunable layer)",
        )
    order = dry_forward_check(name, net, widths, num_classes, input_size, in_channels)
    return PluginNet(name, widths, net, order)


def dry_forward_check(
    name: str,
    net: nn.Module,
    widths: Sequence[int],
    num_classes: int,
    input_size: int,
    in_channels: int,
) -> list[LayerReLU]:
    """The LayerReLUs in the order one forward pass runs them, each checked against its width,
    and the output checked against ``(N, num_classes)``."""
    relu_names = {m: n for n, m in net.named_modules() if isinstance(m, LayerReLU)}
    calls: list[tuple[LayerReLU, tuple[int, ...]]] = []
    handles = [
        relu.register_forward_hook(lambda m, _i, out: calls.append((m, tuple(out.shape))))
        for relu in relu_names
    ]
    shape = (DRY_BATCH, in_channels, input_size, input_size)
    # Its own generator: the dry pass must not shift the seeded weights or batch order.
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    was_training = net.training
    try:
        with torch.no_grad():
            out = net.eval()(x)  # eval: BatchNorm's running statistics stay untouched
    except Exception as err:  # the plugin's own bug: name it in one line
        raise PluginError(
            "model.arch", f"{name}: the forward pass on a {shape} input raised {first_line(err)}"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    order = check_relu_calls(name, calls, relu_names, widths)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (DRY_BATCH, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PluginError(
            "model.arch",
            f"{name}: output shape {got} on a batch of {DRY_BATCH}; expected "
            f"(N, num_classes) = ({DRY_BATCH}, {num_classes})",
        )
    return order


def check_relu_calls(
    name: str,
    calls: list[tuple[LayerReLU, tuple[int, ...]]],
    relu_names: dict[LayerReLU, str],
    widths: Sequence[int],
) -> list[LayerReLU]:
    order = [module for module, _ in calls]
    for relu, relu_name in relu_names.items():
        runs = order.count(relu)
        if runs != 1:
            raise PluginError(
                "model.arch",
                f"{name}: LayerReLU {relu_name!r} ran {runs} times in one forward pass; "
                "each prunable layer needs its own LayerReLU, run once",
            )
    for index, ((relu, shape), width) in enumerate(zip(calls, widths)):
        if len(shape) != 4 or shape[1] != width:
            raise PluginError(
                "model.arch",
                f"{name}: prunable layer {index} (LayerReLU {relu_names[relu]!r}) outputs "
                f"{shape}; expected (N, {width}, H, W) for widths[{index}] = {width}",
            )
    return order
