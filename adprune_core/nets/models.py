"""CIFAR-style VGG, ResNet and small CNNs whose prunable convs all have free widths.

Every prunable conv is followed by its own :class:`LayerReLU` module, so the density
monitor can hook exactly one module per prunable layer. Each conv, batch norm and the
head also carry the *channel groups* they read from and write to (a prunable layer index,
or ``None`` for the image / the classes), which is what filter inheritance needs to slice
a parent network's tensors.

Longer than 300 lines because every architecture shares that channel-group bookkeeping, and
filter inheritance must see all of them to slice any of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from adprune_core.config import MODEL_GROUP, ArchError, DataShape
from adprune_core.config.archs import (
    CNN_CONFIGS,
    POOL,
    RESNET_BLOCKS,
    VGG_CONFIGS,
    cnn_layout,
    pool_fits,
    resnet_default_widths,
    validate_widths,
    vgg_layout,
)
from adprune_core.config.plugin_loading import entry_point_names
from adprune_core.nets.plugins import plugin_arch_info
from adprune_core.nets.prunable import ArchInfo, LayerReLU, PrunableNet, kwargs_key


def _conv_bn(in_ch: int, out_ch: int, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)
    return conv, nn.BatchNorm2d(out_ch)


class PlainNet(PrunableNet):
    """VGG and the cnn family: conv-BN-ReLU stacks with max-pools, global pool, one Linear."""

    def __init__(
        self,
        arch: str,
        layout: Sequence[int | str],
        widths: Sequence[int],
        *,
        num_classes: int,
        input_size: int,
        in_channels: int,
    ) -> None:
        super().__init__(arch, widths)
        layers: list[nn.Module] = []
        in_ch, size, layer_index, group = in_channels, input_size, 0, None
        for item in layout:
            if item == POOL:
                if pool_fits(size):
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            conv, bn = _conv_bn(in_ch, widths[layer_index])
            self._tag(f"features.{len(layers)}", group, layer_index)
            self._tag(f"features.{len(layers) + 1}", layer_index, layer_index)
            layers += [conv, bn, LayerReLU()]
            in_ch, group = widths[layer_index], layer_index
            layer_index += 1
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(in_ch, num_classes)
        self._tag("head", group, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """ResNet basic block with free widths; the second ReLU follows the residual add."""

    def __init__(self, in_ch: int, mid: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_ch, mid, stride)
        self.relu1 = LayerReLU()
        self.conv2, self.bn2 = _conv_bn(mid, out)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out:
            # Pruned widths rarely line up across a block, so most pruned blocks get a projection.
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
        self.relu2 = LayerReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet(PrunableNet):
    def __init__(
        self,
        arch: str,
        blocks_per_stage: Sequence[int],
        widths: Sequence[int],
        *,
        num_classes: int,
        in_channels: int,
    ) -> None:
        super().__init__(arch, widths)
        self.conv1, self.bn1 = _conv_bn(in_channels, widths[0])
        self.relu = LayerReLU()
        self._tag("conv1", None, 0)
        self._tag("bn1", 0, 0)
        blocks: list[BasicBlock] = []
        in_ch, group = widths[0], 0
        for stage, count in enumerate(blocks_per_stage):
            for b in range(count):
                stride = 2 if stage > 0 and b == 0 else 1
                mid_group, out_group = 1 + 2 * len(blocks), 2 + 2 * len(blocks)
                block = BasicBlock(in_ch, widths[mid_group], widths[out_group], stride)
                prefix = f"blocks.{len(blocks)}"
                self._tag(f"{prefix}.conv1", group, mid_group)
                self._tag(f"{prefix}.bn1", mid_group, mid_group)
                self._tag(f"{prefix}.conv2", mid_group, out_group)
                self._tag(f"{prefix}.bn2", out_group, out_group)
                self._tag(f"{prefix}.shortcut.0", group, out_group)
                self._tag(f"{prefix}.shortcut.1", out_group, out_group)
                blocks.append(block)
                in_ch, group = widths[out_group], out_group
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(in_ch, num_classes)
        self._tag("head", group, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.head(torch.flatten(self.pool(self.blocks(x)), 1))


ARCHS: dict[str, ArchInfo] = {}


def register_arch(info: ArchInfo) -> None:
    """Add an arch to the registry; a name that is already taken is an error, not a swap."""
    if info.name in ARCHS:
        raise ArchError(f"arch {info.name!r} is already registered")
    ARCHS[info.name] = info


def _register_builtin() -> None:
    for name, cfg in VGG_CONFIGS.items():
        register_arch(
            ArchInfo(
                name,
                "vgg",
                tuple(w for w in cfg if w != POOL),  # type: ignore[misc]
                lambda w, shape, cfg=cfg, name=name: PlainNet(
                    name, vgg_layout(cfg), w, **shape.as_kwargs()
                ),
            )
        )
    for name, blocks in RESNET_BLOCKS.items():
        register_arch(
            ArchInfo(
                name,
                "resnet",
                resnet_default_widths(blocks),
                lambda w, shape, blocks=blocks, name=name: ResNet(
                    name,
                    blocks,
                    w,
                    num_classes=shape.num_classes,
                    in_channels=shape.in_channels,
                ),
            )
        )
    for name, widths in CNN_CONFIGS.items():
        register_arch(
            ArchInfo(
                name,
                "cnn",
                tuple(widths),
                lambda w, shape, name=name: PlainNet(
                    name, cnn_layout(len(w)), w, **shape.as_kwargs()
                ),
            )
        )


def arch_info(arch: str, kwargs: Mapping[str, Any] | None = None) -> ArchInfo:
    """A built-in arch, ``torchvision:NAME``, else a factory named by an import path or an
    entry point. ``kwargs`` (``model.kwargs``) go to a torchvision or ``nn.Module`` builder;
    the built-in archs and the LayerReLU protocol take none."""
    if arch in ARCHS:
        if kwargs:
            raise ArchError(f"{arch} is a built-in arch and takes no model.kwargs")
        return ARCHS[arch]
    if arch.startswith("torchvision:"):
        # Imported here: torch_pruning and torchvision load only for a torchvision arch.
        from adprune_core.nets.torchvision_nets import torchvision_arch_info

        return torchvision_arch_info(arch, kwargs_key(kwargs))
    info = plugin_arch_info(arch, kwargs_key(kwargs))
    if info is None:
        known = ", ".join([*sorted(ARCHS), *entry_point_names(MODEL_GROUP)])
        raise ArchError(
            f"unknown arch '{arch}'; known: {known}, or a factory 'module.path:function'"
        )
    return info


def check_arch(arch: str, kwargs: Mapping[str, Any] | None = None) -> None:
    """The spec's check of ``model.arch``: a one-line error unless ``arch`` can be built."""
    arch_info(arch, kwargs)


