"""What every prunable network is, whoever builds it: the ReLU that closes a prunable layer,
the base class that knows the widths and channel groups, and an arch's registry entry.

Kept apart from :mod:`adprune_core.nets.models` so that plugin factories
(:mod:`adprune_core.nets.plugins`) and the built-in archs share it without importing each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from adprune_core.config import DataShape

Hook = Callable[[nn.Module, tuple, torch.Tensor], None]
Group = int | None  # a prunable layer index, or None for the input image / the class logits


def kwargs_key(kwargs: Mapping[str, Any] | None) -> str:
    """``model.kwargs`` as canonical JSON: a hashable cache key (its values may be lists)
    that :func:`json.loads` turns back into the mapping."""
    return json.dumps(dict(kwargs or {}), sort_keys=True)


class LayerReLU(nn.ReLU):
    """The ReLU that closes one prunable layer; the density monitor hooks these."""


@dataclass(frozen=True)
class ArchInfo:
    name: str
    family: str
    default_widths: tuple[int, ...]
    # (widths, data shape) -> a freshly initialised network
    builder: Callable[[list[int], DataShape], PrunableNet]


class PrunableNet(nn.Module):
    """Base class: knows its widths and which channel groups each tensor belongs to."""

    def __init__(self, arch: str, widths: Sequence[int]) -> None:
        super().__init__()
        self.arch = arch
        self.widths = list(widths)
        # module name -> (input channel group, output channel group)
        self.channel_groups: dict[str, tuple[Group, Group]] = {}

    def prunable_relus(self) -> list[LayerReLU]:
        return [m for m in self.modules() if isinstance(m, LayerReLU)]

    def can_inherit(self) -> bool:
        """Whether ``prune.init: inherit`` can slice this net: it declares channel groups."""
        return bool(self.channel_groups)

    def inherit_from(self, parent: PrunableNet, generator: torch.Generator) -> bool:
        """Copy a random subset of ``parent``'s filters by a rule of this net's own; False
        when it has none and :func:`~adprune_core.nets.inherit_filters` slices its groups."""
        return False

    def density_site_groups(self) -> list[int]:
        """The width index each density site counts for; here one LayerReLU per layer.
        A network whose layer has several sites (a torchvision residual stage) overrides it."""
        return list(range(len(self.prunable_relus())))

    def attach_density_hooks(self, hook_for_site: Callable[[int], Hook]) -> list[RemovableHandle]:
        """Register ``hook_for_site(i)`` as the forward hook of density site ``i``, which sees
        the activation's output; returns the handles to remove."""
        return [
            relu.register_forward_hook(hook_for_site(i))
            for i, relu in enumerate(self.prunable_relus())
        ]

    def _tag(self, name: str, in_group: Group, out_group: Group) -> None:
        self.channel_groups[name] = (in_group, out_group)
