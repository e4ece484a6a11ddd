"""Trained networks as MLflow models (``record.models``), from the checkpoint to the store.

A trial writes the network it just finished as a file in that report's checkpoint (on the
sweep's storage). On the driver, the callback stages the file into the sweep's folder as soon
as Tune hands it the checkpoint (``num_to_keep`` deletes checkpoints later, the staged copy
stays), and journals a ``net_model`` operation: at once with ``all``, at the trial's end with
``chosen`` (only then is the chosen network known). The writer thread logs it with
``mlflow.pytorch.log_model`` as a LoggedModel linked to the network's run; workers never talk
to the store.

Exactly once: the LoggedModel carries the network's run key as a tag and the run gets the
model's URI as :data:`~ray_jobs.tracking.keys.MODEL_TAG`; an operation applied again (a retry,
a replayed journal) finds either and logs nothing; a model an interrupted write left
unfinished is deleted before the network is logged again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ray_jobs.tracking.keys import KEY_TAG, MODEL_TAG, net_name

MODELS_FOLDER = "models"
_LOG_MODEL_LOCK = threading.Lock()
MODEL_TYPE = "adprune-network"


class MissingNetworkFile(Exception):
    """The staged weights of a network are gone: the record cannot succeed on a retry (not a
    transient error, so the writer sets it aside with one line)."""


def staged_path(home: Path, trial_id: str, net: str) -> Path:
    return Path(home) / MODELS_FOLDER / trial_id / f"{net}.pt"


def stage_network(checkpoint: Any, target: Path) -> bool:
    """Copy the checkpoint's network file to ``target``; False when it has none.

    On a local (or shared) file system a hard link costs nothing and survives Tune deleting
    the checkpoint; elsewhere the one file is copied out of the checkpoint's storage.
    """
    import pyarrow.fs

    from adprune_core.nets import NETWORK_FILE

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    source = f"{checkpoint.path}/{NETWORK_FILE}"
    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        if not os.path.exists(source):
            return False
        try:
            os.link(source, partial)
        except OSError:  # another device, or a file system without hard links
            shutil.copyfile(source, partial)
    else:
        info = checkpoint.filesystem.get_file_info(source)
        if info.type != pyarrow.fs.FileType.File:
            return False
        pyarrow.fs.copy_files(source, str(partial), source_filesystem=checkpoint.filesystem)
    os.replace(partial, target)  # a retried network's file replaces the earlier attempt's
    return True


def model_op(trial_id: str, phase: str, round_index: int, widths: list[int], path: Path) -> dict:
    return {
        "op": "net_model",
        "trial": trial_id,
        "net": net_name(phase, round_index),
        "phase": phase,
        "round": round_index,
        "widths": [int(w) for w in widths],
        "path": str(path),
    }


def chosen_model_ops(home: Path, trial_id: str, result: dict[str, Any]) -> list[dict]:
    """``net_model`` operations for a finished trial's chosen and final-phase networks."""
    if not result.get("schedule_done") or result.get("final_chosen_round") is None:
        return []
    chosen = int(result["final_chosen_round"])
    widths = result.get("final_widths") or []
    ops = []
    for phase in ("search", "final"):
        path = staged_path(home, trial_id, net_name(phase, chosen))
        if path.exists():
            ops.append(model_op(trial_id, phase, chosen, widths, path))
    return ops