def default_widths(arch: str, kwargs: Mapping[str, Any] | None = None) -> list[int]:
    return list(arch_info(arch, kwargs).default_widths)


def check_widths(
    arch: str, widths: Sequence[int] | None, kwargs: Mapping[str, Any] | None = None
) -> list[int]:
    """The widths to build, or a one-line :class:`ArchError` saying what is wrong with them."""
    return validate_widths(arch, arch_info(arch, kwargs).default_widths, widths)


def build_model(
    arch: str,
    widths: Sequence[int] | None = None,
    *,
    num_classes: int = 10,
    input_size: int = 32,
    in_channels: int = 3,
    kwargs: Mapping[str, Any] | None = None,
) -> PrunableNet:
    """A freshly initialised network; ``widths=None`` gives the arch's net0. The data shape
    is keyword-only (``**shape.as_kwargs()`` of a :class:`DataShape`), so it cannot be
    given in the wrong order; ``kwargs`` is ``model.kwargs``."""
    info = arch_info(arch, kwargs)
    shape = DataShape(num_classes, input_size, in_channels)
    return info.builder(check_widths(arch, widths, kwargs), shape)


_register_builtin()


def no_channel_groups(arch: str) -> str:
    return (
        f"inherit needs the channel groups of {arch}, and it declares none (a channel_groups "
        "attribute on the module its factory builds); random init is the only choice for it: "
        "prune.init: random"
    )


@torch.no_grad()
def inherit_filters(parent: PrunableNet, child: PrunableNet, generator: torch.Generator) -> None:
    """Copy a random subset of ``parent``'s filters into the narrower ``child``.

    The paper found random re-initialisation works as well; this is the alternative it
    mentions. Which filters survive is random (no importance score), one subset per layer,
    and every tensor reading or writing that layer's channels is sliced with the same subset.
    Tensors the parent lacks (a projection shortcut the narrower child now needs) stay random.
    """
    if parent.arch != child.arch:
        raise ArchError(f"cannot inherit {child.arch} filters from {parent.arch}")
    if child.inherit_from(parent, generator):
        return  # a torchvision net prunes a copy of its parent through its dependency graph
    if not child.channel_groups:
        raise ArchError(f"prune.init: {no_channel_groups(child.arch)}")
    keep = [
        torch.randperm(pw, generator=generator)[:cw].sort().values
        for pw, cw in zip(parent.widths, child.widths)
    ]
    parent_modules = dict(parent.named_modules())
    child_modules = dict(child.named_modules())
    for name, (in_group, out_group) in child.channel_groups.items():
        if name not in parent.channel_groups or name not in parent_modules:
            continue
        source, target = parent_modules[name], child_modules[name]
        tensors = list(target.named_parameters(recurse=False)) + list(
            target.named_buffers(recurse=False)
        )
        for tensor_name, tensor in tensors:
            value = getattr(source, tensor_name)
            if value.dim() == 0:
                continue
            if out_group is not None:
                value = value.index_select(0, keep[out_group].to(value.device))
            if in_group is not None and value.dim() > 1:
                value = value.index_select(1, keep[in_group].to(value.device))
            tensor.copy_(value)
