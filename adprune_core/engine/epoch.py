"""SGD training and evaluation over on-device batches, with one host sync per epoch each."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from adprune_core.config import TrainingDiverged, TrainSpec
from adprune_core.data import DeviceBatches
from adprune_core.engine.device import autocast, memory_format


@dataclass(frozen=True)
class EpochStats:
    loss: float
    train_accuracy: float


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(),
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=spec.nesterov and spec.momentum > 0,
        weight_decay=spec.weight_decay,
    )


def make_lr_schedule(
    optimizer: torch.optim.Optimizer, spec: TrainSpec, horizon: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch. ``horizon`` is the most epochs this network can train for."""
    if spec.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(horizon, 1))
    if spec.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=spec.step_size, gamma=spec.gamma
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _epoch: 1.0)


def train_epoch(
    model: nn.Module,
    batches: DeviceBatches,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    label_smoothing: float = 0.0,
    channels_last: bool = False,
    precision: str = "fp32",
) -> EpochStats:
    model.train()
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    device = next(model.parameters()).device
    layout = memory_format(channels_last)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for inputs, targets in batches.train_batches(batch_size, generator):
        with autocast(device, precision):
            logits = model(inputs.contiguous(memory_format=layout))
            loss = criterion(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Accumulate on the device; reading per batch would sync the host every step.
        loss_sum += loss.detach().double() * targets.shape[0]
        correct += (logits.detach().argmax(1) == targets).sum()
        seen += targets.shape[0]
    # HOST SYNC: one transfer of the epoch's loss and accuracy.
    loss_value, correct_value = torch.stack([loss_sum, correct.double()]).tolist()
    mean_loss = loss_value / max(seen, 1)
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(f"training loss became {mean_loss}")
    return EpochStats(mean_loss, correct_value / max(seen, 1))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: DeviceBatches,
    batch_size: int,
    channels_last: bool = False,
    precision: str = "fp32",
) -> float:
    """Test accuracy in [0, 1]."""
    model.eval()
    device = next(model.parameters()).device
    layout = memory_format(channels_last)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for inputs, targets in batches.test_batches(batch_size):
        with autocast(device, precision):
            logits = model(inputs.contiguous(memory_format=layout))
        correct += (logits.argmax(1) == targets).sum()
        seen += targets.shape[0]
    # HOST SYNC: one read of the correct count per evaluation.
    return correct.item() / max(seen, 1)
