"""Plain-text progress lines and tables shared by ``run`` and ``launch``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from adprune_core.config import net_name

if TYPE_CHECKING:  # annotations only: compare and pareto format tables without loading torch
    from adprune_core.schedule.records import NetRecord
    from adprune_core.schedule.report import EpochReport
    from adprune_core.schedule.state import ScheduleState
    from adprune_core.schedule.summary import ScheduleSummary


def short_widths(widths: Sequence[int], limit: int = 8) -> str:
    """``[64,64,…,512]``-style: the whole list when short, head and tail when long."""
    if len(widths) <= limit:
        return "[" + ",".join(map(str, widths)) + "]"
    head, tail = widths[: limit - 2], widths[-2:]
    return "[" + ",".join(map(str, head)) + ",…," + ",".join(map(str, tail)) + "]"


def epoch_line(report: EpochReport, prefix: str = "") -> str:
    name = net_name(report.phase, report.round)
    return (
        f"{prefix}{name:<6} epoch {report.epoch:>3}  AD {report.ad_total:.4f}  "
        f"acc {100 * report.accuracy:5.1f}%  loss {report.loss:.4f}  "
        f"widths {short_widths(report.widths)}"
    )


def decision_line(report: EpochReport, state: ScheduleState) -> str | None:
    """A line when a network ends, saying why and what comes next; ``None`` otherwise.
    ``state`` is the schedule's after the step, with the network's record closed."""
    if not report.ends_network:
        return None
    name = net_name(report.phase, report.round)
    rho = state.records[-1].end_reason
    if report.decision == "next_round":
        following = net_name("search", report.round + 1)
        return (
            f"  {name}: rho {rho} after {report.epoch} epochs, profile "
            f"{report.profile} -> {following} {short_widths(state.widths)}"
        )
    if report.phase == "final":
        return f"  final phase done after {report.epoch} epochs"
    tail = "training the chosen widths from scratch" if report.decision == "final" else "done"
    return (
        f"  {name}: rho {rho} after {report.epoch} epochs, profile {report.profile}, "
        f"delta stops the search ({report.decision_reason}); "
        f"chosen {net_name('search', state.chosen_round)}, {tail}"
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
        f"chosen: {net_name('search', summary.chosen_round)} {short_widths(summary.widths, 20)}  "
        f"accuracy {100 * summary.accuracy:.1f}%  params {summary.param_reduction:.1f}x  "
        f"MACs {summary.mac_reduction:.1f}x  (search stopped: {summary.stop_reason})",
        f"training complexity (Eq. 1): {summary.training_complexity:.1f} "
        f"vs {summary.baseline_complexity:.1f} for net0 over the same epochs ({ratio:.2f}x)",
    ]
