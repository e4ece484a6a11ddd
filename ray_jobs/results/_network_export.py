"""``export``: a logged network to a file, as its weights with arch and widths, or as a
TorchScript or ``torch.export`` program that runs without this package or MLflow.

torch and ``mlflow.pytorch`` load only inside the command, so that the read-only commands
stay torch-free.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import click

from ray_jobs.results._models import NetworkModel, resolve_target
from ray_jobs.results._records import existing_store
from ray_jobs.tracking.store import TrackingError, first_line

EXPORT_FORMATS = ("state_dict", "torchscript", "torch.export")


def check_writable(output: str) -> Path:
    target = Path(output).expanduser()
    parent = target.resolve().parent
    if target.is_dir():
        raise TrackingError(f"-o {output}: is a folder")
    if not parent.is_dir():
        raise TrackingError(f"-o {output}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise TrackingError(f"-o {output}: not writable")
    return target


def export_network(option: str | None, target: str, output: str, fmt: str) -> None:
    """``adprune-sweep export``: the network ``target`` names, as ``fmt``, to ``output``."""
    path = check_writable(output)
    uri, client = existing_store(option)
    network = resolve_target(client, target)
    module, info = load_logged(uri, network)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # keeps .pt2 for torch
    try:
        write_export(module, info, fmt, partial)
        os.replace(partial, path)
    except OSError as err:  # e.g. the disk filled up, or the folder went read-only
        raise TrackingError(f"-o {output}: cannot write ({err.strerror or err})") from None
    finally:
        partial.unlink(missing_ok=True)
    click.echo(
        f"{network.label} ({network.model_uri}): {info.arch} widths {info.widths}, "
        f"input {tuple(info.input_shape)} -> {path} ({fmt})"
    )


def load_logged(uri: str, network: NetworkModel) -> tuple[Any, Any]:
    """The logged module (eval mode, CPU) and its :class:`NetworkInfo`."""
    import mlflow
    import mlflow.pytorch

    from adprune_core.nets import NetworkInfo

    mlflow.set_tracking_uri(uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one result line
    try:
        module = mlflow.pytorch.load_model(network.model_uri, map_location="cpu")
        metadata = mlflow.models.get_model_info(network.model_uri).metadata or {}
    except Exception as err:
        raise TrackingError(f"{network.model_uri}: cannot load ({first_line(err)})") from None
    if "adprune" not in metadata:
        raise TrackingError(f"{network.model_uri}: not a network logged by a sweep")
    return module.eval(), NetworkInfo(**metadata["adprune"])


def write_export(module: Any, info: Any, fmt: str, path: Path) -> None:
    import torch

    from adprune_core.nets import save_network

    example = torch.zeros((2, *info.input_shape))
    if fmt == "state_dict":
        save_network(path, module.state_dict(), info)
    elif fmt == "torchscript":
        # Deprecated in favour of torch.export, yet still what C++ and older runtimes load.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.trace(module, example), str(path))
    else:
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
