"""The reference point that scores a front, and the net0 baseline it hangs from.

Default: accuracy 5 points below the baseline net0, and 1x for every reduction. Five points is
the largest loss of the reduction-at-loss table (0.5, 1, 2, 5), so every network that table can
name also adds to the hypervolume; and it keeps the networks pruning is for: the paper's
VGG-19 CIFAR-10 net1 (94 % against net0's 97 %, 3 points) and the quickstart's net3 (about 4
points below net0 with 72x fewer MACs) both lie above it. A floor at net0's own accuracy, as
before, scored 0 for both.

The baseline is the earliest net0 trained among the networks scored together (ties by run
id): it is fixed once that net0 exists, so adding trials or later sweeps never moves the
reference of what was scored before, and a sweep's hypervolume can only rise as trials
complete. In a grid over pruning thresholds every trial trains the same net0, so which one
is moot.

Syntax (``pareto --reference`` and the spec's ``pareto.reference``), comma-separated:
``accuracy=0.93`` (absolute, 0-1), ``accuracy=net0-2`` (points below net0), or
``COLUMN=VALUE`` for any other objective (e.g. ``training_complexity=30``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adprune_core.config import SpecError
from ray_jobs.results._front import OBJECTIVE_COLUMNS, Objective
from ray_jobs.results._records import NetworkRow

DEFAULT_LOSS_POINTS = 5.0
DEFAULT_LOSSES = (0.5, 1.0, 2.0, 5.0)
# A reduction's reference is net0's own value by definition: no reduction at all.
REDUCTION_COLUMNS = (
    "mac_reduction",
    "param_reduction",
    "latency_reduction_b1",
    "latency_reduction_batch",
)
SPEC_KEY = "pareto.reference"
_NET0_LOSS = re.compile(r"^net0\s*([+-])\s*(.+?)\s*(?:pts?|points?)?$")


@dataclass(frozen=True)
class ReferenceSpec:
    """What the user asked for; resolved against the networks by :func:`resolve_reference`."""

    accuracy: float | None = None  # an absolute floor (0-1)
    loss_points: float | None = None  # or this many points below the baseline net0 (default 5)
    values: tuple[tuple[str, float], ...] = ()  # other objectives' references, (column, value)
    text: str = ""  # as the user wrote it, for messages

    def named(self) -> list[str]:
        """The objectives this reference sets explicitly."""
        given = self.accuracy is not None or self.loss_points is not None
        return (["accuracy"] if given else []) + [column for column, _ in self.values]


@dataclass(frozen=True)
class Baseline:
    """The net0 the accuracy floor and the losses are measured from."""

    accuracy: float
    sweep: str
    trial: str
    run_id: str


@dataclass(frozen=True)
class Reference:
    """The resolved point, one value per objective in the objectives' order."""

    objectives: tuple[Objective, ...]
    point: tuple[float, ...]
    baseline: Baseline | None
    loss_points: float | None  # None when the accuracy floor was given as an absolute

    def value(self, column: str) -> float:
        return self.point[[o.column for o in self.objectives].index(column)]

    def describe(self) -> str:
        """One line: every coordinate and where the accuracy floor comes from."""
        parts = []
        for objective, value in zip(self.objectives, self.point):
            parts.append(f"{objective.column} {fmt_value(objective.column, value)}")
        text = ", ".join(parts)
        if self.loss_points is not None and self.baseline is not None:
            text += (
                f" (accuracy = net0 {100 * self.baseline.accuracy:.2f}% of sweep "
                f"{self.baseline.sweep} trial {self.baseline.trial} - {self.loss_points:g} pts)"
            )
        return text


def fmt_value(column: str, value: float) -> str:
    if column == "accuracy":
        return f"{value:.4f}"
    return f"{value:g}x" if column in REDUCTION_COLUMNS else f"{value:g}"


def number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise SpecError(f"{where}: {text!r} is not a finite number")
    return value


def parse_accuracy(raw: str, where: str) -> tuple[float | None, float | None]:
    """(absolute floor or None, loss points) from ``0.93`` or ``net0-2``."""
    match = _NET0_LOSS.match(raw)
    if match:
        sign, amount = match.groups()
        loss = number(amount, where)
        if sign == "+" or loss < 0:
            raise SpecError(f"{where}: a loss below net0 must be >= 0 points, e.g. accuracy=net0-2")
        return None, loss
    value = number(raw, where)
    if not 0.0 <= value <= 1.0:
        raise SpecError(
            f"{where}: an absolute accuracy is a fraction in 0-1 (e.g. 0.93); "
            "for points below net0 write accuracy=net0-5"
        )
    return value, None


