"""The front as a figure: every network a point (a marker per sweep), the front a step line,
the accuracy floor of the hypervolume's reference as a dashed line, and reductions, which span
1x to 70x and more, on a log axis (on a linear one the quickstart's front sat squeezed against
the left edge)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray_jobs.results._front import UNITS, Objective
from ray_jobs.results._loss import net_label
from ray_jobs.results._records import NetworkRow
from ray_jobs.results._reference import REDUCTION_COLUMNS, Reference

LOG_COLUMNS = (*REDUCTION_COLUMNS, "macs", "params", "energy_j")


def axis_value(row: NetworkRow, column: str) -> float:
    value = float(getattr(row, column))
    return 100.0 * value if column == "accuracy" else value


def use_log_axis(rows: Sequence[NetworkRow], column: str) -> bool:
    values = [axis_value(r, column) for r in rows]
    return column in LOG_COLUMNS and all(v > 0 for v in values if v == v)


def point_labels(
    front: Sequence[NetworkRow], xs: Sequence[float], ys: Sequence[float]
) -> dict[tuple[float, float], str]:
    """One label per drawn point; networks at the same point (trials that trained the same
    widths to the same accuracy) share it instead of printing over each other."""
    names: dict[tuple[float, float], list[str]] = {}
    for row, x, y in zip(front, xs, ys):
        names.setdefault((x, y), []).append(f"{row.trial} {net_label(row)}")
    return {point: "\n".join(sorted(labels)) for point, labels in names.items()}


def draw_floor(ax: Any, reference: Reference, y_obj: Objective, x_obj: Objective) -> None:
    """The accuracy floor, on whichever axis accuracy is."""
    columns = [o.column for o in reference.objectives]
    if "accuracy" not in columns or "accuracy" not in (y_obj.column, x_obj.column):
        return
    floor = reference.value("accuracy")
    if floor != floor:  # NaN: no net0 to hang it from
        return
    how = f"net0 - {reference.loss_points:g} pts" if reference.loss_points is not None else "given"
    label = f"accuracy floor {100 * floor:.2f}% ({how})"
    line = ax.axhline if y_obj.column == "accuracy" else ax.axvline
    line(100 * floor, color="tab:red", linestyle="--", linewidth=1.2, label=label)


def plot_front(
    rows: Sequence[NetworkRow],
    mask: Sequence[bool],
    objectives: Sequence[Objective],
    path: Path,
    reference: Reference | None = None,
) -> Path:
    """Every network as a point (a marker per sweep), the front as a step line with each point
    labelled by its trial and net, and the reference's accuracy floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    y_obj, x_obj = objectives[0], objectives[1]
    markers = "osD^v<>pP*Xh"
    sweeps = sorted({(r.experiment, r.sweep) for r in rows})
    fig, ax = plt.subplots(figsize=(8, 5.5), constrained_layout=True)
    for index, sweep in enumerate(sweeps):
        members = [r for r in rows if (r.experiment, r.sweep) == sweep]
        ax.scatter(
            [axis_value(r, x_obj.column) for r in members],
            [axis_value(r, y_obj.column) for r in members],
            marker=markers[index % len(markers)],
            alpha=0.55,
            label=f"{sweep[1]} ({sweep[0]})",
        )
    front = sorted(
        (r for r, on in zip(rows, mask) if on), key=lambda r: axis_value(r, x_obj.column)
    )
    if front:
        xs = [axis_value(r, x_obj.column) for r in front]
        ys = [axis_value(r, y_obj.column) for r in front]
        ax.step(
            xs,
            ys,
            where="pre" if x_obj.mode == "max" else "post",
            color="black",
            linewidth=1.5,
            label="Pareto front",
        )
        ax.scatter(xs, ys, facecolors="none", edgecolors="black", s=90, zorder=3)
        for (x, y), name in point_labels(front, xs, ys).items():
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if reference is not None:
        draw_floor(ax, reference, y_obj, x_obj)
    if use_log_axis(rows, x_obj.column):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    if use_log_axis(rows, y_obj.column):
        ax.set_yscale("log")
    ax.set_xlabel(UNITS[x_obj.column] + f" [{x_obj.mode}]")
    ax.set_ylabel(UNITS[y_obj.column] + f" [{y_obj.mode}]")
    title = f"{len(rows)} networks, {len(front)} on the front"
    if len(objectives) > 2:
        title += f" (front under {', '.join(str(o) for o in objectives)})"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
