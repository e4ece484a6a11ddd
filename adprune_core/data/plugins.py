"""Datasets from outside this package: a loader named by an import path or an entry point.

``data.dataset: "mypkg.data:load"`` (or the name of an entry point in the group
``adprune_sweep.datasets``) names a function that returns
``(train_x, train_y, test_x, test_y, num_classes)``: images as uint8 (0-255) or float tensors of
shape (N, C, H, W) with H == W, labels as int64 tensors of shape (N,). It is called with those
of the keyword arguments ``root``, ``seed`` and ``download`` (the spec's ``data.*``) that its
signature takes. What it returns is checked here; :mod:`adprune_core.data` then gives it the
built-ins' device batching.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from adprune_core.config import DATASET_GROUP, PluginError
from adprune_core.config.plugin_loading import entry_point_names, first_line, load_object

KEY = "data.dataset"
RETURNED = "(train_x, train_y, test_x, test_y, num_classes)"


@dataclass
class LoadedData:
    """What a loader returned, checked: CPU tensors, images (N, C, S, S), int64 labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int


def plugin_loader(name: str, builtins: Sequence[str]) -> Callable[..., LoadedData]:
    """The loader ``name`` names, as a function of ``root``, ``seed`` and ``download`` that
    returns what it loaded, checked; ``builtins`` are listed when ``name`` names nothing."""
    function = load_object(name, DATASET_GROUP, KEY)
    if function is None:
        known = ", ".join([*builtins, *entry_point_names(DATASET_GROUP)])
        raise PluginError(
            KEY, f"unknown dataset {name!r}; known: {known}, or a loader 'module.path:function'"
        )
    if not callable(function):
        raise PluginError(KEY, f"{name}: is a {type(function).__name__}, not a function")
    return functools.partial(load_checked, name, function)


def loader_arguments(function: Callable[..., Any], offered: dict[str, Any]) -> dict[str, Any]:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin or C function: call it without arguments
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return offered
    return {key: value for key, value in offered.items() if key in parameters}


def load_checked(name: str, function: Callable[..., Any], **offered: Any) -> LoadedData:
    try:
        returned = function(**loader_arguments(function, offered))
    except Exception as err:  # the plugin's own bug: name it in one line
        raise PluginError(KEY, f"{name}: the loader raised {first_line(err)}") from None
    if not isinstance(returned, (tuple, list)) or len(returned) != 5:
        raise PluginError(KEY, f"{name}: returned {_describe(returned)}; expected {RETURNED}")
    train_x, train_y, test_x, test_y, num_classes = returned
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise PluginError(
            KEY, f"{name}: num_classes must be an integer >= 2, got {_describe(num_classes)}"
        )
    train_x = _images(name, "train_x", train_x)
    test_x = _images(name, "test_x", test_x)
    if test_x.shape[1:] != train_x.shape[1:]:
        raise PluginError(
            KEY,
            f"{name}: test_x images are {tuple(test_x.shape[1:])}, "
            f"train_x images {tuple(train_x.shape[1:])}",
        )
    train_y = _labels(name, "train_y", train_y, len(train_x), num_classes)
    test_y = _labels(name, "test_y", test_y, len(test_x), num_classes)
    return LoadedData(train_x, train_y, test_x, test_y, num_classes)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of {len(value)}"
    return f"{type(value).__name__} {str(value)[:30]}"


def _images(name: str, field: str, value: Any) -> torch.Tensor:
    expected = "a uint8 or float tensor of shape (N, C, H, W)"
    if (
        not isinstance(value, torch.Tensor)
        or value.dim() != 4
        or not (value.dtype == torch.uint8 or value.is_floating_point())
        or min(value.shape) < 1
    ):
        raise PluginError(KEY, f"{name}: {field} must be {expected}, got {_describe(value)}")
    if value.shape[2] != value.shape[3]:
        raise PluginError(
            KEY,
            f"{name}: {field} images must be square (H == W), "
            f"got {value.shape[2]}x{value.shape[3]}",
        )
    return value.detach().cpu().contiguous()


def _labels(name: str, field: str, value: Any, count: int, num_classes: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.int64 or value.dim() != 1:
        raise PluginError(
            KEY, f"{name}: {field} must be an int64 tensor of shape (N,), got {_describe(value)}"
        )
    if len(value) != count:
        raise PluginError(KEY, f"{name}: {field} has {len(value)} labels for {count} images")
    value = value.detach().cpu()
    low, high = int(value.min()), int(value.max())
    if low < 0 or high >= num_classes:
        raise PluginError(
            KEY,
            f"{name}: {field} labels must lie in [0, {num_classes}), found {low}..{high}",
        )
    return value
