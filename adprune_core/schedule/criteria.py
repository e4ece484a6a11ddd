"""The method's decisions as pure functions over lists of floats: rho, delta and the width rule.

:func:`decide` is the single decision function. The in-process runner and the Tune scheduler
both call it with the same inputs, so a sweep and a single run make the same choices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from adprune_core.config import PruneSpec, RhoSpec

Profile = Literal["decreasing", "flat", "increasing"]
Action = Literal["continue", "next_round", "final", "stop"]
Phase = Literal["search", "final"]

PROFILES: tuple[Profile, ...] = ("decreasing", "flat", "increasing")


@dataclass(frozen=True)
class Decision:
    """What happens after an epoch. ``chosen_round`` is set when the search has ended."""

    action: Action
    reason: str
    profile: Profile | None = None
    next_widths: list[int] | None = None
    chosen_round: int | None = None
    rho: str | None = None  # why the round ended: "saturated" or "max_epochs"


def rho_reached(ad_history: Sequence[float], rho: RhoSpec) -> str | None:
    """``"saturated"``, ``"max_epochs"`` or ``None`` (keep training) for one round's AD curve."""
    epochs = len(ad_history)
    if epochs >= rho.max_epochs:
        return "max_epochs"
    if epochs < max(rho.min_epochs, rho.patience + 1):
        return None
    recent = ad_history[-(rho.patience + 1) :]
    deltas = [abs(b - a) for a, b in zip(recent, recent[1:])]
    return "saturated" if all(d < rho.threshold for d in deltas) else None


def least_squares_slope(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
    den = sum((x - mean_x) ** 2 for x in range(n))
    return num / den


def classify_profile(ad_history: Sequence[float], flat_band: float) -> Profile:
    """The paper's convex / flat / concave, judged by the least-squares slope per epoch."""
    slope = least_squares_slope(ad_history)
    if slope > flat_band:
        return "increasing"
    if slope < -flat_band:
        return "decreasing"
    return "flat"


def round_half_up(x: float) -> int:
    # Python's round() is banker's rounding; 12.5 filters should become 13, not 12.
    return math.floor(x + 0.5)


def next_widths(widths: Sequence[int], densities: Sequence[float], min_width: int) -> list[int]:
    """The width rule: ``w' = clamp(round(AD_L * w_L), min_width, w_L)``; never grows."""
    if len(widths) != len(densities):
        raise ValueError(f"{len(widths)} widths but {len(densities)} layer densities")
    return [min(max(round_half_up(d * w), min_width), w) for w, d in zip(widths, densities)]


def search_decision(
    round_index: int,
    widths: Sequence[int],
    ad_history: Sequence[float],
    layer_ad: Sequence[float],
    prune: PruneSpec,
    final_epochs: int,
) -> Decision:
    """Decision for one search-round epoch: rho ends the round, then delta ends the search."""
    rho = rho_reached(ad_history, prune.rho)
    if rho is None:
        return Decision("continue", "training")
    profile = classify_profile(ad_history, prune.delta.flat_band)
    after_search: Action = "final" if final_epochs > 0 else "stop"
    if profile == "increasing":
        # The paper keeps the last network whose AD curve did not turn upward.
        return Decision(after_search, "increasing", profile, None, max(round_index - 1, 0), rho)
    proposed = next_widths(widths, layer_ad, prune.min_width)
    if round_index + 1 >= prune.max_rounds:
        return Decision(after_search, "max_rounds", profile, None, round_index, rho)
    if proposed == list(widths):
        return Decision(after_search, "no_width_change", profile, None, round_index, rho)
    return Decision("next_round", rho, profile, proposed, None, rho)


def decide(
    phase: Phase,
    round_index: int,
    widths: Sequence[int],
    ad_history: Sequence[float],
    layer_ad: Sequence[float],
    prune: PruneSpec,
    final_epochs: int,
) -> Decision:
    """The single decision function for the runner and the scheduler alike.

    ``ad_history`` is the total AD of every epoch of the current round or final phase so far,
    ``layer_ad`` the per-layer densities of its latest epoch.
    """
    if phase == "final":
        if len(ad_history) >= final_epochs:
            return Decision(
                "stop", "final_done", classify_profile(ad_history, prune.delta.flat_band)
            )
        return Decision("continue", "final")
    return search_decision(round_index, widths, ad_history, layer_ad, prune, final_epochs)
