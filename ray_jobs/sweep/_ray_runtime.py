"""Starting an embedded local Ray or connecting to a cluster, and checking it can run the
sweep: resources for one trial, and storage that every node sees."""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray_jobs.sweep._errors import LaunchError
from ray_jobs.sweep._spec import SweepSpec


def cluster_address(cluster: str) -> str:
    if cluster in ("", "auto"):
        address = os.environ.get("RAY_ADDRESS", "")
        if not address:
            raise LaunchError(
                "--cluster auto: RAY_ADDRESS is not set; give the head's address (HOST:PORT)"
            )
        return address
    return cluster


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds, naming the address, instead of letting ray.init retry for a minute."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise LaunchError(f"--cluster {address}: expected HOST:PORT (e.g. 10.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        reason = err.strerror or err.__class__.__name__
        raise LaunchError(
            f"--cluster {address}: no Ray cluster reachable there ({reason})"
        ) from None


def shipped_code(py_modules: Sequence[str], working_dir: str | None) -> dict[str, Any] | None:
    """Ray's ``runtime_env`` that ships plugin code to every worker, or None.

    The driver imports the same code from where it lies, so that a plugin is checked before
    Ray starts: a module's parent folder, and the working directory, go on its ``sys.path``.
    """
    env: dict[str, Any] = {}
    if py_modules:
        env["py_modules"] = [str(Path(m).resolve()) for m in py_modules]
    if working_dir:
        env["working_dir"] = str(Path(working_dir).resolve())
    for folder in [*(str(Path(m).parent) for m in env.get("py_modules", [])), working_dir]:
        if folder and folder not in sys.path:
            sys.path.insert(0, folder)
    return env or None


TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def hide_token_auth_notice(record: logging.LogRecord) -> bool:
    """Drop Ray's notice that an embedded cluster turned token auth on: it is the safe default
    and needs nothing from the user. Its warning that auth is *off* still shows."""
    return not record.getMessage().startswith("Token authentication is enabled")


def inherit_tunes_actor_env() -> None:
    """Give the embedded Ray's workers Tune's actor variables through their environment.

    Tune starts every trial actor with ``runtime_env={"env_vars": {"PL_DISABLE_FORK": "1"}}``
    (for PyTorch Lightning). Any runtime_env keeps an actor off the workers Ray starts ahead
    of time and sends its start through the runtime-env agent: 2.1 s to a ready actor
    against 0.7 s on this 2-core host, for each trial's first round and each restart. The
    embedded Ray's workers inherit the driver's environment, so the variable is set there
    and Tune's copy dropped; a cluster's workers do not, and keep Tune's way.
    """
    from ray.tune.execution import class_cache

    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", None)
    if not isinstance(defaults, dict):
        return  # another Tune: leave it as it is
    for key, value in list(defaults.items()):
        os.environ.setdefault(key, value)
        del defaults[key]


def start_ray(cluster: str | None, runtime_env: dict[str, Any] | None = None) -> str:
    import ray

    if cluster is None:
        logging.getLogger(TOKEN_AUTH_LOGGER).addFilter(hide_token_auth_notice)
        inherit_tunes_actor_env()
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,  # per-checkpoint worker chatter; progress comes from results
            runtime_env=runtime_env,
        )
        return "embedded local Ray"
    address = cluster_address(cluster)
    check_reachable(address)
    try:
        ray.init(
            address=address,
            logging_level=logging.WARNING,
            log_to_driver=False,
            runtime_env=runtime_env,
        )
    except (ConnectionError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = ""
        if os.environ.get("RAY_AUTH_MODE") != "token":
            # Ray >= 2.5x clusters use token auth by default; a client without it is refused.
            hint = "; if the cluster uses token auth, set RAY_AUTH_MODE=token and its token"
        raise LaunchError(f"--cluster {address}: cannot connect ({first_line}){hint}") from None
    return f"Ray cluster at {address}"


def local_resources() -> dict[str, float]:
    """What the embedded Ray will have: every core, every visible CUDA device."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def check_resources(spec: SweepSpec, total: dict[str, float], where: str) -> None:
    """A trial that asks for more than the whole cluster has would wait forever in PENDING."""
    for key, wanted in (("cpu", spec.resources.cpu), ("gpu", spec.resources.gpu)):
        available = float(total.get(key.upper(), 0.0))
        if wanted > available:
            have = f"has {available:g}" if available else f"has no {key.upper()}"
            raise LaunchError(
                f"resources.{key}: each trial asks for {wanted:g} {key.upper()}, "
                f"but the {where} {have}"
            )


def storage_seen(marker: str) -> bool:
    return os.path.exists(marker)


def check_shared_storage(storage: str) -> None:
    """On a multi-node cluster, every node must see the trial folders under ``storage``."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) <= 1 or "://" in storage:
        return
    marker = Path(storage) / f".adprune-visible-{uuid.uuid4().hex}"
    marker.write_text("")
    probe = ray.remote(num_cpus=0)(storage_seen)
    try:
        seen = ray.get(
            [
                probe.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                ).remote(str(marker))
                for n in nodes
            ],
            timeout=120,
        )
    finally:
        marker.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen) if not ok]
    if blind:
        raise LaunchError(
            f"--storage {storage}: not visible from node(s) {', '.join(blind)}; a multi-node "
            "cluster needs storage every node sees (a shared file system path, or s3://...): "
            "since Ray 2.7, Tune no longer syncs trial folders to the head node"
        )
