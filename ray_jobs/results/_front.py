"""The accuracy vs OPS-reduction front over trained networks: objectives and the rule.

Front rule: a network is on the front when no other network is at least as good on every
objective and strictly better on one. Networks with identical objective values do not
dominate each other, so ties and exact duplicates are all kept (all on, or all off, the
front). A network with a missing (NaN) objective is never on the front and dominates none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from adprune_core.config import LATENCY_FIELDS, Objective, SpecError
from adprune_core.config import parse_objectives as parse_objectives_of
from ray_jobs.results._records import NetworkRow

OBJECTIVE_COLUMNS = (
    "accuracy",
    "mac_reduction",
    "param_reduction",
    "training_complexity",
    "params",
    "macs",
    "energy_j",
    "epochs",
    *LATENCY_FIELDS,
)
DEFAULT_OBJECTIVES = "accuracy:max,mac_reduction:max"
UNITS = {
    "accuracy": "test accuracy (%)",
    "mac_reduction": "MAC (OPS) reduction vs net0 (x)",
    "param_reduction": "parameter reduction vs net0 (x)",
    "training_complexity": "training complexity (net0-epoch equivalents, Eq. 1)",
    "params": "parameters (count)",
    "macs": "MACs per image (count)",
    "energy_j": "energy per image (J)",
    "epochs": "epochs trained",
    "latency_ms_b1": "forward latency at batch 1 (ms, median)",
    "latency_ms_batch": "forward latency at the eval batch (ms, median)",
    "latency_reduction_b1": "batch-1 latency reduction vs net0 (x)",
    "latency_reduction_batch": "eval-batch latency reduction vs net0 (x)",
}


def parse_objectives(text: str) -> list[Objective]:
    """``pareto --objectives``: comma-separated ``COLUMN[:max|min]``, at least two, in the
    syntax ``search_alg.objectives`` uses (:func:`adprune_core.config.parse_objectives`)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return parse_objectives_of(parts, OBJECTIVE_COLUMNS, "--objectives", fewest=2)
    except ValueError as err:
        raise SpecError(str(err)) from None


def non_dominated(points: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Mask of rows of ``points`` (larger is better in every column) that nothing dominates."""
    points = np.asarray(points, dtype=float)
    valid = ~np.isnan(points).any(axis=1)
    on_front = valid.copy()
    candidates = points[valid]
    for start in range(0, len(points), chunk):
        block = points[start : start + chunk]
        # others[j] dominates block[i]: >= everywhere and > somewhere.
        ge = (candidates[None, :, :] >= block[:, None, :]).all(axis=2)
        gt = (candidates[None, :, :] > block[:, None, :]).any(axis=2)
        dominated = (ge & gt).any(axis=1)
        on_front[start : start + chunk] &= ~dominated
    return on_front


def objective_matrix(rows: Sequence[NetworkRow], objectives: Sequence[Objective]) -> np.ndarray:
    matrix = np.array(
        [[float(getattr(r, o.column)) for o in objectives] for r in rows], dtype=float
    ).reshape(len(rows), len(objectives))
    signs = np.array([1.0 if o.mode == "max" else -1.0 for o in objectives])
    return matrix * signs


def front_mask(rows: Sequence[NetworkRow], objectives: Sequence[Objective]) -> list[bool]:
    if not rows:
        return []
    return [bool(x) for x in non_dominated(objective_matrix(rows, objectives))]


def ordered(
    rows: Sequence[NetworkRow], mask: Sequence[bool], objectives: Sequence[Objective]
) -> list[tuple[NetworkRow, bool]]:
    """Front first, each part best-first by the objectives in order, then by run id."""

    def key(pair: tuple[NetworkRow, bool]) -> tuple:
        row, on_front = pair
        values = []
        for o in objectives:
            value = float(getattr(row, o.column))
            value = -math.inf if math.isnan(value) else value
            values.append(-value if o.mode == "max" else value)
        return (not on_front, *values, row.run_id)

    return sorted(zip(rows, mask), key=key)
