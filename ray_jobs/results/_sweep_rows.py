"""``compare``'s one row per sweep: the numbers two sweeps compare by at a glance, its
hypervolume against the reference every selected sweep shares and its MAC reduction at each
accuracy loss (with the network reaching it at 1 point)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from adprune_core.schedule import format_table
from ray_jobs.results._front import DEFAULT_OBJECTIVES, parse_objectives
from ray_jobs.results._hypervolume import by_sweep, hypervolume
from ray_jobs.results._loss import metric_name, net_label, reductions_at_loss
from ray_jobs.results._records import NetworkRow, TrialRow
from ray_jobs.results._reference import (
    DEFAULT_LOSSES,
    Reference,
    ReferenceSpec,
    earliest_net0,
    resolve_reference,
)


def shared_reference(networks: Sequence[NetworkRow], spec: ReferenceSpec) -> Reference:
    return resolve_reference(spec, parse_objectives(DEFAULT_OBJECTIVES), networks)


def sweep_record(
    members: Sequence[NetworkRow], trials: Sequence[TrialRow], reference: Reference
) -> dict[str, Any]:
    first = members[0]
    base = earliest_net0(members)
    record: dict[str, Any] = {
        "experiment": first.experiment,
        "sweep": first.sweep,
        "sweep_id": first.sweep_id,
        "trials": sum(1 for t in trials if t.sweep_id == first.sweep_id),
        "networks": len(members),
        "net0_accuracy": base.accuracy if base else None,
    }
    volume = hypervolume(members, reference.objectives, reference.point)
    record["hypervolume"] = None if math.isnan(volume) else volume  # JSON has no NaN
    at_one = None
    for found in reductions_at_loss(members, DEFAULT_LOSSES):
        network = found.network
        record[metric_name(found.loss_points)] = network.mac_reduction if network else None
        if found.loss_points == 1.0:
            at_one = network
    record["at_1pt_network"] = f"{at_one.trial} {net_label(at_one)}" if at_one else None
    record["at_1pt_accuracy"] = at_one.accuracy if at_one else None
    return record


def sweep_records(
    networks: Sequence[NetworkRow], trials: Sequence[TrialRow], reference: Reference
) -> list[dict[str, Any]]:
    return [sweep_record(members, trials, reference) for members in by_sweep(networks).values()]


def cell(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return pattern.format(value)


def sweeps_text(records: Sequence[dict[str, Any]], reference: Reference) -> str:
    losses = [metric_name(loss) for loss in DEFAULT_LOSSES]
    headers = ["sweep", "id", "trials", "net0 acc.", "hypervolume"]
    headers += [f"MACs red. @{loss:g}pt" for loss in DEFAULT_LOSSES] + ["@1pt network"]
    body = [
        [
            r["sweep"],
            r["sweep_id"][:8],
            str(r["trials"]),
            cell(None if r["net0_accuracy"] is None else 100 * r["net0_accuracy"], "{:.2f}%"),
            cell(r["hypervolume"], "{:.4g}"),
            *[cell(r[key], "{:.1f}x") for key in losses],
            r["at_1pt_network"] or "-",
        ]
        for r in records
    ]
    note = f"hypervolume reference (shared by {len(records)} sweep(s)): {reference.describe()}"
    return format_table(headers, body) + "\n" + note
