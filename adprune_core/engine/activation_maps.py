"""The paper's Fig. 3: the mean output activation of every prunable layer for one fixed test
image, as small 2-D maps that travel in a trial's report and are drawn on the driver."""

from __future__ import annotations

import torch
from torch import nn

from adprune_core.nets import LayerReLU

DECIMALS = 4  # enough for a colour scale; keeps the maps small in results and checkpoints


def channel_mean(tensor: torch.Tensor) -> list[list[float]]:
    """(C, H, W) -> (H, W), the mean over channels, rounded."""
    # HOST SYNC: once per map, at a network's end, never in the training loop.
    return torch.round(tensor.float().mean(dim=0), decimals=DECIMALS).cpu().tolist()


def mean_activation_maps(model: nn.Module, image: torch.Tensor) -> dict[str, list]:
    """``{"input": map, "layers": [map, ...]}`` for ``image`` (C, H, W) on the model's device:
    every :class:`LayerReLU` output averaged over its channels, in forward order."""
    outputs: list[torch.Tensor] = []
    relus = [m for m in model.modules() if isinstance(m, LayerReLU)]
    handles = [
        relu.register_forward_hook(lambda _m, _i, out: outputs.append(out[0].detach()))
        for relu in relus
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(image.unsqueeze(0))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return {"input": channel_mean(image), "layers": [channel_mean(out) for out in outputs]}
