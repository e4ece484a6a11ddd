"""Plugins checked before anything trains: a one-line error now, not a failed trial later.

``run`` calls :func:`check_plugins` before its first epoch and ``launch`` before Ray starts:
a plugin dataset is loaded and checked, and net0 of every plugin arch the spec can use is built
and checked in one dry forward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adprune_core.data import DATASETS, ArrayDataset, dataset_shape, load_dataset
from adprune_core.models import arch_info, build_model, no_channel_groups
from adprune_core.plugins import PLUGIN_FAMILY, PluginError

if TYPE_CHECKING:
    from adprune_core.spec import SweepSpec


def searched_values(spec: SweepSpec, key: str, base: object) -> list[object]:
    """``base`` and every value a grid or choice over ``key`` can give."""
    domain = spec.search.get(key, {})
    return [base, *domain.get("grid", []), *domain.get("choice", [])]


def plugin_archs(spec: SweepSpec) -> list[str]:
    archs = searched_values(spec, "model.arch", spec.model.arch)
    return [a for a in dict.fromkeys(archs) if arch_info(str(a)).family == PLUGIN_FAMILY]


def check_plugins(spec: SweepSpec) -> ArrayDataset | None:
    """Check the spec's plugins; the plugin dataset, loaded, when the spec names one."""
    archs = plugin_archs(spec)
    data = load_dataset(spec.data) if spec.data.dataset not in DATASETS else None
    if not archs:
        return data
    if data is not None:
        shape = (data.num_classes, data.input_size, data.in_channels)
    else:
        shape = dataset_shape(spec.data)
    inherit = "inherit" in searched_values(spec, "prune.init", spec.prune.init)
    for arch in archs:
        widths = spec.model.widths if arch == spec.model.arch else None
        net = build_model(arch, widths, *shape)
        if inherit and not net.channel_groups:
            raise PluginError("prune.init", no_channel_groups(arch))
    return data
