"""The spec's ``pareto.reference``: the point the sweep run's hypervolume is scored against,
in the syntax of ``pareto --reference`` (e.g. ``accuracy=net0-5``, ``accuracy=0.93``).

The sweep spec keeps it as a string (``ray_jobs.sweep.SweepSpec.pareto``); it is parsed here,
on the reading side that owns the syntax, with a one-line error naming the key.
"""

from __future__ import annotations

from typing import Any

from ray_jobs.results._front import DEFAULT_OBJECTIVES, parse_objectives
from ray_jobs.results._reference import (
    SPEC_KEY,
    ReferenceSpec,
    check_reference_objectives,
    parse_reference,
)


def spec_reference(spec: Any) -> ReferenceSpec | None:
    """The reference a sweep spec's ``pareto.reference`` sets; None when it sets none."""
    text = spec.pareto.reference
    if text is None:
        return None
    reference = parse_reference(text, SPEC_KEY)
    check_reference_objectives(reference, parse_objectives(DEFAULT_OBJECTIVES), SPEC_KEY)
    return reference
