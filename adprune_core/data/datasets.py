"""Loading the dataset a spec names: the built-in loaders by name (digits and synthetic here, the
file-based ones in :mod:`adprune_core.data.files`), plugin loaders, and the seeded training
subset.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from adprune_core.config import DATASETS, FIXED_DATASET_SHAPES, DataShape, DataSpec
from adprune_core.data.arrays import ArrayDataset, channel_stats
from adprune_core.data.files import load_cifar, load_tinyimagenet
from adprune_core.data.plugins import plugin_loader

# (num_classes, input_size, in_channels) of the datasets whose shape is fixed.
_FIXED_SHAPES = FIXED_DATASET_SHAPES


def load_dataset(spec: DataSpec) -> ArrayDataset:
    """Load the dataset named by ``spec`` into CPU tensors (train subset applied)."""
    loader = _LOADERS.get(spec.dataset, _load_plugin)
    if spec.num_train is not None and spec.num_train < 1:
        raise ValueError(f"data.num_train must be at least 1, got {spec.num_train}")
    data = loader(spec)
    if spec.num_train is not None:
        data = _cap_train(data, spec.num_train, spec.seed)
    return data


def dataset_shape(spec: DataSpec) -> DataShape:
    """The shape of the spec's dataset, without loading it."""
    if spec.dataset == "synthetic":
        syn = spec.synthetic
        return DataShape(syn.num_classes, syn.input_size, syn.in_channels)
    shape = _FIXED_SHAPES.get(spec.dataset)
    if shape is None:
        raise ValueError(f"unknown dataset {spec.dataset!r}; known datasets: {', '.join(DATASETS)}")
    return DataShape(*shape)


def _cap_train(data: ArrayDataset, num_train: int, seed: int) -> ArrayDataset:
    n = data.train_x.shape[0]
    if num_train >= n:
        return data
    # Shuffle before cutting so the subset is not biased by the on-disk (often class-sorted) order.
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:num_train]
    data.train_x = data.train_x[keep]
    data.train_y = data.train_y[keep]
    if data.train_x.dtype != torch.uint8:
        # Computed statistics must describe the images actually trained on.
        data.mean, data.std = channel_stats(data.train_x)
    return data


def _load_digits(spec: DataSpec) -> ArrayDataset:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, works offline
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    # Pixel values are counts 0..16; scale to [0,1] like the image datasets.
    images = torch.as_tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=0.2,
        random_state=spec.seed,
        stratify=labels.numpy(),
    )
    train_idx = torch.as_tensor(train_idx)
    test_idx = torch.as_tensor(test_idx)
    train_x = images[train_idx].contiguous()
    mean, std = channel_stats(train_x)
    return ArrayDataset(
        name="digits",
        train_x=train_x,
        train_y=labels[train_idx],
        test_x=images[test_idx].contiguous(),
        test_y=labels[test_idx],
        num_classes=10,
        mean=mean,
        std=std,
        default_augment=False,
    )


def _load_synthetic(spec: DataSpec) -> ArrayDataset:
    syn = spec.synthetic
    gen = torch.Generator().manual_seed(spec.seed)
    shape = (syn.in_channels, syn.input_size, syn.input_size)
    prototypes = torch.rand((syn.num_classes, *shape), generator=gen)
    # Separate streams for train and test so changing num_train leaves the test set unchanged.
    train_seed, test_seed = torch.randint(0, 2**62, (2,), generator=gen).tolist()
    train_x, train_y = _sample_synthetic(prototypes, syn.num_train, syn.noise, train_seed)
    test_x, test_y = _sample_synthetic(prototypes, syn.num_test, syn.noise, test_seed)
    mean, std = channel_stats(train_x)
    return ArrayDataset(
        name="synthetic",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=syn.num_classes,
        mean=mean,
        std=std,
        default_augment=False,
    )


def _sample_synthetic(
    prototypes: torch.Tensor, n: int, noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    num_classes = prototypes.shape[0]
    # Cycled then shuffled labels: every class is present even in small sets.
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    images = prototypes[labels] + noise * torch.randn((n, *prototypes.shape[1:]), generator=gen)
    return images.float(), labels.to(torch.int64)


def _load_plugin(spec: DataSpec) -> ArrayDataset:
    """A loader named by an import path or an entry point (:mod:`adprune_core.data.plugins`)."""
    loaded = plugin_loader(spec.dataset, DATASETS)(
        root=spec.root, seed=spec.seed, download=spec.download
    )
    mean, std = channel_stats(loaded.train_x)
    return ArrayDataset(
        name=spec.dataset,
        train_x=loaded.train_x,
        train_y=loaded.train_y,
        test_x=loaded.test_x,
        test_y=loaded.test_y,
        num_classes=loaded.num_classes,
        mean=mean,
        std=std,
        default_augment=False,  # crop and flip suit natural images; a loader's data may not
    )


_LOADERS: dict[str, Callable[[DataSpec], ArrayDataset]] = {
    "cifar10": load_cifar,
    "cifar100": load_cifar,
    "tinyimagenet": load_tinyimagenet,
    "digits": _load_digits,
    "synthetic": _load_synthetic,
}
