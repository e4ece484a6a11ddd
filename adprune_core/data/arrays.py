"""A dataset as whole tensors: raw train/test images and labels with their normalisation
constants."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adprune_core.config import DataShape

# A channel that is constant on the training data would otherwise divide by zero.
_MIN_STD = 1e-6


@dataclass
class ArrayDataset:
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_augment: bool

    @property
    def input_size(self) -> int:
        return int(self.train_x.shape[2])

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def shape(self) -> DataShape:
        return DataShape(self.num_classes, self.input_size, self.in_channels)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of (N,C,H,W) data in [0,1] units (uint8 is scaled by 1/255)."""
    xf = x.double() / 255.0 if x.dtype == torch.uint8 else x.double()
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3), unbiased=False).clamp_min(_MIN_STD)
    return tuple(mean.tolist()), tuple(std.tolist())
