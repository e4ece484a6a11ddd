"""On-device batching with batched augmentation: the whole dataset held on the training device,
batches drawn by index, with no DataLoader worker processes (which interact badly with Ray
workers and dominate the step time of the small CNNs this project sweeps).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from adprune_core.data.arrays import ArrayDataset


def crop_at(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Crop image n of the (N,C,H,W) batch at (offsets[0, n], offsets[1, n]) of its padded copy."""
    if padding == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (N,H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (N,W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices separated by the channel slice put their dims first: (N,H,W,C).
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def flip_where(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Image n of the (N,C,H,W) batch flipped horizontally where ``flip[n]`` is true."""
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class DeviceBatches:
    """Whole dataset held as normalised float32 tensors on one device; batches drawn by index
    (no DataLoader, no worker processes); augmentation applied to whole batches on the device."""

    def __init__(
        self,
        data: ArrayDataset,
        device: torch.device | str,
        augment: bool,
        crop_padding: int = 4,
    ) -> None:
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.device = torch.device(device)
        self.augment = augment
        self.crop_padding = crop_padding
        self.num_classes = data.num_classes
        self.train_x = _normalise(data.train_x, data.mean, data.std, self.device)
        self.train_y = data.train_y.to(self.device, torch.int64)
        self.test_x = _normalise(data.test_x, data.mean, data.std, self.device)
        self.test_y = data.test_y.to(self.device, torch.int64)
        self.num_train = int(self.train_x.shape[0])
        self.num_test = int(self.test_x.shape[0])

    def train_batches(
        self, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch in a random order from ``generator``; the last partial batch is kept."""
        _check_batch_size(batch_size)
        if generator.device.type != "cpu":
            raise ValueError("train_batches needs a CPU torch.Generator (for reproducibility)")
        # The epoch's order, crop offsets and flips are drawn up front and cross to the
        # device in one copy: a blocking CPU -> GPU copy per batch would make the host wait
        # for the GPU every step.
        draws = to_device_without_sync(self._epoch_draws(generator), self.device)
        order, offsets, flips = draws[0], draws[1:3], draws[3].bool()
        for start in range(0, self.num_train, batch_size):
            idx = order[start : start + batch_size]
            x = self.train_x[idx]
            if self.augment:
                batch = slice(start, start + batch_size)
                x = flip_where(crop_at(x, self.crop_padding, offsets[:, batch]), flips[batch])
            yield x, self.train_y[idx]

    def _epoch_draws(self, generator: torch.Generator) -> torch.Tensor:
        """(4, N) int64 on the CPU: sample order, crop row and column offsets, flip flags."""
        n = self.num_train
        order = torch.randperm(n, generator=generator)
        if not self.augment:
            return torch.cat([order[None], torch.zeros((3, n), dtype=torch.int64)])
        span = 2 * self.crop_padding + 1
        offsets = torch.randint(0, span, (2, n), generator=generator)
        flips = torch.randint(0, 2, (1, n), generator=generator)
        return torch.cat([order[None], offsets, flips])

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The test set in stored order, without augmentation."""
        _check_batch_size(batch_size)
        for start in range(0, self.num_test, batch_size):
            yield (
                self.test_x[start : start + batch_size],
                self.test_y[start : start + batch_size],
            )


def to_device_without_sync(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``, without making the host wait for a GPU.

    A copy from pageable memory synchronizes the stream; from pinned memory it is queued
    (the caching host allocator keeps the pinned buffer alive until the copy has run).
    """
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _normalise(
    x: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
) -> torch.Tensor:
    if x.dtype == torch.uint8:
        # Moved before converting so the images cross to the device at a quarter of the size.
        x = x.to(device).float().div_(255.0)
    else:
        # A copy, so normalising in place never alters the caller's ArrayDataset.
        x = x.to(device=device, dtype=torch.float32, copy=True)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t)
