"""What a trial knows of its resources: the share Tune granted it, sized into torch, and the
MACs of the next network, which ``resources.per_round`` scales the next share by."""

from __future__ import annotations

import torch
from ray import tune

from adprune_core.nets import cost_report
from adprune_core.schedule import PruneSchedule
from ray_jobs.sweep._per_round import TrialResources, threads_for
from ray_jobs.sweep._spec import SweepSpec


def granted_resources(spec: SweepSpec) -> TrialResources:
    """The share Tune placed this run of the trial on (its current network's with
    ``resources.per_round``); the spec's own outside a Tune trial."""
    try:
        required = tune.get_context().get_trial_resources().required_resources
    except Exception:  # not inside a Tune trial (e.g. a unit test calling the trainable)
        return TrialResources(spec.resources.cpu, spec.resources.gpu)
    return TrialResources(float(required.get("CPU", 0.0)), float(required.get("GPU", 0.0)))


def use_resources(granted: TrialResources, device: str) -> None:
    """Size this process to its share: an actor reused across rounds keeps the thread count
    of the share it started with unless told otherwise."""
    torch.set_num_threads(threads_for(granted.cpu))
    if device == "cuda" and 0 < granted.gpu < 1:
        torch.cuda.set_per_process_memory_fraction(granted.gpu)


def next_mac_ratio(schedule: PruneSchedule) -> float:
    """MACs of the network the schedule starts next over net0's: what ``resources.per_round``
    scales that network's share by."""
    state = schedule.state
    cost = cost_report(
        schedule.spec.model.arch,
        state.widths,
        **schedule.data.shape.as_kwargs(),
        baseline_widths=state.net0_widths,
        kwargs=schedule.spec.model.kwargs,
    )
    return 1.0 / cost.mac_reduction
