"""The training device and numerics: device resolution, precision, memory format,
torch.compile and thread-count invariance."""

from __future__ import annotations

import contextlib
import ctypes
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adprune_core.config import DeviceUnavailable


class CompileUnavailable(DeviceUnavailable):
    """``train.compile`` is on and torch.compile cannot work on this machine."""


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
