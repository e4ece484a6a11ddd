"""What a finished schedule delivers: its chosen (or final-phase) network, Eq. 1 against
net0, and the maps of the paper's Fig. 3. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adprune_core.schedule.records import NetRecord
from adprune_core.schedule.state import ScheduleState


@dataclass(frozen=True)
class ScheduleSummary:
    chosen_round: int
    widths: list[int]
    accuracy: float
    param_reduction: float
    mac_reduction: float
    training_complexity: float
    baseline_complexity: float
    stop_reason: str
    rounds: int
    latency_ms_b1: float | None = None
    latency_ms_batch: float | None = None
    latency_reduction_b1: float | None = None
    latency_reduction_batch: float | None = None


def result_record(state: ScheduleState) -> NetRecord:
    """What a finished schedule delivers: its final-phase network if any, else the chosen one."""
    final = [r for r in state.records if r.phase == "final"]
    search = [r for r in state.records if r.phase == "search"]
    return final[-1] if final else search[int(state.chosen_round or 0)]


def summarize(state: ScheduleState) -> ScheduleSummary:
    """The result of a finished schedule: the final-phase network if any, else the chosen one."""
    if not state.done or state.chosen_round is None:
        raise ValueError("the schedule has not finished")
    search = [r for r in state.records if r.phase == "search"]
    result = result_record(state)
    total_epochs = sum(r.epochs for r in state.records)
    return ScheduleSummary(
        chosen_round=state.chosen_round,
        widths=list(result.widths),
        accuracy=result.accuracy,
        param_reduction=result.param_reduction,
        mac_reduction=result.mac_reduction,
        training_complexity=state.records[-1].training_complexity,
        # Eq. 1 for net0 trained for every epoch the schedule spent: its MAC reduction is 1.
        baseline_complexity=float(total_epochs),
        stop_reason=state.stop_reason or "",
        rounds=len(search),
        latency_ms_b1=result.latency_ms_b1,
        latency_ms_batch=result.latency_ms_batch,
        latency_reduction_b1=result.latency_reduction_b1,
        latency_reduction_batch=result.latency_reduction_batch,
    )


def fig3_maps(state: ScheduleState) -> dict[str, Any] | None:
    """net0's and the result network's activation maps (the paper's Fig. 3), for the driver
    to draw on the trial run; None when latency-free records carry no maps."""
    net0, result = state.records[0], result_record(state)
    if net0.activation_maps is None or result.activation_maps is None:
        return None
    return {
        "input": net0.activation_maps["input"],
        "net0": net0.activation_maps["layers"],
        "chosen": result.activation_maps["layers"],
        "chosen_label": result.label,
    }
