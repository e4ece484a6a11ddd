"""Per-round resources: a trial's CPUs and GPU share for net[i], scaled by its MACs.

Each round trains a network with fewer MACs than the one before, so the share reserved for
net0 is mostly idle by the last rounds. ``resources.per_round`` gives each network
``max(min, ceil_to_step(r0 * MACs_i / MACs_0))``, never more than net0's ``r0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from adprune_core.errors import SpecError

SCALES = ("macs",)


@dataclass
class PerRoundSpec:
    scale: str = field(
        default="macs",
        metadata={"choices": SCALES, "help": "what net[i]'s share follows, relative to net0"},
    )
    min_cpu: float = field(
        default=1.0, metadata={"min_exclusive": 0.0, "help": "fewest CPUs a network gets"}
    )
    step_cpu: float = field(
        default=1.0, metadata={"min_exclusive": 0.0, "help": "CPUs are rounded up to this step"}
    )
    min_gpu: float = field(
        default=0.0, metadata={"min": 0.0, "help": "smallest GPU share a network gets"}
    )
    step_gpu: float = field(
        default=0.125,
        metadata={"min_exclusive": 0.0, "help": "GPU shares are rounded up to this step"},
    )


@dataclass(frozen=True)
class TrialResources:
    cpu: float
    gpu: float

    def as_tune(self) -> dict[str, float]:
        """The resource request Tune and Ray take (``{"cpu": ..., "gpu": ...}``)."""
        return {"cpu": self.cpu, "gpu": self.gpu}


def ceil_to_step(value: float, step: float) -> float:
    # The tolerance keeps 0.25 / 0.125 * 0.125 from rounding up a whole step on float noise.
    steps = math.ceil(value / step - 1e-9)
    return round(steps * step, 9)


def scaled_share(full: float, minimum: float, step: float, mac_ratio: float) -> float:
    if full <= 0:
        return 0.0
    return min(full, max(minimum, ceil_to_step(full * mac_ratio, step)))


def round_resources(
    cpu: float, gpu: float, per_round: PerRoundSpec | None, mac_ratio: float
) -> TrialResources:
    """The share of a network with ``mac_ratio = MACs_i / MACs_0``; net0's without per_round."""
    if per_round is None:
        return TrialResources(cpu, gpu)
    return TrialResources(
        scaled_share(cpu, per_round.min_cpu, per_round.step_cpu, mac_ratio),
        scaled_share(gpu, per_round.min_gpu, per_round.step_gpu, mac_ratio),
    )


def check_per_round(cpu: float, gpu: float, per_round: PerRoundSpec | None) -> None:
    """The minimums must fit in net0's share, which is the most any network asks for."""
    if per_round is None:
        return
    for kind, minimum, full in (("cpu", per_round.min_cpu, cpu), ("gpu", per_round.min_gpu, gpu)):
        if minimum > full:
            raise SpecError(
                f"resources.per_round.min_{kind}: {minimum:g} is more than "
                f"resources.{kind} {full:g} (net0's share, the most any network gets)"
            )


def threads_for(cpu: float) -> int:
    """Intra-op threads for a CPU share: one per whole CPU, at least one."""
    return max(1, math.floor(cpu + 1e-9))
