"""Finding what a plugin name names: ``module.path:attribute`` or an entry point.

Shared by the network factories (:mod:`adprune_core.nets`) and the dataset loaders
(:mod:`adprune_core.data`). Torch-free itself; the plugin it imports may load torch, which is
why the spec only checks that a plugin's module exists and preflight imports it.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points
from typing import Any

from adprune_core.config.catalog import BUILTIN_ARCHS, DATASETS
from adprune_core.config.errors import PluginError

MODEL_GROUP = "adprune_sweep.models"
DATASET_GROUP = "adprune_sweep.datasets"


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def is_import_path(name: str) -> bool:
    return ":" in name


def load_object(name: str, group: str, key: str) -> Any | None:
    """What ``module.path:attr`` or the entry point ``name`` of ``group`` names; None when
    ``name`` is neither (an unknown name)."""
    if is_import_path(name):
        module_name, _, attr = name.partition(":")
        if not module_name or not attr:
            raise PluginError(key, f"{name!r}: expected 'module.path:attribute'")
        module = import_module(name, module_name, key)
        return attribute(name, module, attr, key)
    found = [ep for ep in entry_points(group=group) if ep.name == name]
    if not found:
        return None
    try:
        return found[0].load()
    except Exception as err:  # a broken plugin raises anything while importing
        raise PluginError(
            key, f"{name}: entry point {found[0].value!r} does not load ({first_line(err)})"
        ) from None


def import_module(name: str, module_name: str, key: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except Exception as err:  # a broken plugin raises anything while importing
        raise PluginError(
            key, f"{name}: cannot import module {module_name!r} ({first_line(err)})"
        ) from None


def attribute(name: str, module: Any, attr: str, key: str) -> Any:
    value = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise PluginError(key, f"{name}: module {module.__name__!r} has no attribute {attr!r}")
        value = getattr(value, part)
    return value


def entry_point_names(group: str) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=group))


def _check_import_path(name: str) -> None:
    """``module.path:attribute`` whose module can be found; importing it waits for preflight,
    since a plugin imports torch."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{name!r}: expected 'module.path:attribute'")
    # The message a failed import gives, without running the plugin's code.
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as err:
        raise ValueError(
            f"{name}: cannot import module {module_name!r} ({type(err).__name__}: {err})"
        ) from None
    if found is None:
        raise ValueError(
            f"{name}: cannot import module {module_name!r} "
            f"(ModuleNotFoundError: No module named {module_name!r})"
        )


def check_arch_name(arch: str) -> str:
    """A built-in arch, an entry point of ``adprune_sweep.models``, or ``module:factory``."""
    if arch in BUILTIN_ARCHS or arch in entry_point_names(MODEL_GROUP):
        return arch
    if ":" in arch:
        _check_import_path(arch)
        return arch
    known = ", ".join([*sorted(BUILTIN_ARCHS), *entry_point_names(MODEL_GROUP)])
    raise ValueError(f"unknown arch '{arch}'; known: {known}, or a factory 'module.path:function'")


def check_dataset_name(name: str) -> str:
    """A built-in dataset, an entry point of ``adprune_sweep.datasets``, or ``module:loader``."""
    if name in DATASETS or name in entry_point_names(DATASET_GROUP):
        return name
    if ":" in name:
        _check_import_path(name)
        return name
    known = ", ".join([*DATASETS, *entry_point_names(DATASET_GROUP)])
    raise ValueError(
        f"unknown dataset {name!r}; known: {known}, or a loader 'module.path:function'"
    )
