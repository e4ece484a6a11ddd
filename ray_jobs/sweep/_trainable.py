"""The Tune function trainable: one trial runs one point of the search space through the
whole prune schedule, reporting once per epoch with a checkpoint.

The trainable runs the schedule's one outer loop (:func:`adprune_core.schedule.run_loop`): every
epoch's :class:`~adprune_core.schedule.EpochReport` goes to Tune with a checkpoint taken after
the step, so when a network ends, its record is closed and the checkpoint already starts the
next network. The :class:`~ray_jobs.sweep.ActivationDensityScheduler` decides from the same
report with the same function: it PAUSEs the trial between rounds (with net[i+1]'s share under
``resources.per_round``) and Tune restarts it from that checkpoint, or STOPs it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune

from adprune_core.config import TrainingDiverged
from adprune_core.data import ArrayDataset
from adprune_core.nets import NETWORK_FILE, NETWORK_METRICS, NetworkInfo, save_network
from adprune_core.schedule import EpochReport, PruneSchedule, run_loop
from adprune_core.schedule.epoch_store import ShareSettings
from ray_jobs.sweep._sharing import SHARE_CONFIG_KEY
from ray_jobs.sweep._spec import SweepSpec
from ray_jobs.sweep._spec_checks import sweep_spec_from_dict
from ray_jobs.sweep._trial_errors import (
    check_device,
    ends_on_deterministic_errors,
    loaded_dataset,
    node_ip,
)
from ray_jobs.sweep._trial_resources import granted_resources, next_mac_ratio, use_resources
from ray_jobs.sweep._worker_process import PreloadedData, cached_dataset, release_freed_memory

CHECKPOINT_FILE = "schedule.pt"
# Benchmarks set it to get the trainable process's time and memory in every report.
PROCESS_METRICS_ENV = "ADPRUNE_PROCESS_METRICS"
# How long a trial that has just loaded an epoch gives its trainer, which said it goes on, to
# claim the next one (it does once the driver has taken its report: tens of milliseconds,
# seconds on a driver busy starting the sweep). Within it, the trial learns that it is to
# wait, and gives up its slot.
CLAIM_GRACE_S = 2.0


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
    # weights_only: checkpoints sit on shared storage, and a full unpickle could run code.
    saved = torch.load(folder / CHECKPOINT_FILE, map_location=device, weights_only=True)
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


def share_settings(config: dict[str, Any]) -> ShareSettings | None:
    """The sweep's epoch store, with this trial as the trainer of what it trains."""
    store = config.get(SHARE_CONFIG_KEY)
    if not store:
        return None
    trainer = tune.get_context().get_trial_id() or ""
    return ShareSettings(Path(store["root"]), int(store["max_bytes"]), trainer)


def load_schedule(
    spec: SweepSpec, data: ArrayDataset, device: str, share: ShareSettings | None = None
) -> tuple[PruneSchedule, str]:
    """The trial's schedule from its checkpoint (or new), and any checkpoint-fallback note."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return PruneSchedule(spec, data, device, share=share), ""
    note = ""
    local = checkpoint_folder(checkpoint)
    if local is not None:
        saved, note = load_saved_state(local, device)
    else:
        with checkpoint.as_directory() as folder:
            saved = read_checkpoint(Path(folder), device)
    return PruneSchedule.from_checkpoint(spec, saved, data, device, share), note


def checkpoint_folder(checkpoint: tune.Checkpoint) -> Path | None:
    """The checkpoint's folder when storage is a local (or shared) file system, else None."""
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return Path(checkpoint.path)
    return None


def save_checkpoint(schedule: PruneSchedule, report: EpochReport) -> tune.Checkpoint:
    """The schedule's checkpoint; for a report that ends a network, also that network's own
    file, which the driver logs as an MLflow model (record.models)."""
    folder = tempfile.mkdtemp(prefix="adprune-ckpt-")
    # HOST SYNC: once per checkpointed report (a network's end, a trained epoch, or a trial
    # about to wait for another): the schedule's state is copied off the device.
    torch.save(schedule.checkpoint(), Path(folder) / CHECKPOINT_FILE)
    if report.ends_network and schedule.spec.record.models != "none":
        weights = schedule.closed_weights
        if weights is not None:
            save_network(Path(folder) / NETWORK_FILE, weights, closed_network(schedule))
    return tune.Checkpoint.from_directory(folder)


