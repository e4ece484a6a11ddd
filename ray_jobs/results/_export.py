"""The front exported: a typed pyarrow table written as parquet (and CSV), the ``pareto``
command, and the front each sweep run gets when its sweep ends."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import click

from adprune_core.schedule import format_table, short_widths
from ray_jobs.results._front import (
    DEFAULT_OBJECTIVES,
    Objective,
    front_mask,
    ordered,
    parse_objectives,
)
from ray_jobs.results._hypervolume import sweep_hypervolumes
from ray_jobs.results._plots import plot_front
from ray_jobs.results._records import LATENCY_COLUMNS, NetworkRow, existing_store, load_networks
from ray_jobs.tracking.store import TrackingError


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
        *[pa.field(key, pa.float64()) for key in LATENCY_COLUMNS],
        *[pa.field(key, tp) for key, tp in hyper.items()],
        pa.field("run_id", pa.string()),
        pa.field("model_uri", pa.string()),  # null where no model was logged
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


def check_output(path: str, suffix: str, option: str) -> Path:
    target = Path(path).expanduser()
    if target.suffix.lower() != suffix:
        raise TrackingError(f"{option} {path}: expected a {suffix} file name")
    parent = target.resolve().parent
    if not parent.is_dir():
        raise TrackingError(f"{option} {path}: folder {parent} does not exist")
    return target


def export_pareto(
    option: str | None,
    experiments: Sequence[str],
    sweeps: Sequence[str],
    output: str,
    csv_path: str | None,
    plot_path: str | None,
    objectives_text: str,
) -> None:
    objectives = parse_objectives(objectives_text)
    parquet_file = check_output(output, ".parquet", "-o")
    csv_file = check_output(csv_path, ".csv", "--csv") if csv_path else None
    png_file = check_output(plot_path, ".png", "--plot") if plot_path else None
    uri, client = existing_store(option)
    networks = load_networks(client, experiments, sweeps)
    if not networks:
        raise TrackingError("no trained networks recorded in the selected experiments and sweeps")
    source = {"tracking_uri": uri, "experiments": list(experiments), "sweeps": list(sweeps)}
    table = front_table(networks, objectives, source)
    write_parquet(table, parquet_file)
    written = [str(parquet_file)]
    if csv_file:
        written.append(str(write_csv(table, csv_file)))
    mask = front_mask(networks, objectives)
    if png_file:
        written.append(str(plot_front(networks, mask, objectives, png_file)))
    front = [row for row, on in ordered(networks, mask, objectives) if on]
    sweep_count = len({(n.experiment, n.sweep_id) for n in networks})
    click.echo(front_text(front, objectives))
    for volume in sweep_hypervolumes(networks, objectives):
        click.echo(f"{volume}")
    click.echo(
        f"{len(networks)} networks from {sweep_count} sweep(s), {len(front)} on the front "
        f"({', '.join(str(o) for o in objectives)}) -> {', '.join(written)}"
    )


def front_text(front: Sequence[Any], objectives: Sequence[Any]) -> str:
    headers = ["sweep", "trial", "net", "widths", "accuracy", "MACs red.", "params red.", "TC"]
    body = [
        [
            n.sweep,
            n.trial,
            f"net{n.round}" if n.phase == "search" else f"final(net{n.round})",
            short_widths(n.widths, 10),
            f"{100 * n.accuracy:.1f}%",
            f"{n.mac_reduction:.2f}x",
            f"{n.param_reduction:.2f}x",
            f"{n.training_complexity:.1f}",
        ]
        for n in front
    ]
    return format_table(headers, body)


class SweepFront(NamedTuple):
    """What a sweep run gets at the end: metrics, and (file, artifact folder) pairs."""

    metrics: dict[str, float]
    files: list[tuple[Path, str]]


def sweep_front(
    client: Any, experiment: str, sweep_id: str, tracking_uri: str, folder: Path
) -> SweepFront:
    """The sweep's networks on the default accuracy/MAC front: their count, the front's size,
    its best accuracy and MAC reduction, and the front as ``pareto/pareto.parquet`` and
    ``pareto/pareto.png`` (written under ``folder``). Its hypervolume is logged after every
    completed trial instead (:func:`~ray_jobs.results.trial_end_hypervolume`)."""
    networks = load_networks(client, [experiment], sweep_id=sweep_id)
    objectives = parse_objectives(DEFAULT_OBJECTIVES)
    mask = front_mask(networks, objectives)
    front = [n for n, on in zip(networks, mask) if on]
    metrics: dict[str, float] = {"networks": len(networks), "front_size": len(front)}
    if front:
        metrics["best_accuracy"] = max(n.accuracy for n in front)
        metrics["best_mac_reduction"] = max(n.mac_reduction for n in front)
    if not networks:
        return SweepFront(metrics, [])
    source = {"tracking_uri": tracking_uri, "experiments": [experiment], "sweeps": [sweep_id]}
    parquet = write_parquet(front_table(networks, objectives, source), folder / "pareto.parquet")
    png = plot_front(networks, mask, objectives, folder / "pareto.png")
    return SweepFront(metrics, [(parquet, "pareto"), (png, "pareto")])
