"""Where a schedule is, as plain data, and the pure function that moves it on a decision.

:class:`RoundHistory` is what the current network has measured, epoch by epoch; it starts
empty with every network. :class:`ScheduleState` is what spans rounds: the widths, the phase,
the closed records and, once the search ends, its outcome. Both are JSON-serialisable, so a
checkpoint holds them as they are. Torch-free: the Tune scheduler may reuse them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from adprune_core.schedule.criteria import Decision
from adprune_core.schedule.records import NetRecord


@dataclass
class RoundHistory:
    """One network's curves so far: total and per-layer AD, accuracy and loss per epoch."""

    ad: list[float] = field(default_factory=list)
    layer_ad: list[list[float]] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    # Per-channel densities of the latest epoch only: what the record keeps of them.
    last_channel_ad: list[list[float]] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.ad)

    def append(
        self,
        ad_total: float,
        layer_ad: list[float],
        channel_ad: list[list[float]],
        accuracy: float,
        loss: float,
    ) -> None:
        self.ad.append(ad_total)
        self.layer_ad.append(layer_ad)
        self.last_channel_ad = channel_ad
        self.accuracy.append(accuracy)
        self.loss.append(loss)


@dataclass
class ScheduleState:
    """Where a schedule is; enough, with the network's checkpoint, to resume mid-round."""

    net0_widths: list[int]
    widths: list[int]
    phase: str = "search"  # search | final | done
    round: int = 0
    history: RoundHistory = field(default_factory=RoundHistory)
    records: list[NetRecord] = field(default_factory=list)
    stop_reason: str | None = None
    chosen_round: int | None = None

    @property
    def epoch(self) -> int:
        return self.history.epochs

    @property
    def done(self) -> bool:
        return self.phase == "done"

    @property
    def decision_phase(self) -> str:
        """The phase :func:`~adprune_core.schedule.criteria.decide` is asked about."""
        return "final" if self.phase == "final" else "search"

    @property
    def record_round(self) -> int:
        """The round the current network's record carries: the chosen one in the final phase."""
        return self.round if self.phase == "search" else int(self.chosen_round or 0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScheduleState:
        records = [NetRecord(**r) for r in data.get("records", [])]
        history = RoundHistory(**data.get("history", {}))
        return cls(**{**data, "records": records, "history": history})


def transition(state: ScheduleState, decision: Decision) -> ScheduleState:
    """The state after ``decision``, with the closed network's record already in
    ``state.records``: the next network's widths and phase, or done. Pure: ``state`` is
    left as it was."""
    if decision.action == "continue":
        return state
    moved = dataclasses.replace(state, history=RoundHistory(), records=list(state.records))
    if decision.action == "next_round":
        if decision.next_widths is None:
            raise ValueError("a next_round decision needs next_widths")
        moved.round = state.round + 1
        moved.widths = list(decision.next_widths)
        return moved
    if state.phase == "search":
        moved.stop_reason = decision.reason
        moved.chosen_round = decision.chosen_round
    if decision.action == "final":
        moved.phase = "final"
        chosen = [r for r in state.records if r.phase == "search"][int(moved.chosen_round or 0)]
        moved.widths = list(chosen.widths)
    else:
        moved.phase = "done"
    return moved


def round_seed(base_seed: int, phase: str, round_index: int) -> int:
    # Distinct, reproducible streams per network; the final phase gets its own.
    return base_seed * 1009 + round_index * 2 + (1 if phase == "final" else 0)
