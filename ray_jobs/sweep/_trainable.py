"""The Tune function trainable: one trial runs one point of the search space through the
whole prune schedule, reporting once per epoch with a checkpoint.

The trainable does not end rounds on its own: it reports, and the
:class:`~ray_jobs.sweep.ActivationDensityScheduler` PAUSEs it with the next network's
widths in ``trial.config["transition"]``; Tune then restarts it from the checkpoint of that
report, and the trainable applies the transition before training net[i+1].
"""

from __future__ import annotations

import copy
import os
import resource
import socket
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from ray import tune

from adprune_core.cost import cost_report
from adprune_core.criteria import Decision, classify_profile
from adprune_core.data import ArrayDataset
from adprune_core.latency import LATENCY_FIELDS
from adprune_core.network_file import NETWORK_FILE, reported_network, save_network
from adprune_core.schedule import EpochResult, PruneSchedule, fig3_maps, summarize
from adprune_core.spec import SweepSpec, spec_from_dict
from adprune_core.train import TrainingDiverged
from ray_jobs.sweep._trial_errors import check_device, ends_on_deterministic_errors, loaded_dataset
from ray_jobs.sweep._trial_resources import granted_resources, next_mac_ratio, use_resources
from ray_jobs.sweep._worker_process import cached_dataset, release_freed_memory

CHECKPOINT_FILE = "schedule.pt"


def trial_device(spec: SweepSpec, gpu: float | None = None) -> str:
    # Ray sets CUDA_VISIBLE_DEVICES per trial, so "cuda" is this trial's own (share of a) GPU.
    share = spec.resources.gpu if gpu is None else gpu
    if share > 0 and torch.cuda.is_available():
        return "cuda"
    return "cpu" if spec.train.device == "auto" else spec.train.device


def checkpoint_candidates(latest: Path) -> list[Path]:
    """The checkpoint Tune hands back, then its older siblings kept by ``num_to_keep``."""
    siblings = sorted(latest.parent.glob("checkpoint_*"), reverse=True)
    return [latest, *[p for p in siblings if p.name < latest.name]]


def read_checkpoint(folder: Path, device: str) -> dict[str, Any]:
    saved = torch.load(folder / CHECKPOINT_FILE, map_location=device, weights_only=False)
    if not isinstance(saved, dict) or "state" not in saved:
        raise ValueError("not a schedule checkpoint")
    return saved


def load_saved_state(latest: Path, device: str) -> tuple[dict[str, Any], str]:
    """The newest readable checkpoint, and a note when a damaged one was skipped for it."""
    errors = []
    for folder in checkpoint_candidates(latest):
        try:
            saved = read_checkpoint(folder, device)
        except Exception as err:  # torch.load raises many types on a damaged file
            errors.append(f"{folder.name} unreadable ({type(err).__name__})")
            continue
        note = f"{'; '.join(errors)}: resumed from {folder.name}" if errors else ""
        return saved, note
    raise RuntimeError("no readable checkpoint: " + "; ".join(errors))


def load_schedule(spec: SweepSpec, data: ArrayDataset, device: str) -> tuple[PruneSchedule, str]:
    """The trial's schedule from its checkpoint (or new), and any checkpoint-fallback note."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return PruneSchedule(spec, data, device), ""
    note = ""
    local = checkpoint_folder(checkpoint)
    if local is not None:
        saved, note = load_saved_state(local, device)
    else:
        with checkpoint.as_directory() as folder:
            saved = read_checkpoint(Path(folder), device)
    return PruneSchedule.from_checkpoint(spec, saved, data, device), note


def checkpoint_folder(checkpoint: tune.Checkpoint) -> Path | None:
    """The checkpoint's folder when storage is a local (or shared) file system, else None."""
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return Path(checkpoint.path)
    return None


def apply_transition(schedule: PruneSchedule, transition: dict[str, Any] | None) -> None:
    """Start the network the scheduler chose, unless this checkpoint is already past it."""
    if not transition:
        return
    state = schedule.state
    at = (transition["from_phase"], transition["from_round"], transition["at_epoch"])
    if (state.phase, state.round, state.epoch) != at:
        return
    schedule.advance(Decision(**transition["decision"]))


def save_checkpoint(schedule: PruneSchedule, closing: dict | None = None) -> tune.Checkpoint:
    """The schedule's checkpoint; with ``closing`` (the report that ends a network) also the
    network's own file, which the driver logs as an MLflow model (record.models)."""
    folder = tempfile.mkdtemp(prefix="adprune-ckpt-")
    torch.save(schedule.checkpoint(), Path(folder) / CHECKPOINT_FILE)
    if closing is not None and schedule.spec.record.models != "none":
        info = reported_network(schedule.spec.model.arch, schedule.data, closing)
        save_network(Path(folder) / NETWORK_FILE, schedule.model.state_dict(), info)
    return tune.Checkpoint.from_directory(folder)


