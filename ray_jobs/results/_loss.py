"""The reduction at a given accuracy loss: how much smaller a network gets for the accuracy a
user can give up (the paper's iso-accuracy comparison, its Table III).

Per sweep and per loss L (points against the sweep's baseline net0, its earliest trained),
the network with the most MAC reduction among those within L points of that net0's accuracy;
ties go to the more accurate network, then to the lower run id. The baseline net0 itself is
always within, so every loss has an answer (1x at worst) once a net0 is trained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from adprune_core.config import net_label as phase_round_label
from adprune_core.schedule import format_table, short_widths
from ray_jobs.results._records import NetworkRow
from ray_jobs.results._reference import DEFAULT_LOSSES, Baseline, baseline_of, earliest_net0

# Accuracies are ratios of counts; a floor computed as baseline - L/100 must not drop a
# network that sits exactly L points below by a rounding error.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class ReductionAtLoss:
    loss_points: float
    floor: float  # the least accuracy allowed
    network: NetworkRow | None  # None before any net0 is trained


def metric_name(loss_points: float) -> str:
    """``mac_reduction_at_1pt``, ``mac_reduction_at_0.5pt``."""
    return f"mac_reduction_at_{loss_points:g}pt"


def net_label(row: NetworkRow) -> str:
    return phase_round_label(row.phase, row.round)


def best_within(rows: Sequence[NetworkRow], floor: float) -> NetworkRow | None:
    allowed = [
        r
        for r in rows
        if not math.isnan(r.accuracy)
        and not math.isnan(r.mac_reduction)
        and r.accuracy >= floor - TOLERANCE
    ]
    if not allowed:
        return None
    return min(allowed, key=lambda r: (-r.mac_reduction, -r.accuracy, r.run_id))


def reductions_at_loss(
    rows: Sequence[NetworkRow],
    losses: Sequence[float] = DEFAULT_LOSSES,
    baseline: Baseline | None = None,
) -> list[ReductionAtLoss]:
    """For each loss, the best MAC reduction among ``rows`` (one sweep's networks)."""
    baseline = baseline or baseline_of(earliest_net0(rows))
    if baseline is None:
        return [ReductionAtLoss(loss, math.nan, None) for loss in losses]
    found = []
    for loss in losses:
        floor = baseline.accuracy - loss / 100.0
        found.append(ReductionAtLoss(loss, floor, best_within(rows, floor)))
    return found


def loss_metrics(rows: Sequence[NetworkRow]) -> dict[str, float]:
    """``mac_reduction_at_{L}pt`` for the default losses, for a sweep run."""
    return {
        metric_name(found.loss_points): found.network.mac_reduction
        for found in reductions_at_loss(rows)
        if found.network is not None
    }


def fmt(value: float, pattern: str) -> str:
    return "-" if value is None or math.isnan(value) else pattern.format(value)


def loss_table(found: Sequence[ReductionAtLoss]) -> str:
    headers = ["loss", "floor", "MACs red.", "trial", "net", "widths", "accuracy"]
    headers += ["params red.", "latency red."]
    body = []
    for item in found:
        n = item.network
        cells = [f"{item.loss_points:g} pt", fmt(100 * item.floor, "{:.2f}%")]
        if n is None:
            body.append(cells + ["-"] * 7)
            continue
        cells += [f"{n.mac_reduction:.1f}x", n.trial, net_label(n), short_widths(n.widths, 10)]
        cells += [f"{100 * n.accuracy:.2f}%", f"{n.param_reduction:.1f}x"]
        cells.append(fmt(n.latency_reduction_b1, "{:.1f}x"))
        body.append(cells)
    return format_table(headers, body)


def loss_heading(sweep: str, sweep_id: str, rows: Sequence[NetworkRow]) -> str:
    base = earliest_net0(rows)
    where = (
        f"net0 {100 * base.accuracy:.2f}% (trial {base.trial})" if base else "no net0 trained yet"
    )
    return f"sweep {sweep} ({sweep_id[:8]}): best MAC reduction within each loss of {where}"
