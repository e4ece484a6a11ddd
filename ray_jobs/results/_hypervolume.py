"""The hypervolume of a sweep's front: one number to compare sweeps by.

The region of objective space that the sweep's networks dominate, bounded by a reference
point taken from the sweep's own net0s: for each objective, the worst value any net0 of the
sweep reached (for accuracy, the lowest net0 accuracy; for MAC and parameter reduction, 1x).
A network adds to it only where it beats that point on every objective, i.e. where it is
better than an unpruned network on all counts. Computed exactly with Optuna's hypervolume
(the one its multi-objective samplers use).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_jobs.results._front import DEFAULT_OBJECTIVES, Objective, objective_matrix
from ray_jobs.results._records import NetworkRow, load_networks


@dataclass(frozen=True)
class SweepHypervolume:
    sweep: str
    sweep_id: str
    value: float  # NaN when the sweep has no net0 to take a reference point from
    reference: dict[str, float]

    def __str__(self) -> str:
        where = ", ".join(f"{k} {v:.4g}" for k, v in self.reference.items())
        return f"sweep {self.sweep} ({self.sweep_id[:8]}): hypervolume {self.value:.4g} ({where})"


def net0_reference(rows: Sequence[NetworkRow], objectives: Sequence[Objective]) -> np.ndarray:
    """Per objective, the worst value any net0 (search round 0) among ``rows`` reached."""
    net0 = [r for r in rows if r.phase == "search" and r.round == 0]
    if not net0:
        return np.full(len(objectives), math.nan)
    signed = objective_matrix(net0, objectives)  # larger is better in every column
    signs = np.array([1.0 if o.sense == "max" else -1.0 for o in objectives])
    return np.nanmin(signed, axis=0) * signs


def hypervolume(
    rows: Sequence[NetworkRow], objectives: Sequence[Objective], reference: np.ndarray
) -> float:
    """The volume ``rows`` dominate beyond ``reference`` (in the objectives' own units)."""
    from optuna._hypervolume import compute_hypervolume

    signs = np.array([1.0 if o.sense == "max" else -1.0 for o in objectives])
    bound = np.asarray(reference, dtype=float) * signs
    if np.isnan(bound).any():
        return math.nan
    signed = objective_matrix(rows, objectives)
    valid = ~np.isnan(signed).any(axis=1)
    beyond = signed[valid & (signed >= bound).all(axis=1)]
    # Optuna minimizes: the negated points and bound.
    return float(compute_hypervolume(-beyond, -bound)) if len(beyond) else 0.0


def sweep_hypervolumes(
    rows: Sequence[NetworkRow], objectives: Sequence[Objective]
) -> list[SweepHypervolume]:
    """One hypervolume per sweep among ``rows``, each against its own net0 reference."""
    by_sweep: dict[tuple[str, str], list[NetworkRow]] = {}
    for row in rows:
        by_sweep.setdefault((row.sweep, row.sweep_id), []).append(row)
    found = []
    for (sweep, sweep_id), members in sorted(by_sweep.items()):
        reference = net0_reference(members, objectives)
        found.append(
            SweepHypervolume(
                sweep,
                sweep_id,
                hypervolume(members, objectives, reference),
                {o.column: float(v) for o, v in zip(objectives, reference)},
            )
        )
    return found


def default_objectives() -> list[Objective]:
    from ray_jobs.results._front import parse_objectives

    return parse_objectives(DEFAULT_OBJECTIVES)


def sweep_front_hypervolume(rows: Sequence[NetworkRow]) -> dict[str, float]:
    """The accuracy/MAC front's hypervolume and its reference point, as sweep-run metrics."""
    objectives = default_objectives()
    reference = net0_reference(rows, objectives)
    value = hypervolume(rows, objectives, reference)
    if math.isnan(value):  # no network trained yet (e.g. every trial so far diverged)
        return {"hypervolume": 0.0}
    metrics = {"hypervolume": value}
    metrics.update({f"hypervolume_ref_{o.column}": float(v) for o, v in zip(objectives, reference)})
    return metrics


def trial_end_hypervolume(client: Any, experiment: str, sweep_id: str) -> dict[str, float]:
    """What the sweep run logs after each completed trial: the front's hypervolume so far."""
    return sweep_front_hypervolume(load_networks(client, [experiment], sweep_id=sweep_id))
