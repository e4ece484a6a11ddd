"""One definition each of what every room names the same way: a network's name, Eq. 1, the
latency figures' names, and the objective syntax (``COLUMN:max|min``).

Torch-free, so the MLflow side, the results side and the schedule all read them from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Phase = Literal["search", "final"]

# What a network's record holds: ms at batch 1 and at the eval batch, and net0's over this.
LATENCY_FIELDS = (
    "latency_ms_b1",
    "latency_ms_batch",
    "latency_reduction_b1",
    "latency_reduction_batch",
)


def net_name(phase: str, round_index: int | None) -> str:
    """``net2`` for a search network, ``final`` for the final-phase one."""
    return "final" if phase == "final" else f"net{round_index}"


def net_label(phase: str, round_index: int | None, sep: str = "") -> str:
    """``net2``, or ``final(net2)`` for the final phase of the chosen net2 (``sep`` between)."""
    return f"net{round_index}" if phase != "final" else f"final{sep}(net{round_index})"


def training_complexity(
    search: Sequence[tuple[int, float]], final: tuple[int, float] | None = None
) -> float:
    """Eq. 1: sum of epochs / MAC reduction over (epochs, mac_reduction) search rounds, plus
    the final phase's epochs / MAC reduction when there is one."""
    total = sum(epochs / reduction for epochs, reduction in search)
    if final is not None:
        total += final[0] / final[1]
    return total


@dataclass(frozen=True)
class Objective:
    """A column to maximise or minimise, written ``COLUMN:max`` or ``COLUMN:min``."""

    column: str
    mode: Literal["max", "min"]

    @property
    def sign(self) -> float:
        """+1 where larger is better, -1 where smaller is: ``sign * value`` is maximised."""
        return 1.0 if self.mode == "max" else -1.0

    def __str__(self) -> str:
        return f"{self.column}:{self.mode}"


def parse_objectives(
    texts: Sequence[str],
    allowed: Sequence[str],
    where: str,
    most: int | None = None,
    fewest: int = 1,
) -> list[Objective]:
    """``["accuracy:max", "mac_reduction"]`` as objectives (the mode defaults to max); a
    ValueError naming ``where`` and the bad entry."""
    if len(texts) < fewest or (most is not None and len(texts) > most):
        limit = f"{fewest} to {most}" if most is not None else f"at least {fewest}"
        raise ValueError(f"{where}: expected {limit} objectives, got {len(texts)}")
    objectives = []
    for i, text in enumerate(texts):
        column, _, mode = str(text).strip().partition(":")
        column, mode = column.strip(), mode.strip() or "max"
        if column not in allowed:
            raise ValueError(
                f"{where}[{i}]: {column!r} is not a recorded metric "
                f"(choose from {', '.join(allowed)})"
            )
        if mode not in ("max", "min"):
            raise ValueError(f"{where}[{i}]: mode {mode!r} is not max or min")
        objectives.append(Objective(column, mode))  # type: ignore[arg-type]
    if len({o.column for o in objectives}) != len(objectives):
        raise ValueError(f"{where}: a metric is named twice")
    return objectives


@dataclass(frozen=True)
class DataShape:
    """What a network needs from its data: classes, square input size and input channels.

    One value instead of three positional integers, whose order builders used to disagree on.
    """

    num_classes: int
    input_size: int
    in_channels: int

    def as_kwargs(self) -> dict[str, int]:
        return {
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "in_channels": self.in_channels,
        }

    @property
    def image(self) -> tuple[int, int, int]:
        """(channels, height, width) of one input image."""
        return (self.in_channels, self.input_size, self.input_size)