def discard_unchosen(home: Path, trial_id: str, kept: list[dict]) -> None:
    """Delete the staged networks of a finished trial that will not be logged."""
    folder = Path(home) / MODELS_FOLDER / trial_id
    keep = {Path(op["path"]).name for op in kept}
    for path in folder.glob("*.pt"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def logged_model_id(client: Any, experiment_id: str, run: Any, key: str) -> str | None:
    """The READY model already logged for the network ``key``; removes unfinished ones."""
    uri = run.data.tags.get(MODEL_TAG)
    if uri:
        return uri.removeprefix("models:/")
    found = client.search_logged_models(
        [experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'"
    )
    ready = [m.model_id for m in found if str(m.status) == "READY"]
    for model in found:
        if model.model_id not in ready:
            client.delete_logged_model(model.model_id)  # an interrupted write's leftover
    return ready[0] if ready else None


def log_network_model(
    client: Any, tracking_uri: str, experiment_id: str, run_id: str, key: str, op: dict
) -> str:
    """Log the staged network of ``op`` as a LoggedModel of run ``run_id``; its id."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    from adprune_core.nets import load_network

    path = Path(op["path"])
    if not path.exists():
        raise MissingNetworkFile(f"{op['trial']} {op['net']}: weights not found at {path}")
    try:
        module, info = load_network(path)
    except Exception as err:  # a damaged file stays damaged: no retry can log it
        raise MissingNetworkFile(f"{op['trial']} {op['net']}: unreadable {path}: {err}") from err
    example = torch.zeros((1, *info.input_shape))
    with torch.inference_mode():
        logits = module(example)
    params = {
        "arch": info.arch,
        "widths": str(info.widths),
        "input_shape": str(info.input_shape),
        "num_classes": str(info.num_classes),
        "phase": info.phase,
        "round": str(info.round),
    }
    model = client.create_logged_model(
        experiment_id,
        name=op["net"],
        source_run_id=run_id,
        tags={KEY_TAG: key},
        params=params,
        model_type=MODEL_TYPE,
    )
    # log_model resolves its store from the global URI (this process records one sweep), and
    # the two context managers change module globals: one model at a time, whichever
    # artifact thread logs it.
    with _LOG_MODEL_LOCK, _quiet_pickle_warning(), _requirements_checked_by_name():
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.pytorch.log_model(
            module,
            name=op["net"],
            model_id=model.model_id,
            run_id=run_id,
            step=_last_step(client, run_id),
            signature=infer_signature(example.numpy(), logits.numpy()),
            # Pinned, not inferred: inferring loads the model in a subprocess (seconds each).
            pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
            metadata={"adprune": asdict(info)},
            # The pickled module loads back as the network itself (pt2 would need tracing).
            serialization_format="pickle",
        )
    return model.model_id


@contextlib.contextmanager
def _quiet_pickle_warning() -> Iterator[None]:
    """Silence mlflow.pytorch's advice against pickling, given once per model: a sweep logs
    its own networks, pickled so that they load back as modules (see the README)."""
    flavor_logger = logging.getLogger("mlflow.pytorch")
    level = flavor_logger.level
    flavor_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        flavor_logger.setLevel(level)


_UNSET = object()


@contextlib.contextmanager
def _requirements_checked_by_name() -> Iterator[None]:
    """Let MLflow check the model's pinned requirements against the installed versions
    without first mapping every installed distribution to its modules.

    That map (``importlib.metadata.packages_distributions``, read from every distribution's
    RECORD) took 3.2 s of the driver's CPU per sweep in a venv with torch and Ray, to check
    two pinned names, which ``importlib.metadata.version`` answers by name alone. The check
    runs on an empty map, and the map is put back unbuilt afterwards, so that requirement
    inference elsewhere in the process still builds the whole one.
    """
    from mlflow.utils import requirements_utils

    if getattr(requirements_utils, "_MODULES_TO_PACKAGES", _UNSET) is not None:
        yield  # already built (or an MLflow without it): nothing to save
        return
    empty: dict[str, list[str]] = {}
    requirements_utils._MODULES_TO_PACKAGES = empty
    try:
        yield
    finally:
        if requirements_utils._MODULES_TO_PACKAGES is empty:
            requirements_utils._MODULES_TO_PACKAGES = None
            requirements_utils._PACKAGES_TO_MODULES = None


def _last_step(client: Any, run_id: str) -> int:
    """The network's last epoch: its closing metrics are logged at that step."""
    return int(client.get_run(run_id).data.metrics.get("epochs", 0))
