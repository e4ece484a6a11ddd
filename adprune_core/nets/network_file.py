"""One trained network as a file: its weights with everything needed to rebuild it.

The same file carries a network from a trial's checkpoint to the driver (which logs it as an
MLflow model) and is what ``adprune-sweep export --format state_dict`` writes, so a user can
rebuild the network with :func:`load_network` and nothing but this package and torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adprune_core.config import LATENCY_FIELDS, net_name
from adprune_core.nets.models import build_model

NETWORK_FILE = "network.pt"
FORMAT = "adprune.network/1"
# What a network file (and the MLflow model made of it) carries as its metrics.
NETWORK_METRICS = (
    "accuracy",
    "params",
    "macs",
    "energy_j",
    "param_reduction",
    "mac_reduction",
    *LATENCY_FIELDS,
)


@dataclass
class NetworkInfo:
    """What rebuilds a network (arch, widths, input shape, classes, model.kwargs) and what it
    scored."""

    arch: str
    widths: list[int]
    input_shape: list[int]  # (channels, height, width) of one input image
    num_classes: int
    phase: str = "search"
    round: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    # model.kwargs of a torchvision or nn.Module builder; files written before it had none.
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def net(self) -> str:
        """``net2`` for a search round, ``final`` for the final phase."""
        return net_name(self.phase, self.round)


def build_network(info: NetworkInfo) -> nn.Module:
    """A freshly initialised network of ``info``'s arch and widths."""
    channels, size, _ = info.input_shape
    return build_model(
        info.arch,
        info.widths,
        num_classes=info.num_classes,
        input_size=size,
        in_channels=channels,
        kwargs=info.kwargs,
    )


def save_network(path: str | Path, state_dict: dict[str, torch.Tensor], info: NetworkInfo) -> Path:
    # Tensors moved to the CPU so that the file loads on a machine without the trial's GPU.
    weights = {k: v.detach().cpu() for k, v in state_dict.items()}
    torch.save({"format": FORMAT, "info": asdict(info), "state_dict": weights}, path)
    return Path(path)


def read_network_file(path: str | Path) -> tuple[NetworkInfo, dict[str, torch.Tensor]]:
    """The info and weights in ``path``; ValueError when it is not a network file."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ValueError(f"{path}: not an adprune network file")
    return NetworkInfo(**saved["info"]), saved["state_dict"]


def load_network(path: str | Path) -> tuple[nn.Module, NetworkInfo]:
    """The trained network in ``path`` (in eval mode, on the CPU) and its info."""
    info, weights = read_network_file(path)
    model = build_network(info)
    model.load_state_dict(weights)
    return model.eval(), info
