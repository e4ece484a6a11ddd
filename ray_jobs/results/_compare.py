"""``compare``: one row per trial, with the swept values, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from adprune_core.schedule import format_table, short_widths
from ray_jobs.results._records import TrialRow, existing_store, load_networks, load_trials
from ray_jobs.results._reference import parse_reference
from ray_jobs.results._sweep_rows import shared_reference, sweep_records, sweeps_text
from ray_jobs.tracking.store import TrackingError

# A trial that ended without a chosen network (an error, divergence) has no figures: its
# metrics are unset in MLflow, and the table shows this rather than zeros.
NO_VALUE = "–"

FIXED_SORT_KEYS = (
    "sweep",
    "trial",
    "status",
    "rounds",
    "accuracy",
    "mac_reduction",
    "param_reduction",
    "training_complexity",
    "latency_ms_b1",
    "shared_epochs",
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
        latency_ms_b1=row.latency_ms_b1,
        shared_epochs=row.shared_epochs,
        delta_reason=row.delta_reason,
        run_id=row.run_id,
    )
    return record


def fmt_number(value: Any, pattern: str) -> str:
    return NO_VALUE if value is None else pattern.format(value)


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
        "latency b1",
        "stop",
        "shared ep.",
    ]
    body = [
        [
            row.sweep,
            row.trial,
            *[
                fmt_number(row.hyperparams.get(k), "{:g}")
                if isinstance(row.hyperparams.get(k), int | float)
                else str(row.hyperparams.get(k, NO_VALUE))
                for k in keys
            ],
            row.status,
            fmt_number(row.rounds, "{}"),
            short_widths(row.final_widths, 12) if row.final_widths else NO_VALUE,
            fmt_number(None if row.accuracy is None else 100 * row.accuracy, "{:.1f}%"),
            fmt_number(row.mac_reduction, "{:.1f}x"),
            fmt_number(row.training_complexity, "{:.1f}"),
            fmt_number(row.latency_ms_b1, "{:.2f} ms"),
            row.delta_reason or NO_VALUE,
            fmt_number(row.shared_epochs, "{}"),
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
    by: str = "trial",
    reference: str | None = None,
) -> str:
    """One row per trial (``by="trial"``; the table also gets one row per sweep below), or
    one row per sweep (``by="sweep"``)."""
    spec = parse_reference(reference)
    _, client = existing_store(option)
    rows = load_trials(client, experiments, sweeps)
    if by == "sweep":
        return compare_sweeps(client, experiments, sweeps, rows, spec, fmt)
    keys = hyper_keys(rows)
    rows = sorted_trials(rows, sort_column(sort_by, keys), desc)
    if fmt == "json":
        return json.dumps([trial_record(r, keys) for r in rows], indent=2)
    if fmt == "csv":
        return csv_text([trial_record(r, keys) for r in rows])
    if not rows:
        return "no trials recorded in the selected experiments and sweeps"
    text = table_text(rows, keys) + f"\n{len(rows)} trials"
    networks = load_networks(client, experiments, sweeps)
    if networks:
        reference = shared_reference(networks, spec)
        text += "\n\n" + sweeps_text(sweep_records(networks, rows, reference), reference)
    return text


def csv_text(records: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    fields = list(records[0]) if records else ["experiment", "sweep", "trial"]
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for record in records:
        if "final_widths" in record:
            record["final_widths"] = json.dumps(record["final_widths"])
        writer.writerow(record)
    return out.getvalue().rstrip("\n")


def compare_sweeps(
    client: Any,
    experiments: Sequence[str],
    sweeps: Sequence[str],
    trials: Sequence[TrialRow],
    spec: Any,
    fmt: str,
) -> str:
    networks = load_networks(client, experiments, sweeps)
    if not networks:
        return "no trained networks recorded in the selected experiments and sweeps"
    reference = shared_reference(networks, spec)
    records = sweep_records(networks, trials, reference)
    if fmt == "json":
        return json.dumps(records, indent=2)
    if fmt == "csv":
        return csv_text(records)
    return sweeps_text(records, reference)
