"""Closing a network's record: its cost, Eq. 1, measured latency and Fig. 3's maps.

One hook-free copy of the trained network feeds both probes (latency and Fig. 3's maps), on
the device and threads it trained with, while the network is still live.
"""

from __future__ import annotations

from typing import Any

from adprune_core.config import ScheduleSpec, training_complexity
from adprune_core.data import DeviceBatches
from adprune_core.engine import mean_activation_maps, measure_latency, memory_format
from adprune_core.nets import cost_report
from adprune_core.schedule.criteria import Decision, classify_profile
from adprune_core.schedule.network import LiveNetwork
from adprune_core.schedule.records import NetRecord
from adprune_core.schedule.state import ScheduleState


def measure_probes(
    spec: ScheduleSpec, network: LiveNetwork, batches: DeviceBatches
) -> dict[str, Any]:
    """What a record measures on the trained network rather than computes: its forward
    latency (when on) and Fig. 3's maps. Trials that share a network may take these from
    the trial that trained it."""
    copy = network.hook_free_copy()
    first_image = next(iter(batches.test_batches(1)))[0][0]
    probes: dict[str, Any] = {"activation_maps": mean_activation_maps(copy, first_image)}
    latency = spec.record.latency
    if latency.enabled:
        figures = measure_latency(
            copy,
            network.shape.image,
            spec.data.eval_batch_size,
            latency,
            spec.train.precision,
            memory_format(spec.train.channels_last),
        )
        probes.update(b1_ms=figures.b1_ms, batch_ms=figures.batch_ms)
    return probes


def latency_fields(probes: dict[str, Any], records: list[NetRecord]) -> dict[str, float]:
    """``latency_ms_*`` and their reductions against net0 (the first record, or this
    network if it is net0); empty when latency is off."""
    if "b1_ms" not in probes:
        return {}
    b1, batch = probes["b1_ms"], probes["batch_ms"]
    net0_b1 = records[0].latency_ms_b1 if records else None
    net0_batch = records[0].latency_ms_batch if records else None
    return {
        "latency_ms_b1": b1,
        "latency_ms_batch": batch,
        "latency_reduction_b1": (net0_b1 or b1) / b1,
        "latency_reduction_batch": (net0_batch or batch) / batch,
    }


def close_record(
    spec: ScheduleSpec,
    state: ScheduleState,
    decision: Decision,
    network: LiveNetwork,
    probes: dict[str, Any],
) -> NetRecord:
    """The record of the network ``decision`` ends, with ``probes`` measured on it
    (:func:`measure_probes`) while it was still live."""
    history = state.history
    cost = cost_report(
        spec.model.arch,
        state.widths,
        **network.shape.as_kwargs(),
        baseline_widths=state.net0_widths,
        kwargs=spec.model.kwargs,
    )
    previous = state.records[-1].training_complexity if state.records else 0.0
    return NetRecord(
        round=state.record_round,
        phase=state.phase,
        widths=list(state.widths),
        epochs=history.epochs,
        ad_history=list(history.ad),
        layer_ad_history=[list(x) for x in history.layer_ad],
        channel_ad=[list(x) for x in history.last_channel_ad],
        accuracy_history=list(history.accuracy),
        loss_history=list(history.loss),
        accuracy=history.accuracy[-1],
        loss=history.loss[-1],
        params=cost.params,
        macs=cost.macs,
        energy_j=cost.energy_j,
        param_reduction=cost.param_reduction,
        mac_reduction=cost.mac_reduction,
        end_reason=decision.rho or decision.reason,
        profile=decision.profile or classify_profile(history.ad, spec.prune.delta.flat_band),
        epochs_to_rho=history.epochs if decision.rho == "saturated" else None,
        training_complexity=previous + training_complexity([(history.epochs, cost.mac_reduction)]),
        **latency_fields(probes, state.records),
        activation_maps=probes["activation_maps"],
    )
