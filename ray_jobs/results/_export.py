"""The front exported: a typed pyarrow table written as parquet (and CSV), the ``pareto``
command, and the front each sweep run gets when its sweep ends."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import click

from adprune_core.config import net_label
from adprune_core.schedule import format_table, short_widths
from ray_jobs.results._front import (
    DEFAULT_OBJECTIVES,
    Objective,
    front_mask,
    ordered,
    parse_objectives,
)
from ray_jobs.results._hypervolume import by_sweep, sweep_hypervolumes
from ray_jobs.results._loss import loss_heading, loss_table, reductions_at_loss
from ray_jobs.results._plots import plot_front
from ray_jobs.results._records import LATENCY_COLUMNS, NetworkRow, existing_store, load_networks
from ray_jobs.results._reference import (
    Baseline,
    Reference,
    ReferenceSpec,
    parse_losses,
    parse_reference,
    resolve_reference,
)
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
    rows: Sequence[NetworkRow],
    objectives: Sequence[Objective],
    source: dict[str, Any],
    reference: Reference | None = None,
) -> Any:
    """One row per network, front first, typed; objectives, the reference point and the
    source in the schema metadata."""
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
    if reference is not None:
        metadata["adprune.reference"] = json.dumps(
            {o.column: v for o, v in zip(reference.objectives, reference.point)}
        )
        metadata["adprune.reference_text"] = reference.describe()
    schema = arrow_schema(hyper, metadata)
    records = []
    for row, on_front in ordered(rows, mask, objectives):
        record = {k: v for k, v in asdict(row).items() if k not in ("hyperparams", "end_time")}
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


@dataclass(frozen=True)
class ParetoOptions:
    """``pareto``'s options, as given on the command line."""

    tracking_uri: str | None = None
    experiments: Sequence[str] = ()
    sweeps: Sequence[str] = ()
    output: str = "pareto.parquet"
    csv_path: str | None = None
    plot_path: str | None = None
    objectives: str = DEFAULT_OBJECTIVES
    reference: str | None = None
    losses: str | None = None


def export_pareto(options: ParetoOptions) -> None:
    """Write the front, and print it with the shared reference, each sweep's hypervolume and
    each sweep's reduction at the given losses."""
    objectives = parse_objectives(options.objectives)
    spec = parse_reference(options.reference)
    losses = parse_losses(options.losses)
    parquet_file = check_output(options.output, ".parquet", "-o")
    csv_file = check_output(options.csv_path, ".csv", "--csv") if options.csv_path else None
    png_file = check_output(options.plot_path, ".png", "--plot") if options.plot_path else None
    uri, client = existing_store(options.tracking_uri)
    networks = load_networks(client, options.experiments, options.sweeps)
    if not networks:
        raise TrackingError("no trained networks recorded in the selected experiments and sweeps")
    reference = resolve_reference(spec, objectives, networks)
    source = {
        "tracking_uri": uri,
        "experiments": list(options.experiments),
        "sweeps": list(options.sweeps),
    }
    table = front_table(networks, objectives, source, reference)
    written = [str(write_parquet(table, parquet_file))]
    if csv_file:
        written.append(str(write_csv(table, csv_file)))
    mask = front_mask(networks, objectives)
    if png_file:
        written.append(str(plot_front(networks, mask, objectives, png_file, reference)))
    front = [row for row, on in ordered(networks, mask, objectives) if on]
    click.echo(front_text(front, objectives))
    click.echo(scores_text(networks, objectives, reference, losses))
    sweep_count = len({(n.experiment, n.sweep_id) for n in networks})
    click.echo(
        f"{len(networks)} networks from {sweep_count} sweep(s), {len(front)} on the front "
        f"({', '.join(str(o) for o in objectives)}) -> {', '.join(written)}"
    )


def scores_text(
    networks: Sequence[NetworkRow],
    objectives: Sequence[Objective],
    reference: Reference,
    losses: Sequence[float],
) -> str:
    """The shared reference, each sweep's hypervolume against it, and its loss table."""
    groups = by_sweep(networks)
    shared = f"shared by {len(groups)} sweeps" if len(groups) > 1 else "of 1 sweep"
    lines = [f"hypervolume reference ({shared}): {reference.describe()}"]
    lines += [str(volume) for volume in sweep_hypervolumes(networks, objectives, reference)]
    for (sweep, sweep_id), members in groups.items():
        lines.append(loss_heading(sweep, sweep_id, members))
        lines.append(loss_table(reductions_at_loss(members, losses)))
    return "\n".join(lines)


def front_text(front: Sequence[Any], objectives: Sequence[Any]) -> str:
    headers = ["sweep", "trial", "net", "widths", "accuracy", "MACs red.", "params red.", "TC"]
    body = [
        [
            n.sweep,
            n.trial,
            net_label(n.phase, n.round),
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
    client: Any,
    experiment: str,
    sweep_id: str,
    tracking_uri: str,
    folder: Path,
    spec: ReferenceSpec | None = None,
    baseline: Baseline | None = None,
) -> SweepFront:
    """The sweep's networks on the default accuracy/MAC front: their count, the front's size,
    its best accuracy and MAC reduction, and the front as ``pareto/pareto.parquet`` and
    ``pareto/pareto.png`` (written under ``folder``). Its hypervolume is logged after every
    completed trial instead (:func:`~ray_jobs.results.trial_end_hypervolume`)."""
    networks = load_networks(client, [experiment], sweep_id=sweep_id)
    objectives = parse_objectives(DEFAULT_OBJECTIVES)
    reference = resolve_reference(spec or ReferenceSpec(), objectives, networks, baseline)
    mask = front_mask(networks, objectives)
    front = [n for n, on in zip(networks, mask) if on]
    metrics: dict[str, float] = {"networks": len(networks), "front_size": len(front)}
    if front:
        metrics["best_accuracy"] = max(n.accuracy for n in front)
        metrics["best_mac_reduction"] = max(n.mac_reduction for n in front)
    if not networks:
        return SweepFront(metrics, [])
    source = {"tracking_uri": tracking_uri, "experiments": [experiment], "sweeps": [sweep_id]}
    table = front_table(networks, objectives, source, reference)
    parquet = write_parquet(table, folder / "pareto.parquet")
    png = plot_front(networks, mask, objectives, folder / "pareto.png", reference)
    return SweepFront(metrics, [(parquet, "pareto"), (png, "pareto")])
