"""Per-round resources: a trial's CPUs and GPU share for net[i], scaled by its MACs.

Each round trains a network with fewer MACs than the one before, so the share reserved for
net0 is mostly idle by the last rounds. ``resources.per_round`` gives each network
``max(min, ceil_to_step(r0 * MACs_i / MACs_0))``, never more than net0's ``r0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ray_jobs.sweep._spec import PerRoundSpec


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


def threads_for(cpu: float) -> int:
    """Intra-op threads for a CPU share: one per whole CPU, at least one."""
    return max(1, math.floor(cpu + 1e-9))
