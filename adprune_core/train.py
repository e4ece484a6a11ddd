"""SGD training and evaluation over on-device batches, with one host sync per epoch each."""

from __future__ import annotations

import contextlib
import ctypes
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adprune_core.data import DeviceBatches
from adprune_core.errors import DeviceUnavailable, TrainingDiverged

PRECISIONS = ("fp32", "bf16")


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
    channels_last: bool = field(
        default=False,
        metadata={"help": "model weights and input batches in channels_last memory format"},
    )
    precision: str = field(
        default="fp32",
        metadata={
            "choices": PRECISIONS,
            "help": "bf16: autocast forward and loss to bfloat16 (weights, grads, SGD stay fp32)",
        },
    )
    deterministic: bool = field(
        default=False,
        metadata={
            "help": "CPU results independent of the thread count (native convolutions, "
            "single-threaded BLAS reductions); about 3x slower on CPU",
        },
    )
    compile: bool = field(
        default=False,
        metadata={
            "help": "torch.compile the model (needs a C++ compiler on CPU, Triton on GPU); "
            "compiles once per network, since every round has new widths",
        },
    )


class CompileUnavailable(DeviceUnavailable):
    """``train.compile`` is on and torch.compile cannot work on this machine."""


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


def check_precision(precision: str, device: torch.device) -> None:
    # bf16 autocast runs on any CPU (slowly without native bf16); pre-Ampere GPUs lack it.
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceUnavailable("train.precision is 'bf16' but this CUDA device has no bfloat16")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward-and-loss context for ``precision``; backward and the step run outside it."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def compile_model(model: nn.Module) -> None:
    """Compile ``model`` in place; its state_dict keys and forward hooks stay as they are.

    ``nn.Module.compile`` (not ``torch.compile(model)``) keeps the module itself, so
    checkpoints hold plain keys (no ``_orig_mod.`` prefix) and load with or without compile.
    Hooks registered before the first forward are traced into the graph. Compilation itself
    happens at the first forward; :func:`compile_failure` turns its failures into one line.
    """
    try:
        model.compile()
    except RuntimeError as err:  # e.g. a Python version dynamo does not support yet
        raise compile_failure(err) from err


def compile_failure(err: BaseException) -> CompileUnavailable:
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return CompileUnavailable(
        f"train.compile: torch.compile failed on this machine ({first_line}); "
        "set train.compile=false"
    )


def is_compile_failure(err: BaseException) -> bool:
    # Looked up, not imported: importing dynamo costs seconds, and without compile it is unused.
    dynamo_exc = sys.modules.get("torch._dynamo.exc")
    return dynamo_exc is not None and isinstance(err, dynamo_exc.BackendCompilerFailed)


def set_thread_invariant(enabled: bool) -> None:
    """Make CPU training give the same bits whatever ``torch.set_num_threads`` is, or undo it.

    oneDNN's convolution weight gradients and MKL's GEMM split their sums across threads, so
    the same seed gave different weights on 1 and 2 threads; ATen's native convolution keeps
    each sum in one thread once MKL is told to use one thread for the calling thread. MKL's
    setting is per thread: call this from the thread that trains. BatchNorm over 1x1 feature
    maps still sums across threads (see the README).
    """
    torch.backends.mkldnn.enabled = not enabled
    set_blas_threads_here = _mkl_set_num_threads_local()
    if set_blas_threads_here is not None:
        set_blas_threads_here(ctypes.byref(ctypes.c_int(1 if enabled else 0)))  # 0: global


def _mkl_set_num_threads_local() -> Any:
    """MKL's ``mkl_set_num_threads_local`` (Fortran-style, takes a pointer), linked into
    torch's CPU library; None for a torch built without MKL."""
    library = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        return getattr(ctypes.CDLL(str(library)), "mkl_set_num_threads_local", None)
    except OSError:
        return None


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