def closed_network(schedule: PruneSchedule) -> NetworkInfo:
    """What rebuilds the network whose record the last step closed, with its metrics."""
    record = schedule.state.records[-1]
    shape = schedule.data.shape
    metrics = {key: getattr(record, key) for key in NETWORK_METRICS}
    return NetworkInfo(
        arch=schedule.spec.model.arch,
        widths=list(record.widths),
        input_shape=list(shape.image),
        num_classes=shape.num_classes,
        phase=record.phase,
        round=record.round,
        metrics={k: float(v) for k, v in metrics.items() if v is not None},
        kwargs=dict(schedule.spec.model.kwargs),
    )


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


class TrialReporter:
    """Hands each epoch's report to Tune with the checkpoint taken after its step, adding
    what only a trial knows: its node, its share, and a checkpoint fallback note."""

    def __init__(self, schedule: PruneSchedule, granted: Any, entered: float, note: str) -> None:
        self.schedule, self.granted, self.entered, self.note = schedule, granted, entered, note
        self.node_ip = node_ip()
        self.with_process = os.environ.get(PROCESS_METRICS_ENV) == "1"
        self.started = time.perf_counter()

    def __call__(self, report: EpochReport) -> None:
        spec = self.schedule.spec
        extras: dict[str, Any] = {
            "node_ip": self.node_ip,
            "resources_cpu": self.granted.cpu,
            "resources_gpu": self.granted.gpu,
        }
        if report.ends_network and not report.schedule_done and spec.resources.per_round:
            extras["next_mac_ratio"] = next_mac_ratio(self.schedule)
        if self.note:
            extras["checkpoint_fallback"], self.note = self.note, ""
        if self.with_process:
            extras["process"] = process_metrics(time.perf_counter() - self.started, self.entered)
        extras.update(self.awaited_epoch(report))
        report = report.with_fields(**extras)
        tune.report(report.to_tune(), checkpoint=self.checkpoint(report))
        self.started = time.perf_counter()

    def awaited_epoch(self, report: EpochReport) -> dict[str, Any]:
        """The next epoch this trial needs, where another trial is training it now: the
        scheduler then PAUSEs this trial (freeing its slot) instead of letting it wait."""
        if report.schedule_done:
            return {}
        sharing = self.schedule.sharing
        epoch = self.schedule.state.epoch + 1
        trainer = sharing.trained_elsewhere(epoch, CLAIM_GRACE_S)
        if trainer is None:
            return {}
        return {
            "awaits_key": sharing.key,
            "awaits_epoch": epoch,
            "awaits_trainer": trainer,
        }

    def checkpoint(self, report: EpochReport) -> tune.Checkpoint | None:
        """The checkpoint after this epoch; none after an epoch loaded from the epoch store
        that does not end its network, unless the trial is to wait for another (it is
        restarted from this checkpoint).

        A restart from the checkpoint before such an epoch loads it again (or, if evicted,
        trains it to the same values), and the recorder keeps a re-reported epoch once. Most
        reports of a large shared sweep are loaded epochs, and each checkpoint costs the
        driver Tune's persisting it and, every ``num_to_keep`` of a trial's checkpoints, a
        save of the whole experiment's state, which grows with the trials.
        """
        if report.shared and not report.ends_network and not report.awaits_another_trial:
            return None
        return save_checkpoint(self.schedule, report)


@ends_on_deterministic_errors
def adprune_trainable(config: dict[str, Any], preloaded: PreloadedData | None = None) -> None:
    entered = time.time()
    spec = sweep_spec_from_dict(copy.deepcopy(config["spec"]))
    release_freed_memory()  # the previous round's (or trial's) tensors are gone by now
    granted = granted_resources(spec)
    device = trial_device(spec, granted.gpu)
    check_device(device)
    use_resources(granted, device)
    data = loaded_dataset(lambda: cached_dataset(spec, preloaded), spec.data.dataset)
    schedule, note = load_schedule(spec, data, device, share_settings(config))
    reporter = TrialReporter(schedule, granted, entered, note)
    try:
        run_loop(schedule, reporter)
    except TrainingDiverged as err:
        # Deterministic: a retry from the checkpoint would diverge again. End the trial
        # with the reason instead of failing it into Tune's retries.
        diverged = schedule.diverged_report(str(err))
        tune.report(dataclasses.replace(diverged, node_ip=reporter.node_ip).to_tune())
