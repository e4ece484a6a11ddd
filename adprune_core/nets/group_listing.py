"""What ``adprune-sweep cost --groups`` prints: a graph-pruned model's prunable groups in
forward order, each with its layers, default width and activation sites.

Only a model pruned through its dependency graph (``torchvision:NAME``, a plain ``nn.Module``
factory) has groups to list; a built-in arch or a LayerReLU factory has one prunable conv
per width, which ``cost`` already describes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from adprune_core.config import ArchError
from adprune_core.nets.models import arch_info
from adprune_core.nets.prunable import kwargs_key


@dataclass(frozen=True)
class GroupRow:
    index: int  # the width index
    width: int  # net0's width: the model's own
    layers: list[str]  # convs whose output channels the group holds, in forward order
    sites: list[str]  # activation calls counted for it, "module#call"


def group_rows(arch: str, kwargs: Mapping[str, Any] | None = None) -> list[GroupRow]:
    """The prunable groups of ``arch``; one-line :class:`ArchError` for an arch without."""
    # Imported here: torch_pruning and torchvision load only for a graph-pruned model.
    from adprune_core.nets.torchvision_nets import TORCHVISION_FAMILY, graph_structure

    if arch_info(arch, kwargs).family != TORCHVISION_FAMILY:
        raise ArchError(
            f"{arch}: --groups lists the groups of a torchvision:NAME or nn.Module builder; "
            "this arch has one prunable conv per width"
        )
    found = graph_structure(arch, kwargs_key(kwargs))
    return [
        GroupRow(
            index,
            width,
            list(layers),
            [f"{s.module}#{s.call}" for s in found.sites if s.group == index],
        )
        for index, (width, layers) in enumerate(zip(found.default_widths, found.layers))
    ]


def describe_groups(
    arch: str, kwargs: Mapping[str, Any] | None = None, as_json: bool = False
) -> str:
    rows = group_rows(arch, kwargs)
    if as_json:
        return json.dumps({"arch": arch, "groups": [asdict(row) for row in rows]}, indent=2)
    lines = [f"{arch}: {len(rows)} prunable groups, in forward order", "group  width  layers"]
    for row in rows:
        lines.append(f"{row.index:<5}  {row.width:<5}  {', '.join(row.layers)}")
        lines.append(f"{'':14}sites: {', '.join(row.sites)}")
    return "\n".join(lines)
