"""SGD training and evaluation over on-device batches, with one host sync per epoch each."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from adprune_core.data import DeviceBatches


@dataclass
class TrainSpec:
    lr: float = field(default=0.05, metadata={"min_exclusive": 0.0, "help": "peak learning rate"})
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0, "help": "SGD momentum"})
    nesterov: bool = field(default=True, metadata={"help": "Nesterov momentum"})
    weight_decay: float = field(default=5e-4, metadata={"min": 0.0, "help": "L2 weight decay"})
    lr_schedule: str = field(
        default="cosine",
        metadata={
            "choices": ("cosine", "step", "constant"),
            "help": "per-epoch lr schedule; cosine spans rho.max_epochs (final.epochs when final)",
        },
    )
    step_size: int = field(
        default=30, metadata={"min": 1, "help": "epochs between lr drops (step schedule)"}
    )
    gamma: float = field(
        default=0.1,
        metadata={"min_exclusive": 0.0, "max": 1.0, "help": "lr factor per drop (step schedule)"},
    )
    label_smoothing: float = field(
        default=0.0, metadata={"min": 0.0, "max": 0.99, "help": "cross-entropy label smoothing"}
    )
    seed: int = field(default=0, metadata={"help": "seeds weights, batch order and augmentation"})
    device: str = field(
        default="auto",
        metadata={"choices": ("auto", "cpu", "cuda"), "help": "auto: cuda when available"},
    )


class DeviceUnavailable(ValueError):
    """The spec asks for a device this machine does not have."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class EpochStats:
    loss: float
    train_accuracy: float


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


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
) -> EpochStats:
    model.train()
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for inputs, targets in batches.train_batches(batch_size, generator):
        logits = model(inputs)
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
def evaluate(model: nn.Module, batches: DeviceBatches, batch_size: int) -> float:
    """Test accuracy in [0, 1]."""
    model.eval()
    device = next(model.parameters()).device
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for inputs, targets in batches.test_batches(batch_size):
        correct += (model(inputs).argmax(1) == targets).sum()
        seen += targets.shape[0]
    # HOST SYNC: one read of the correct count per evaluation.
    return correct.item() / max(seen, 1)
