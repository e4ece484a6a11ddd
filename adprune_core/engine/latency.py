"""Measured forward latency of a trained network, beside its MACs.

MACs do not always track speed (a prune can cut MACs and still run slower), so each network's
forward pass is timed on the device and threads it trained with: at batch 1 and at the eval
batch size, after warm-up passes, as the median of repeated timings (CUDA events on a GPU, so
that the timings measure the GPU's work, not the launch). The figure is taken on a hook-free
copy of the network, so the density monitor's hooks are not in it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from adprune_core.config import LatencySpec
from adprune_core.engine.device import autocast


@dataclass(frozen=True)
class LatencyFigures:
    """Median forward time in milliseconds at batch 1 and at the eval batch size."""

    b1_ms: float
    batch_ms: float
    batch: int


def forward_ms(
    model: nn.Module, example: torch.Tensor, spec: LatencySpec, precision: str = "fp32"
) -> float:
    """Median wall time of ``model(example)`` in ms, after ``spec.warmup`` untimed passes."""
    device = example.device
    with torch.inference_mode(), autocast(device, precision):
        for _ in range(spec.warmup):
            model(example)
        if device.type == "cuda":
            return _cuda_median_ms(model, example, spec.repeats)
        times = []
        for _ in range(spec.repeats):
            start = time.perf_counter()
            model(example)
            times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def _cuda_median_ms(model: nn.Module, example: torch.Tensor, repeats: int) -> float:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for start, end in zip(starts, ends):
        start.record()
        model(example)
        end.record()
    torch.cuda.synchronize(example.device)  # HOST SYNC: once, after every timed pass
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    eval_batch: int,
    spec: LatencySpec,
    precision: str = "fp32",
    memory_format: torch.memory_format = torch.contiguous_format,
) -> LatencyFigures:
    """Time ``model`` (in eval mode, on its own device) at batch 1 and at ``eval_batch``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        figures = []
        for batch in (1, eval_batch):
            # Fixed inputs: latency does not depend on the values, and a seeded draw would
            # disturb the training generator's sequence.
            example = torch.zeros((batch, *input_shape), device=device)
            example = example.contiguous(memory_format=memory_format)
            figures.append(forward_ms(model, example, spec, precision))
    finally:
        model.train(was_training)
    return LatencyFigures(b1_ms=figures[0], batch_ms=figures[1], batch=eval_batch)
