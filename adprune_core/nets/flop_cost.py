"""Cost of any network, counted on a dry forward pass: what archs without an analytic cost get.

MACs are ``torch.utils.flop_counter.FlopCounterMode``'s FLOPs / 2 for one image (convolutions
and matrix products; batch norm, pooling and activations are not counted, as in the analytic
model), and parameters are ``sum(p.numel() for p in model.parameters())``.
"""

from __future__ import annotations

import functools
import json

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from adprune_core.nets.models import build_model


def counted_params_and_macs(model: nn.Module, input_size: int, in_channels: int) -> tuple[int, int]:
    """Parameters and MACs per image of ``model``, counted on one dry forward pass."""
    x = torch.zeros((1, in_channels, input_size, input_size))
    was_training = model.training
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(x)
    finally:
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return params, counter.get_total_flops() // 2


@functools.lru_cache(maxsize=256)
def counted_cost(
    arch: str,
    widths: tuple[int, ...],
    num_classes: int,
    input_size: int,
    in_channels: int,
    kwargs: str = "{}",
) -> tuple[int, int]:
    """(params, MACs) of ``arch`` at ``widths``; cached, since every epoch's report asks for
    the same few width lists and building a network to count it is not free. ``kwargs`` is
    ``model.kwargs`` as canonical JSON (hashable)."""
    model = build_model(
        arch,
        list(widths),
        num_classes=num_classes,
        input_size=input_size,
        in_channels=in_channels,
        kwargs=json.loads(kwargs),
    )
    return counted_params_and_macs(model, input_size, in_channels)
