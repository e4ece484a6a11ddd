"""The hypervolume of a front: one number to compare sweeps by.

The region of objective space the networks dominate, bounded by a reference point
(:mod:`ray_jobs.results._reference`: by default 5 points below the baseline net0's accuracy,
and 1x for reductions). Computed exactly by ``moocore.hypervolume``, a maintained public API
from the authors of the standard hypervolume algorithms. Sweeps scored together share one
reference point: one ``pareto`` over several sweeps, and the sweep runs of one experiment
(whose baseline is the experiment's earliest net0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_jobs.results._front import DEFAULT_OBJECTIVES, Objective, parse_objectives
from ray_jobs.results._loss import loss_metrics
from ray_jobs.results._records import NetworkRow, all_runs, load_networks, network_row
from ray_jobs.results._reference import (
    Baseline,
    Reference,
    ReferenceSpec,
    baseline_of,
    reference_from_params,
    resolve_reference,
)
from ray_jobs.tracking.keys import CLOSED_TAG, KIND_TAG, NET_KIND, SWEEP_KIND
from ray_jobs.tracking.store import experiment_ids


@dataclass(frozen=True)
class SweepHypervolume:
    sweep: str
    sweep_id: str
    value: float  # NaN when there is no net0 to hang the accuracy floor from

    def __str__(self) -> str:
        return f"sweep {self.sweep} ({self.sweep_id[:8]}): hypervolume {self.value:.4g}"


def hypervolume(
    rows: Sequence[NetworkRow], objectives: Sequence[Objective], point: Sequence[float]
) -> float:
    """The volume ``rows`` dominate beyond ``point``, in the objectives' own units."""
    import moocore

    ref = np.asarray(point, dtype=float)
    if np.isnan(ref).any():
        return math.nan
    values = np.array(
        [[float(getattr(r, o.column)) for o in objectives] for r in rows], dtype=float
    ).reshape(len(rows), len(objectives))
    signs = np.array([1.0 if o.mode == "max" else -1.0 for o in objectives])
    # Only points strictly better than the reference on every objective enclose any volume.
    beyond = values[~np.isnan(values).any(axis=1) & (values * signs > ref * signs).all(axis=1)]
    if not len(beyond):
        return 0.0
    maximise = [o.mode == "max" for o in objectives]
    return float(moocore.hypervolume(beyond, ref=ref, maximise=maximise))


def by_sweep(rows: Sequence[NetworkRow]) -> dict[tuple[str, str], list[NetworkRow]]:
    groups: dict[tuple[str, str], list[NetworkRow]] = {}
    for row in rows:
        groups.setdefault((row.sweep, row.sweep_id), []).append(row)
    return dict(sorted(groups.items()))


def sweep_hypervolumes(
    rows: Sequence[NetworkRow], objectives: Sequence[Objective], reference: Reference
) -> list[SweepHypervolume]:
    """One hypervolume per sweep among ``rows``, every one against the same ``reference``."""
    return [
        SweepHypervolume(sweep, sweep_id, hypervolume(members, objectives, reference.point))
        for (sweep, sweep_id), members in by_sweep(rows).items()
    ]


def experiment_baseline(client: Any, experiment: str) -> Baseline | None:
    """The experiment's earliest closed net0: the baseline its sweep runs share."""
    ids = experiment_ids(client, (experiment,))
    where = (
        f"tags.`{KIND_TAG}` = '{NET_KIND}' and tags.`{CLOSED_TAG}` = 'true' "
        "and params.round = '0' and params.phase = 'search'"
    )
    runs = client.search_runs(
        list(ids.values()), where, max_results=1, order_by=["attributes.end_time ASC"]
    )
    return baseline_of(network_row(runs[0], experiment, {})) if runs else None


def sweep_reference_spec(client: Any, experiment: str, sweep_id: str) -> ReferenceSpec:
    """The spec's ``pareto.reference``, from the sweep run's params (default when absent)."""
    ids = experiment_ids(client, (experiment,))
    where = f"tags.`{KIND_TAG}` = '{SWEEP_KIND}' and tags.sweep_id = '{sweep_id}'"
    runs = all_runs(client, ids.values(), where)
    return reference_from_params(runs[0].data.params) if runs else ReferenceSpec()


def sweep_progress(
    rows: Sequence[NetworkRow], spec: ReferenceSpec, baseline: Baseline | None
) -> dict[str, float]:
    """The sweep run's metrics over ``rows``: the accuracy/MAC front's hypervolume against
    the shared reference, its coordinates, and the MAC reduction at each loss."""
    objectives = parse_objectives(DEFAULT_OBJECTIVES)
    reference = resolve_reference(spec, objectives, rows, baseline)
    value = hypervolume(rows, objectives, reference.point)
    if math.isnan(value):  # no net0 trained yet (e.g. every trial so far diverged)
        return {"hypervolume": 0.0}
    metrics = {"hypervolume": value}
    metrics.update({f"hypervolume_ref_{o.column}": v for o, v in zip(objectives, reference.point)})
    metrics.update(loss_metrics(rows))
    return metrics


# The networks of trials already scored, by sweep id. A trial that has ended keeps its
# networks, so each trial's end reads its own from the store instead of every network of
# the sweep again: that re-read grew with the sweep and took 11 s of the driver's CPU in
# a 36-trial sweep of the quickstart (benchmarks/sharing.py).
_SCORED_TRIALS: dict[str, dict[str, list[NetworkRow]]] = {}


def ended_trials_rows(
    client: Any, experiment: str, sweep_id: str, trials: Sequence[str]
) -> list[NetworkRow]:
    """The networks of ``trials``, ended in this order. The last one has just ended and is
    read afresh (the writer may still be closing its runs); the others are kept."""
    kept = _SCORED_TRIALS.setdefault(sweep_id, {})
    rows: list[NetworkRow] = []
    for position, trial in enumerate(trials):
        found = kept.get(trial)
        if found is None:
            found = load_networks(client, [experiment], sweep_id=sweep_id, trial_id=trial)
            if position < len(trials) - 1:
                kept[trial] = found
        rows.extend(found)
    return rows


def trial_end_hypervolume(
    client: Any,
    experiment: str,
    sweep_id: str,
    trials: Sequence[str] | None = None,
    reference: ReferenceSpec | None = None,
) -> dict[str, float]:
    """What the sweep run logs after a trial ends: the hypervolume of the front of
    ``trials`` (the trials ended so far; all of the sweep's when None), against the
    experiment's shared reference, and the MAC reduction at each loss."""
    if trials is None:
        rows = load_networks(client, [experiment], sweep_id=sweep_id)
    else:
        rows = ended_trials_rows(client, experiment, sweep_id, trials)
    spec = reference or sweep_reference_spec(client, experiment, sweep_id)
    return sweep_progress(rows, spec, experiment_baseline(client, experiment))