def epoch_metrics(
    schedule: PruneSchedule, result: EpochResult, decision: Decision
) -> dict[str, Any]:
    """Every field the scheduler and the progress output read, and what MLflow will record."""
    spec, data, state = schedule.spec, schedule.data, schedule.state
    cost = cost_report(
        spec.model.arch,
        result.widths,
        data.num_classes,
        data.input_size,
        data.in_channels,
        baseline_widths=state.net0_widths,
    )
    # Records close at transitions, so once done the last record is this network's own.
    closed = state.records[:-1] if state.done else state.records
    previous = closed[-1].training_complexity if closed else 0.0
    ad_history = (
        state.records[-1].ad_history if state.done else list(state.ad_history)
    )  # a closed record holds the round's curve once the schedule is done
    metrics: dict[str, Any] = {
        "phase": result.phase,
        "round": result.round,
        "epoch": result.epoch,
        "widths": list(result.widths),
        "ad_total": result.ad_total,
        "layer_ad": list(result.layer_ad),
        "ad_history": ad_history,
        "accuracy": result.accuracy,
        "loss": result.loss,
        "train_accuracy": result.train_accuracy,
        "params": cost.params,
        "macs": cost.macs,
        "energy_j": cost.energy_j,
        "param_reduction": cost.param_reduction,
        "mac_reduction": cost.mac_reduction,
        "training_complexity": previous + result.epoch / cost.mac_reduction,
        "net0_widths": list(state.net0_widths),
        "decision": decision.action,
        "decision_reason": decision.reason,
        "profile": decision.profile or "",
        "node_ip": _node_ip(),
        "pid": os.getpid(),
        "schedule_done": state.done,
    }
    if decision.action != "continue":
        metrics.update(closing_metrics(schedule, decision))
    if state.done:
        metrics.update({f"final_{k}": v for k, v in asdict(summarize(state)).items()})
        metrics["fig3"] = fig3_maps(state)
    return metrics


def closing_metrics(schedule: PruneSchedule, decision: Decision) -> dict[str, Any]:
    """What the report that ends a network adds for its MLflow record."""
    state = schedule.state
    if state.done:  # the trainable closed the record before this report
        record = state.records[-1]
        return {
            "net_layer_ad_history": record.layer_ad_history,
            "net_profile": record.profile,
            "epochs_to_rho": record.epochs_to_rho,
            **{key: getattr(record, key) for key in LATENCY_FIELDS},
        }
    profile = decision.profile or classify_profile(
        state.ad_history, schedule.spec.prune.delta.flat_band
    )
    # Only resources.per_round reads it, and a plugin's MACs cost a counted dry forward pass.
    per_round = schedule.spec.resources.per_round is not None
    return {
        **({"next_mac_ratio": next_mac_ratio(schedule, decision)} if per_round else {}),
        "net_layer_ad_history": [list(x) for x in state.layer_ad_history],
        "net_profile": profile,
        "epochs_to_rho": state.epoch if decision.rho == "saturated" else None,
        # Timed here, on the trial's own device and threads, while the network is still live;
        # the checkpoint carries the figures to the record that closes after the PAUSE.
        **schedule.latency_fields(),
    }


def diverged_metrics(schedule: PruneSchedule, reason: str) -> dict[str, Any]:
    """The last report of a trial whose loss became NaN or inf; the scheduler STOPs it."""
    state = schedule.state
    phase = "final" if state.phase == "final" else "search"
    epoch = state.epoch + 1
    return {
        "phase": phase,
        "round": state.round if phase == "search" else int(state.chosen_round or 0),
        "epoch": epoch,
        "widths": list(state.widths),
        "diverged": f"{reason} in {'final' if phase == 'final' else f'net{state.round}'} "
        f"epoch {epoch}",
        "decision": "diverged",
        "decision_reason": reason,
        "node_ip": _node_ip(),
        "pid": os.getpid(),
        "schedule_done": False,
    }


def process_metrics(epoch_seconds: float, entered: float) -> dict[str, float]:
    """This epoch's own time, the report's wall clock, when this (re)start of the trainable
    began, and the process's memory (for the benchmarks: round transitions and growth across
    rounds)."""
    with open("/proc/self/statm") as statm:
        rss_pages = int(statm.read().split()[1])
    return {
        "epoch_seconds": epoch_seconds,
        "trainable_entered": entered,
        "threads": threading.active_count(),
        "report_time": time.time(),
        "rss_mb": rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # outside a Ray worker the host name will do
        return socket.gethostname()


@ends_on_deterministic_errors
def adprune_trainable(config: dict[str, Any]) -> None:
    entered = time.time()
    spec = spec_from_dict(copy.deepcopy(config["spec"]))
    release_freed_memory()  # the previous round's (or trial's) tensors are gone by now
    granted = granted_resources(spec)
    device = trial_device(spec, granted.gpu)
    check_device(device)
    use_resources(granted, device)
    data = loaded_dataset(lambda: cached_dataset(spec), spec.data.dataset)
    schedule, note = load_schedule(spec, data, device)
    apply_transition(schedule, config.get("transition"))
    while not schedule.state.done:
        started = time.perf_counter()
        try:
            result = schedule.train_one_epoch()
        except TrainingDiverged as err:
            # Deterministic: a retry from the checkpoint would diverge again. End the trial
            # with the reason instead of failing it into Tune's retries.
            tune.report(diverged_metrics(schedule, str(err)))
            return
        decision = schedule.decide()
        if decision.action == "stop":
            # Close the last record inside this report's checkpoint: the STOP that follows
            # ends the trial before it could run any more code.
            schedule.advance(decision)
        metrics = epoch_metrics(schedule, result, decision)
        metrics.update(process_metrics(time.perf_counter() - started, entered))
        metrics.update(resources_cpu=granted.cpu, resources_gpu=granted.gpu)
        if note:
            metrics["checkpoint_fallback"], note = note, ""
        closing = metrics if decision.action != "continue" else None
        tune.report(metrics, checkpoint=save_checkpoint(schedule, closing))
        if decision.action in ("next_round", "final"):
            # Reached only when no ActivationDensityScheduler paused us: go on in-process.
            schedule.advance(decision)
