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

DATASETS: tuple[str, ...] = (
    "cifar10",
    "cifar100",
    "tinyimagenet",
    "digits",
    "synthetic",
)
