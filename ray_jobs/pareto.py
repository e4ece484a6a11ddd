"""The accuracy vs OPS-reduction front over trained networks, exported with pyarrow.

Front rule: a network is on the front when no other network is at least as good on every
objective and strictly better on one. Networks with identical objective values do not
dominate each other, so ties and exact duplicates are all kept (all on, or all off, the
front). A network with a missing (NaN) objective is never on the front and dominates none.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from adprune_core.spec import SpecError
from ray_jobs.records import NetworkRow

OBJECTIVE_COLUMNS = (
    "accuracy",
    "mac_reduction",
    "param_reduction",
    "training_complexity",
    "params",
    "macs",
    "energy_j",
    "epochs",
)
DEFAULT_OBJECTIVES = "accuracy:max,mac_reduction:max"
UNITS = {
    "accuracy": "test accuracy (%)",
    "mac_reduction": "MAC (OPS) reduction vs net0 (x)",
    "param_reduction": "parameter reduction vs net0 (x)",
    "training_complexity": "training complexity (net0-epoch equivalents, Eq. 1)",
    "params": "parameters (count)",
    "macs": "MACs per image (count)",
    "energy_j": "energy per image (J)",
    "epochs": "epochs trained",
}


@dataclass(frozen=True)
class Objective:
    column: str
    sense: str  # "max" or "min"

    def __str__(self) -> str:
        return f"{self.column}:{self.sense}"


def parse_objectives(text: str) -> list[Objective]:
    objectives = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        column, _, sense = part.partition(":")
        sense = sense or "max"
        if column not in OBJECTIVE_COLUMNS:
            raise SpecError(
                f"--objectives {part}: unknown column {column!r}; "
                f"choose from {', '.join(OBJECTIVE_COLUMNS)}"
            )
        if sense not in ("max", "min"):
            raise SpecError(f"--objectives {part}: expected :max or :min after the column")
        objectives.append(Objective(column, sense))
    if not 2 <= len(objectives) <= len(OBJECTIVE_COLUMNS):
        raise SpecError("--objectives: give at least two, e.g. accuracy:max,mac_reduction:max")
    if len({o.column for o in objectives}) != len(objectives):
        raise SpecError("--objectives: a column is named twice")
    return objectives


def non_dominated(points: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Mask of rows of ``points`` (larger is better in every column) that nothing dominates."""
    points = np.asarray(points, dtype=float)
    valid = ~np.isnan(points).any(axis=1)
    on_front = valid.copy()
    candidates = points[valid]
    for start in range(0, len(points), chunk):
        block = points[start : start + chunk]
        # others[j] dominates block[i]: >= everywhere and > somewhere.
        ge = (candidates[None, :, :] >= block[:, None, :]).all(axis=2)
        gt = (candidates[None, :, :] > block[:, None, :]).any(axis=2)
        dominated = (ge & gt).any(axis=1)
        on_front[start : start + chunk] &= ~dominated
    return on_front


def objective_matrix(rows: Sequence[NetworkRow], objectives: Sequence[Objective]) -> np.ndarray:
    matrix = np.array(
        [[float(getattr(r, o.column)) for o in objectives] for r in rows], dtype=float
    ).reshape(len(rows), len(objectives))
    signs = np.array([1.0 if o.sense == "max" else -1.0 for o in objectives])
    return matrix * signs


def front_mask(rows: Sequence[NetworkRow], objectives: Sequence[Objective]) -> list[bool]:
    if not rows:
        return []
    return [bool(x) for x in non_dominated(objective_matrix(rows, objectives))]


def ordered(
    rows: Sequence[NetworkRow], mask: Sequence[bool], objectives: Sequence[Objective]
) -> list[tuple[NetworkRow, bool]]:
    """Front first, each part best-first by the objectives in order, then by run id."""

    def key(pair: tuple[NetworkRow, bool]) -> tuple:
        row, on_front = pair
        values = []
        for o in objectives:
            value = float(getattr(row, o.column))
            value = -math.inf if math.isnan(value) else value
            values.append(-value if o.sense == "max" else value)
        return (not on_front, *values, row.run_id)

    return sorted(zip(rows, mask), key=key)


# ---------------------------------------------------------------------------- arrow


def hyperparam_types(rows: Sequence[NetworkRow]) -> dict[str, Any]:
    import pyarrow as pa

    keys = sorted({k for r in rows for k in r.hyperparams})
    types = {}
    for key in keys:
        values = [r.hyperparams.get(key) for r in rows if r.hyperparams.get(key) is not None]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            types[key] = pa.int64()
        elif values and all(isinstance(v, int | float) for v in values):
            types[key] = pa.float64()
        else:
            types[key] = pa.string()
    return types


def arrow_schema(hyper: dict[str, Any], metadata: dict[str, str]) -> Any:
    import pyarrow as pa

    fields = [
        pa.field("experiment", pa.string()),
        pa.field("sweep", pa.string()),
        pa.field("sweep_id", pa.string()),
        pa.field("trial", pa.string()),
        pa.field("round", pa.int32()),
        pa.field("phase", pa.string()),
        pa.field("arch", pa.string()),
        pa.field("dataset", pa.string()),
        pa.field("widths", pa.list_(pa.int32())),
        pa.field("accuracy", pa.float64()),
        pa.field("params", pa.int64()),
        pa.field("macs", pa.int64()),
        pa.field("param_reduction", pa.float64()),
        pa.field("mac_reduction", pa.float64()),
        pa.field("energy_j", pa.float64()),
        pa.field("training_complexity", pa.float64()),
        pa.field("epochs", pa.int32()),
        *[pa.field(key, tp) for key, tp in hyper.items()],
        pa.field("run_id", pa.string()),
        pa.field("on_front", pa.bool_()),
    ]
    return pa.schema(fields, metadata={k: v for k, v in metadata.items()})


def front_table(
    rows: Sequence[NetworkRow], objectives: Sequence[Objective], source: dict[str, Any]
) -> Any:
    """One row per network, front first, typed; objectives and source in the schema metadata."""
    import pyarrow as pa

    mask = front_mask(rows, objectives)
    hyper = hyperparam_types(rows)
    metadata = {
        "adprune.objectives": ",".join(str(o) for o in objectives),
        "adprune.front_rule": "non-dominated; ties and duplicates all kept; NaN never on front",
        "adprune.order": "on_front first, then best-first by each objective in order",
        "adprune.source": json.dumps(source),
        "adprune.created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    schema = arrow_schema(hyper, metadata)
    records = []
    for row, on_front in ordered(rows, mask, objectives):
        record = {k: v for k, v in asdict(row).items() if k != "hyperparams"}
        record.update({key: row.hyperparams.get(key) for key in hyper})
        if hyper:
            for key, tp in hyper.items():
                if tp == pa.string() and record[key] is not None:
                    record[key] = str(record[key])
        record["on_front"] = on_front
        records.append(record)
    return pa.Table.from_pylist(records, schema=schema)


def write_parquet(table: Any, path: Path) -> Path:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def write_csv(table: Any, path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # CSV has no list type: widths become their JSON text, e.g. "[12, 16]".
    widths = pa.array([json.dumps(w) for w in table.column("widths").to_pylist()], pa.string())
    flat = table.set_column(table.schema.get_field_index("widths"), "widths", widths)
    path.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(flat, path)
    return path


# ---------------------------------------------------------------------------- plot


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
