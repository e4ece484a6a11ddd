"""Plugins checked before anything trains: a one-line error now, not a failed trial later.

``run`` calls :func:`check_plugins` before its first epoch and ``launch`` before Ray starts:
a plugin dataset is loaded and checked, and net0 of every plugin arch the spec can use is built
and checked in one dry forward pass (its widths included, which the torch-free spec cannot
check for a factory it has not imported).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from adprune_core.config import DATASETS, ArchError, PluginError, ScheduleSpec, SpecError
from adprune_core.data import ArrayDataset, dataset_shape, load_dataset
from adprune_core.nets import PLUGIN_FAMILY, arch_info, build_model, no_channel_groups


def plugin_archs(archs: Sequence[object], kwargs: Mapping[str, Any] | None = None) -> list[str]:
    # torchvision archs are built before training too: their widths need the model to check,
    # and model.kwargs need the builder (an unknown key is found by calling it).
    checked = (PLUGIN_FAMILY, "torchvision")
    return [str(a) for a in dict.fromkeys(archs) if arch_info(str(a), kwargs).family in checked]


def check_plugins(
    spec: ScheduleSpec,
    archs: Sequence[object] | None = None,
    inits: Sequence[object] | None = None,
) -> ArrayDataset | None:
    """Check the spec's plugins (``archs`` and ``inits``: every value the spec can give
    ``model.arch`` and ``prune.init``, its own by default); the plugin dataset, loaded, when
    the spec names one."""
    kwargs = spec.model.kwargs
    archs = plugin_archs(archs if archs is not None else [spec.model.arch], kwargs)
    data = load_dataset(spec.data) if spec.data.dataset not in DATASETS else None
    if not archs:
        return data
    shape = data.shape if data is not None else dataset_shape(spec.data)
    inherit = "inherit" in (inits if inits is not None else [spec.prune.init])
    for arch in archs:
        widths = spec.model.widths if arch == spec.model.arch else None
        try:
            net = build_model(arch, widths, **shape.as_kwargs(), kwargs=kwargs)
        except ArchError as err:
            raise SpecError(f"model.widths: {err}") from None
        if inherit and not net.can_inherit():
            raise PluginError("prune.init", no_channel_groups(arch))
    return data
