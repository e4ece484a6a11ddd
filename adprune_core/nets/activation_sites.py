"""Which conv group feeds each activation call: one dry forward, walked back through autograd.

torchvision reuses one ReLU module several times per block, and a residual ReLU reads an add,
not a module's output; so an activation *call* is traced from its input's autograd node back,
through batch norm, adds and pooling, to the convs that wrote it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from adprune_core.config import DataShape

# Autograd nodes that end a walk back from an activation input: another activation (its
# output is a different tensor's density) or a leaf.
STOP_NODES = ("Relu", "Hardtanh", "Clamp", "Threshold", "AccumulateGrad")

Hook = Callable[[nn.Module, tuple, torch.Tensor], None]


@dataclass
class Call:  # one activation call of the dry run: its input's autograd node and shape
    module: str
    call: int
    grad_fn: object
    channels: int
    dim: int


def activation_calls(
    model: nn.Module, shape: DataShape, activations: tuple[type[nn.Module], ...]
) -> tuple[list[Call], dict, list]:
    """A dry forward: every activation call's input node, each conv's output node, conv order."""
    calls: list[Call] = []
    conv_nodes: dict[object, str] = {}
    conv_order: list[str] = []
    counts: dict[str, int] = {}
    handles = []

    def pre_hook(name: str) -> Callable:
        def hook(_module: nn.Module, inputs: tuple) -> None:
            # A pre-hook: an in-place ReLU has not yet replaced the input's grad_fn.
            x = inputs[0]
            k = counts.get(name, 0)
            counts[name] = k + 1
            calls.append(Call(name, k, x.grad_fn, x.shape[1] if x.dim() > 1 else 0, x.dim()))

        return hook

    def conv_hook(name: str) -> Hook:
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            conv_nodes[output.grad_fn] = name
            conv_order.append(name)

        return hook

    for name, module in model.named_modules():
        if isinstance(module, activations):
            handles.append(module.register_forward_pre_hook(pre_hook(name)))
        elif isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook(name)))
    model.eval()
    try:
        with torch.enable_grad():
            model(torch.zeros(2, shape.in_channels, shape.input_size, shape.input_size))
    finally:
        for handle in handles:
            handle.remove()
        model.train()
    return calls, conv_nodes, conv_order


def convs_behind(node: object, conv_nodes: dict) -> set[str]:
    """The convs whose outputs reach ``node`` through channel-preserving ops (no activation)."""
    found: set[str] = set()
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if current is None or current in seen:
            continue
        seen.add(current)
        if current in conv_nodes:
            found.add(conv_nodes[current])
            continue
        if any(stop in type(current).__name__ for stop in STOP_NODES):
            continue
        stack.extend(next_node for next_node, _ in current.next_functions)
    return found
