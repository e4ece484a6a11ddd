"""Activation-density monitor: counts post-ReLU positives per prunable layer, on the device.

One forward hook per :class:`LayerReLU`. Each hook adds a per-channel count of positive
elements, and the number of elements it looked at, into int64 counters that stay on the
training device: no ``.item()``, no host sync per batch. :meth:`read` moves everything to the
host in one transfer, once per epoch.

The hooks touch only preallocated device tensors, in place, and never a Python number. That is
what lets ``torch.compile`` trace them into the model's graph: dynamo guards on the value of any
Python int a traced function reads, so a host-side running total would recompile every batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import torch
from torch import nn

from adprune_core.nets import PrunableNet


@dataclass
class DensityReading:
    """One epoch of activation density: per layer, per channel, and the mean over layers."""

    layers: list[float]
    channels: list[list[float]]
    elements: list[int] = field(default_factory=list)

    @property
    def total(self) -> float:
        # The paper's Fig. 1 values (~0.5 falling to ~0.3 on VGG-19) are means, not sums.
        return sum(self.layers) / len(self.layers) if self.layers else 0.0


# float32 counts ones exactly up to 2**24 per channel and batch.
EXACT_FLOAT_COUNT = 2**24


def positive_counts(relu_output: torch.Tensor) -> torch.Tensor:
    """Per-channel number of positive elements of one batch's ReLU output, as int64.

    ReLU outputs are >= 0, so sign() is 1 exactly where an element is positive, and a float
    sum over (N, H, W) is several times faster than a bool -> int64 reduction on CPU (the
    monitor's whole overhead). Batches too large for an exact float count take the int path.
    """
    per_channel = relu_output.numel() // relu_output.shape[1]
    if per_channel <= EXACT_FLOAT_COUNT:
        # float32 accumulation even for bf16 outputs (autocast): a bf16 sum has an 8-bit
        # mantissa and would round any count above 256.
        return torch.sign(relu_output).sum(dim=(0, 2, 3), dtype=torch.float32).to(torch.int64)
    return (relu_output > 0).sum(dim=(0, 2, 3), dtype=torch.int64)


class DensityMonitor:
    """Context manager that hooks every density site of ``model`` (its prunable ReLUs).

    ``count_train`` / ``count_eval`` choose which passes are counted (by ``model.training``);
    the default counts training passes only, as in the paper.
    """

    def __init__(
        self,
        model: PrunableNet,
        count_train: bool = True,
        count_eval: bool = False,
        group_density: str = "max",
    ) -> None:
        self.model = model
        self.count_train = count_train
        self.count_eval = count_eval
        if group_density not in GROUP_RULES:
            raise ValueError(f"group_density must be one of {sorted(GROUP_RULES)}")
        self.group_density = group_density
        # A site is one counted activation; several sites may count for one layer (group).
        self.site_groups = model.density_site_groups()
        if sorted(set(self.site_groups)) != list(range(len(model.widths))):
            raise ValueError(
                f"{model.arch}: density sites count for layers {sorted(set(self.site_groups))},"
                f" expected one or more for each of {len(model.widths)} widths"
            )
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        device = _device_of(model)
        # Allocated up front, never replaced (reset() zeroes them in place), so a compiled
        # forward finds the same tensors in every batch and epoch.
        self._positives = [
            torch.zeros(model.widths[g], dtype=torch.int64, device=device) for g in self.site_groups
        ]
        self._elements = [
            torch.zeros((), dtype=torch.int64, device=device) for _ in self.site_groups
        ]

    def __enter__(self) -> DensityMonitor:
        self.attach()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    def attach(self) -> None:
        if self._handles:
            return
        self._follow_model_device()
        self._handles.extend(self.model.attach_density_hooks(self._make_hook))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def _follow_model_device(self) -> None:
        # The model may have moved since the monitor was made; counters live beside it.
        device = _device_of(self.model)
        self._positives = [c.to(device) for c in self._positives]
        self._elements = [c.to(device) for c in self._elements]

    def _counts(self, module: nn.Module) -> bool:
        return self.count_train if module.training else self.count_eval

    def _make_hook(self, index: int):
        def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if not self._counts(module):
                return
            self._positives[index].add_(positive_counts(output.detach()))
            # numel/shape are host metadata: no device sync.
            self._elements[index].add_(output.numel() // output.shape[1])

        return hook

    def reset(self) -> None:
        for counter in (*self._positives, *self._elements):
            counter.zero_()

    def read(self, reset: bool = True) -> DensityReading:
        """Densities since the last reset. The one host-device sync per epoch happens here."""
        site_count = len(self.site_groups)
        # HOST SYNC: the single device->host transfer of all counters for this epoch.
        host = torch.cat([*self._positives, torch.stack(self._elements)]).cpu().tolist()
        elements = host[-site_count:]
        if not all(elements):
            raise RuntimeError("no counted forward pass reached every prunable layer")
        site_layers, site_channels, offset = [], [], 0
        for per_channel, counter in zip(elements, self._positives):
            width = counter.numel()
            chunk = host[offset : offset + width]
            site_channels.append([c / per_channel for c in chunk])
            site_layers.append(sum(chunk) / (per_channel * width))
            offset += width
        merge = GROUP_RULES[self.group_density]
        merged = [
            merge(
                [
                    _Site(site_layers[s], site_channels[s], elements[s] * len(site_channels[s]))
                    for s, g in enumerate(self.site_groups)
                    if g == layer
                ]
            )
            for layer in range(len(self.model.widths))
        ]
        reading = DensityReading(
            [m.layer for m in merged], [m.channels for m in merged], [m.elements for m in merged]
        )
        if reset:
            self.reset()
        return reading


@dataclass(frozen=True)
class _Site:
    """One density site's epoch: its layer density, per-channel densities, elements seen."""

    layer: float
    channels: list[float]
    elements: int


def _densest(sites: list[_Site]) -> _Site:
    # ``prune.group_density: max`` (the default): the densest site speaks for the group, since
    # a channel the densest use needs must survive pruning.
    return max(sites, key=lambda site: site.layer)


def _mean(sites: list[_Site]) -> _Site:
    # ``prune.group_density: mean``: every site counts alike, whatever its feature-map size.
    n = len(sites)
    channels = [sum(values) / n for values in zip(*(site.channels for site in sites))]
    return _Site(
        sum(site.layer for site in sites) / n, channels, sum(site.elements for site in sites)
    )


# How the sites of one group (a torchvision residual stage) merge into the group's density.
GROUP_RULES: dict[str, Callable[[list[_Site]], _Site]] = {"max": _densest, "mean": _mean}


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
