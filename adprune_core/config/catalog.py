"""The names of the built-in architectures and datasets, without loading torch, so that the
command line can offer them as choices and still start in a fraction of a second."""

from __future__ import annotations

BUILTIN_ARCHS: tuple[str, ...] = (
    "cnn",
    "cnn2",
    "cnn6",
    "resnet18",
    "resnet34",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
)

# (num_classes, input_size, in_channels) of the datasets whose shape is fixed.
FIXED_DATASET_SHAPES: dict[str, tuple[int, int, int]] = {
    "cifar10": (10, 32, 3),
    "cifar100": (100, 32, 3),
    "tinyimagenet": (200, 64, 3),
    "digits": (10, 8, 1),
}

DATASETS: tuple[str, ...] = (
    "cifar10",
    "cifar100",
    "tinyimagenet",
    "digits",
    "synthetic",
)