def parse_reference(text: str | None, option: str = "--reference") -> ReferenceSpec:
    """``accuracy=net0-2,training_complexity=30`` -> a :class:`ReferenceSpec`."""
    if text is None or not str(text).strip():
        return ReferenceSpec()
    accuracy, loss, values = None, None, {}
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        column, sep, raw = (s.strip() for s in part.partition("="))
        where = f"{option} {part}"
        if not sep or not raw:
            raise SpecError(f"{where}: expected COLUMN=VALUE, e.g. accuracy=net0-5")
        if column not in OBJECTIVE_COLUMNS:
            raise SpecError(f"{where}: unknown column {column!r}")
        if column == "accuracy":
            accuracy, loss = parse_accuracy(raw, where)
        else:
            values[column] = number(raw, where)
    return ReferenceSpec(accuracy, loss, tuple(values.items()), str(text))


def parse_losses(text: str | None, option: str = "--losses") -> tuple[float, ...]:
    """``0.5,1,2,5`` -> losses in points, each >= 0, ascending."""
    if text is None or not str(text).strip():
        return DEFAULT_LOSSES
    losses = []
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        value = number(part.removesuffix("pt").strip(), f"{option} {part}")
        if value < 0:
            raise SpecError(f"{option} {part}: a loss must be >= 0 points")
        losses.append(value)
    if not losses:
        raise SpecError(f"{option}: give at least one loss in points, e.g. 0.5,1,2,5")
    return tuple(sorted(set(losses)))


def check_reference_objectives(
    spec: ReferenceSpec, objectives: Sequence[Objective], option: str = "--reference"
) -> None:
    """A reference on an objective that was not asked for is a mistake, not a no-op."""
    asked = [o.column for o in objectives]
    for column in spec.named():
        if column not in asked:
            given = spec.text or column
            raise SpecError(
                f"{option} {given}: {column} is not one of the objectives "
                f"({','.join(str(o) for o in objectives)})"
            )


def is_net0(row: NetworkRow) -> bool:
    return row.phase == "search" and row.round == 0


def earliest_net0(rows: Sequence[NetworkRow]) -> NetworkRow | None:
    net0 = [r for r in rows if is_net0(r) and not math.isnan(r.accuracy)]
    return min(net0, key=lambda r: (r.end_time, r.run_id)) if net0 else None


def baseline_of(row: NetworkRow | None) -> Baseline | None:
    return None if row is None else Baseline(row.accuracy, row.sweep, row.trial, row.run_id)


def nadir(rows: Sequence[NetworkRow], objective: Objective) -> float:
    values = [float(getattr(r, objective.column)) for r in rows]
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan
    return min(values) if objective.mode == "max" else max(values)


def resolve_reference(
    spec: ReferenceSpec,
    objectives: Sequence[Objective],
    rows: Sequence[NetworkRow],
    baseline: Baseline | None = None,
) -> Reference:
    """The point for ``rows`` scored together: the accuracy floor from ``spec`` and the
    baseline (default: the earliest net0 of ``rows``), 1x for reductions, the user's value or
    else the worst any network reached (the nadir) for every other objective."""
    check_reference_objectives(spec, objectives)
    baseline = baseline or baseline_of(earliest_net0(rows))
    point, loss, values = [], None, dict(spec.values)
    for objective in objectives:
        column = objective.column
        if column == "accuracy" and spec.accuracy is not None:
            point.append(spec.accuracy)
        elif column == "accuracy":
            loss = DEFAULT_LOSS_POINTS if spec.loss_points is None else spec.loss_points
            point.append(math.nan if baseline is None else baseline.accuracy - loss / 100.0)
        elif column in values:
            point.append(values[column])
        elif column in REDUCTION_COLUMNS:
            point.append(1.0)
        else:
            point.append(nadir(rows, objective))
    return Reference(tuple(objectives), tuple(point), baseline, loss)


def reference_from_params(params: Mapping[str, Any]) -> ReferenceSpec:
    """The spec's ``pareto.reference``, as the sweep run's flattened spec params carry it:
    params hold JSON for None, so an unset key reads ``null`` (the default reference), and
    an older sweep has no such param at all."""
    text = params.get(SPEC_KEY)
    return parse_reference(None if text in (None, "null") else text, SPEC_KEY)
