"""A trial's errors: the ones a retry cannot fix end the trial at once, in one line.

Tune retries a failed trial from its last checkpoint (``--max-failures``). That helps when the
worker process died, its node was lost or the process was killed: those never reach the
trainable as exceptions, so they keep Tune's retries. An exception raised inside the trial is
different when it says something about the spec or the machine: a missing dataset, a missing
device, a plugin that breaks, a loader that raises, divergence. A retry would meet it again
after minutes of the cluster's time, so :func:`ends_on_deterministic_errors` turns it into a
last report that carries its one-line reason and its traceback, and the scheduler STOPs the
trial. On the driver, the progress printer writes the traceback to the trial's own
``error.log`` (:func:`write_error_log`), so the console shows only the reason.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adprune_core.config import (
    ArchError,
    DatasetNotFoundError,
    DeviceUnavailable,
    PluginError,
    SpecError,
    TrainingDiverged,
)
from ray_jobs.tracking.keys import TRIAL_ERROR

# The report fields of a trial that ended in a deterministic error.
TRIAL_ERROR_TRACEBACK = "trial_error_traceback"
# Our log of a trial's error, beside Tune's own error.txt (written for errors Tune saw).
ERROR_LOG = "error.log"
TUNE_ERROR_FILE = "error.txt"


class DatasetLoadFailed(RuntimeError):
    """The dataset loader raised something other than a user error (a bug in a loader, a
    malformed file): it would raise again on a retry."""


DETERMINISTIC_ERRORS: tuple[type[BaseException], ...] = (
    SpecError,
    ArchError,
    PluginError,
    DatasetNotFoundError,
    DeviceUnavailable,
    TrainingDiverged,
    DatasetLoadFailed,
)

# A loader's I/O or memory error may pass on a retry (a storage hiccup, a busy node).
TRANSIENT_LOAD_ERRORS: tuple[type[BaseException], ...] = (MemoryError, OSError)


def one_line(err: BaseException) -> str:
    """The error's first line, named by its type unless it is one of our one-line errors."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    text = lines[0][:500] if lines else ""
    if isinstance(err, DETERMINISTIC_ERRORS) and not isinstance(err, DatasetLoadFailed):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def loaded_dataset(load: Callable[[], Any], dataset: str) -> Any:
    """``load()``, with any error of the loader that a retry cannot fix made deterministic."""
    try:
        return load()
    except (*DETERMINISTIC_ERRORS, *TRANSIENT_LOAD_ERRORS):
        raise
    except Exception as err:
        raise DatasetLoadFailed(f"data.dataset: {dataset}: loading raised {one_line(err)}") from err


def check_device(device: str) -> None:
    """A trial's device exists here: 'cuda' on a node without one is a deterministic error,
    not the torch RuntimeError the first tensor copy would raise."""
    from adprune_core.engine import resolve_device

    resolve_device(device)


def node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # outside a Ray worker the host name will do
        return socket.gethostname()


def error_report(err: BaseException) -> dict[str, Any]:
    """The last report of a trial that ended in ``err``; the scheduler STOPs it."""
    return {
        TRIAL_ERROR: one_line(err),
        TRIAL_ERROR_TRACEBACK: "".join(traceback.format_exception(err)),
        "decision": "error",
        "decision_reason": one_line(err),
        "schedule_done": False,
        "node_ip": node_ip(),
        "pid": os.getpid(),
    }


def ends_on_deterministic_errors(trainable: Callable[..., None]) -> Any:
    """Wrap a function trainable: a deterministic error ends its trial with one report
    instead of failing it into Tune's retries; any other error still reaches Tune."""

    @functools.wraps(trainable)
    def run(config: dict[str, Any], **parameters: Any) -> None:
        try:
            trainable(config, **parameters)
        except DETERMINISTIC_ERRORS as err:
            from ray import tune

            tune.report(error_report(err))

    return run


# The line of a Ray error that names its cause: "RayActorError: The actor died ...",
# "ray.exceptions.WorkerCrashedError: ...", or the last exception of a task's traceback.
_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Interrupt|Exit)\b")


def error_line(error: Any) -> str:
    """One line for an error Tune caught: its exception line, else its first line. Tune's
    error.txt holds one ``Failure # N (occurred at ...)`` block per failure: the last counts."""
    text = str(error or "").split("Failure # ")[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0][:1].isdigit() and "(occurred at" in lines[0]:
        lines = lines[1:]
    if not lines:
        return "trial failed"
    typed = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return (typed[-1] if typed else lines[0])[:300]


def tune_error_line(trial: Any) -> str:
    """The trial's latest error, from the error.txt Tune has just written on the driver
    (``get_error`` reads the copy in storage, which is synced later)."""
    try:
        local = trial.error_file
        return error_line(Path(local).read_text() if local else trial.get_error())
    except Exception:  # the file may be gone (a storage that went away)
        return "trial failed"


def failure_reason(metrics: dict[str, Any]) -> str:
    """Why a trial's last report ended it without a network: divergence or an error."""
    return str(metrics.get("diverged") or metrics.get(TRIAL_ERROR) or "")


def error_log_text(metrics: dict[str, Any]) -> str:
    return str(metrics.get(TRIAL_ERROR_TRACEBACK) or failure_reason(metrics) + "\n")


def write_error_log(trial_path: str, metrics: dict[str, Any]) -> str | None:
    """Write the trial's error to its ``error.log``; its path, or None on remote storage."""
    if "://" in trial_path:
        return None
    path = Path(trial_path) / ERROR_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(error_log_text(metrics))
    return str(path)
