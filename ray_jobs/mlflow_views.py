"""``ui``, ``compare`` and ``pareto``: reading sweeps back out of the MLflow store."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from adprune_core.report import format_table, short_widths
from ray_jobs.records import TrialRow, load_networks, load_trials
from ray_jobs.tracking import (
    TrackingError,
    artifact_root,
    check_store,
    is_server,
    resolve_tracking_uri,
    sqlite_path,
)


def existing_store(option: str | None) -> tuple[str, Any]:
    """The URI and a client, for a store that already holds sweeps (no empty one is made)."""
    uri = resolve_tracking_uri(option)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise TrackingError(
            f"no MLflow store at {db}; run a sweep first (adprune-sweep launch SPEC.yaml) "
            "or pass --tracking-uri"
        )
    return uri, check_store(uri)


# ---------------------------------------------------------------------------- ui


def port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def serve_ui(option: str | None, host: str, port: int) -> int:
    uri = resolve_tracking_uri(option)
    if is_server(uri):
        raise TrackingError(
            f"--tracking-uri {uri}: that store is an MLflow server with its own UI; "
            "open it in a browser"
        )
    existing_store(option)
    if not port_free(host, port):
        raise TrackingError(f"--port {port}: already in use on {host}; choose another --port")
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    artifacts = artifact_root(uri)
    if artifacts:
        command += ["--artifacts-destination", artifacts]
    click.echo(f"MLflow UI for {uri} at http://{host}:{port} (Ctrl-C to stop)")
    # The server's job runner (a pool of huey workers) serves GenAI features the sweep store
    # does not use; on a laptop it would cost more CPU than the UI itself.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0


# ---------------------------------------------------------------------------- compare

FIXED_SORT_KEYS = (
    "sweep",
    "trial",
    "status",
    "rounds",
    "accuracy",
    "mac_reduction",
    "param_reduction",
    "training_complexity",
)


def hyper_keys(rows: Sequence[TrialRow]) -> list[str]:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row.hyperparams if k not in keys)
    return keys


def sort_column(sort_by: str, keys: Sequence[str]) -> str:
    if sort_by in FIXED_SORT_KEYS or sort_by in keys:
        return sort_by
    matches = [k for k in keys if k.split(".")[-1] == sort_by]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join([*FIXED_SORT_KEYS, *keys])
    raise TrackingError(f"--sort-by {sort_by}: no such column; choose from {known}")


def sort_value(row: TrialRow, column: str) -> tuple[int, Any]:
    value = row.hyperparams.get(column) if column not in FIXED_SORT_KEYS else getattr(row, column)
    # Missing values (unfinished trials) sort last either way; numbers before text.
    if value is None:
        return (2, 0)
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value))


def sorted_trials(rows: list[TrialRow], column: str, desc: bool) -> list[TrialRow]:
    present = [r for r in rows if sort_value(r, column)[0] != 2]
    missing = [r for r in rows if sort_value(r, column)[0] == 2]
    base = sorted(present, key=lambda r: (r.sweep, r.trial))
    return sorted(base, key=lambda r: sort_value(r, column), reverse=desc) + missing


def trial_record(row: TrialRow, keys: Sequence[str]) -> dict[str, Any]:
    record: dict[str, Any] = {"experiment": row.experiment, "sweep": row.sweep, "trial": row.trial}
    record.update({key: row.hyperparams.get(key) for key in keys})
    record.update(
        status=row.status,
        rounds=row.rounds,
        final_widths=row.final_widths,
        accuracy=row.accuracy,
        mac_reduction=row.mac_reduction,
        param_reduction=row.param_reduction,
        training_complexity=row.training_complexity,
        delta_reason=row.delta_reason,
        run_id=row.run_id,
    )
    return record


def fmt_number(value: Any, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def table_text(rows: Sequence[TrialRow], keys: Sequence[str]) -> str:
    headers = [
        "sweep",
        "trial",
        *[k.split(".")[-1] for k in keys],
        "status",
        "rounds",
        "final widths",
        "accuracy",
        "MACs red.",
        "train. complexity",
        "stop",
    ]
    body = [
        [
            row.sweep,
            row.trial,
            *[
                fmt_number(row.hyperparams.get(k), "{:g}")
                if isinstance(row.hyperparams.get(k), int | float)
                else str(row.hyperparams.get(k, "-"))
                for k in keys
            ],
            row.status,
            fmt_number(row.rounds, "{}"),
            short_widths(row.final_widths, 12) if row.final_widths else "-",
            fmt_number(None if row.accuracy is None else 100 * row.accuracy, "{:.1f}%"),
            fmt_number(row.mac_reduction, "{:.1f}x"),
            fmt_number(row.training_complexity, "{:.1f}"),
            row.delta_reason or "-",
        ]
        for row in rows
    ]
    return format_table(headers, body)


def compare_trials(
    option: str | None,
    experiments: Sequence[str],
    sweeps: Sequence[str],
    sort_by: str,
    desc: bool,
    fmt: str,
) -> str:
    _, client = existing_store(option)
    rows = load_trials(client, experiments, sweeps)
    keys = hyper_keys(rows)
    rows = sorted_trials(rows, sort_column(sort_by, keys), desc)
    if fmt == "json":
        return json.dumps([trial_record(r, keys) for r in rows], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        records = [trial_record(r, keys) for r in rows]
        fields = list(records[0]) if records else ["experiment", "sweep", "trial"]
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        for record in records:
            record["final_widths"] = json.dumps(record["final_widths"])
            writer.writerow(record)
        return out.getvalue().rstrip("\n")
    if not rows:
        return "no trials recorded in the selected experiments and sweeps"
    return table_text(rows, keys) + f"\n{len(rows)} trials"


# ---------------------------------------------------------------------------- pareto


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
    from ray_jobs.pareto import (
        front_mask,
        front_table,
        ordered,
        parse_objectives,
        plot_front,
        write_csv,
        write_parquet,
    )

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
