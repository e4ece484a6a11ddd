"""Plain-text progress lines and tables shared by ``run`` and ``launch``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: compare and pareto format tables without loading torch
    from adprune_core.criteria import Decision
    from adprune_core.schedule import EpochResult, NetRecord, ScheduleState, ScheduleSummary


def short_widths(widths: Sequence[int], limit: int = 8) -> str:
    """``[64,64,…,512]``-style: the whole list when short, head and tail when long."""
    if len(widths) <= limit:
        return "[" + ",".join(map(str, widths)) + "]"
    head, tail = widths[: limit - 2], widths[-2:]
    return "[" + ",".join(map(str, head)) + ",…," + ",".join(map(str, tail)) + "]"


def epoch_line(result: EpochResult, prefix: str = "") -> str:
    phase = "final" if result.phase == "final" else f"net{result.round}"
    return (
        f"{prefix}{phase:<6} epoch {result.epoch:>3}  AD {result.ad_total:.4f}  "
        f"acc {100 * result.accuracy:5.1f}%  loss {result.loss:.4f}  "
        f"widths {short_widths(result.widths)}"
    )


def decision_line(result: EpochResult, decision: Decision, state: ScheduleState) -> str | None:
    """A line when a network ends, saying why and what comes next; ``None`` otherwise."""
    if decision.action == "continue":
        return None
    name = "final" if result.phase == "final" else f"net{result.round}"
    if decision.action == "next_round":
        return (
            f"  {name}: rho {decision.rho} after {result.epoch} epochs, profile "
            f"{decision.profile} -> net{result.round + 1} "
            f"{short_widths(decision.next_widths or [])}"
        )
    if result.phase == "final":
        return f"  final phase done after {result.epoch} epochs"
    chosen = state.chosen_round
    tail = "training the chosen widths from scratch" if decision.action == "final" else "done"
    return (
        f"  {name}: rho {decision.rho} after {result.epoch} epochs, profile {decision.profile}, "
        f"delta stops the search ({decision.reason}); "
        f"chosen net{chosen}, {tail}"
    )


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def record_row(record: NetRecord, chosen: int | None) -> list[str]:
    marker = "*" if record.phase == "search" and record.round == chosen else ""
    rho = str(record.epochs_to_rho) if record.epochs_to_rho is not None else f"({record.epochs})"
    return [
        record.label + marker,
        "[" + ", ".join(map(str, record.widths)) + "]",
        f"{100 * record.accuracy:.1f}%",
        f"{record.param_reduction:.1f}x",
        f"{record.mac_reduction:.1f}x",
        rho,
        record.profile,
        f"{record.training_complexity:.1f}",
    ]


RECORD_HEADERS = (
    "net",
    "configuration",
    "accuracy",
    "params red.",
    "MACs red.",
    "epochs to rho",
    "profile",
    "cum. complexity",
)


def rounds_table(state: ScheduleState) -> str:
    """The paper's Table I for one schedule; ``*`` marks the chosen net, ``(n)`` no rho."""
    rows = [record_row(r, state.chosen_round) for r in state.records]
    return format_table(RECORD_HEADERS, rows)


def summary_lines(summary: ScheduleSummary) -> list[str]:
    ratio = summary.training_complexity / summary.baseline_complexity
    return [
        f"chosen: net{summary.chosen_round} {short_widths(summary.widths, 20)}  "
        f"accuracy {100 * summary.accuracy:.1f}%  params {summary.param_reduction:.1f}x  "
        f"MACs {summary.mac_reduction:.1f}x  (search stopped: {summary.stop_reason})",
        f"training complexity (Eq. 1): {summary.training_complexity:.1f} "
        f"vs {summary.baseline_complexity:.1f} for net0 over the same epochs ({ratio:.2f}x)",
    ]
