"""Activation-density monitor: counts post-ReLU positives per prunable layer, on the device.

One forward hook per :class:`LayerReLU`. Each hook adds a per-channel count of positive
elements into an int64 counter that stays on the training device: no ``.item()``, no host
sync per batch. The element totals are known from shapes on the host. :meth:`read` moves
everything to the host in one transfer, once per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType

import torch
from torch import nn

from adprune_core.models import PrunableNet


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
        return torch.sign(relu_output).sum(dim=(0, 2, 3)).to(torch.int64)
    return (relu_output > 0).sum(dim=(0, 2, 3), dtype=torch.int64)


class DensityMonitor:
    """Context manager that hooks every prunable ReLU of ``model``.

    ``count_train`` / ``count_eval`` choose which passes are counted (by ``model.training``);
    the default counts training passes only, as in the paper.
    """

    def __init__(
        self, model: PrunableNet, count_train: bool = True, count_eval: bool = False
    ) -> None:
        self.model = model
        self.count_train = count_train
        self.count_eval = count_eval
        self.relus = model.prunable_relus()
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._positives: list[torch.Tensor | None] = [None] * len(self.relus)
        self._per_channel_elements = [0] * len(self.relus)  # N*H*W per channel, host ints

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
        for index, relu in enumerate(self.relus):
            self._handles.append(relu.register_forward_hook(self._make_hook(index)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def _counts(self, module: nn.Module) -> bool:
        return self.count_train if module.training else self.count_eval

    def _make_hook(self, index: int):
        def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if not self._counts(module):
                return
            positives = positive_counts(output.detach())
            current = self._positives[index]
            if current is None:
                self._positives[index] = positives
            else:
                current.add_(positives)
            # numel/shape are host metadata: no device sync.
            self._per_channel_elements[index] += output.numel() // output.shape[1]

        return hook

    def reset(self) -> None:
        self._positives = [None] * len(self.relus)
        self._per_channel_elements = [0] * len(self.relus)

    def read(self, reset: bool = True) -> DensityReading:
        """Densities since the last reset. The one host-device sync per epoch happens here."""
        counted = [p for p in self._positives if p is not None]
        if len(counted) != len(self.relus):
            raise RuntimeError("no counted forward pass reached every prunable layer")
        # HOST SYNC: the single device->host transfer of all counters for this epoch.
        host = torch.cat(counted).cpu().tolist()
        layers, channels, offset = [], [], 0
        for index, relu_counts in enumerate(counted):
            width = relu_counts.numel()
            per_channel = self._per_channel_elements[index]
            chunk = host[offset : offset + width]
            channels.append([c / per_channel for c in chunk])
            layers.append(sum(chunk) / (per_channel * width))
            offset += width
        reading = DensityReading(
            layers, channels, [n * len(c) for n, c in zip(self._per_channel_elements, channels)]
        )
        if reset:
            self.reset()
        return reading
