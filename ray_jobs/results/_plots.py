"""The front as a figure: every network a point (a marker per sweep), the front a step line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ray_jobs.results._front import UNITS, Objective
from ray_jobs.results._records import NetworkRow


def axis_value(row: NetworkRow, column: str) -> float:
    value = float(getattr(row, column))
    return 100.0 * value if column == "accuracy" else value


def plot_front(
    rows: Sequence[NetworkRow], mask: Sequence[bool], objectives: Sequence[Objective], path: Path
) -> Path:
    """Every network as a point (a marker per sweep), the front as a step line, labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
            where="pre" if x_obj.sense == "max" else "post",
            color="black",
            linewidth=1.5,
            label="Pareto front",
        )
        ax.scatter(xs, ys, facecolors="none", edgecolors="black", s=90, zorder=3)
        for row, x, y in zip(front, xs, ys):
            name = f"net{row.round}" if row.phase == "search" else f"final(net{row.round})"
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(UNITS[x_obj.column] + f" [{x_obj.sense}]")
    ax.set_ylabel(UNITS[y_obj.column] + f" [{y_obj.sense}]")
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
