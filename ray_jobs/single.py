"""``adprune-sweep run``: one schedule in-process, with progress and a Table-I summary."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import click

from adprune_core.report import decision_line, epoch_line, rounds_table, summary_lines
from adprune_core.schedule import PruneSchedule, summarize
from adprune_core.spec import SpecError, load_spec, spec_to_dict


def check_output_path(output: str | None) -> None:
    """Fail before training, not after minutes of it, when the summary cannot be written."""
    if output is None:
        return
    parent = Path(output).resolve().parent
    if not parent.is_dir():
        raise SpecError(f"-o {output}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise SpecError(f"-o {output}: folder {parent} is not writable")


def run_single(spec_path: str, overrides: Sequence[str], output: str | None, quiet: bool) -> dict:
    spec = load_spec(spec_path, overrides)
    check_output_path(output)
    if spec.search:
        click.echo(
            f"note: run trains the spec's base values; its search over "
            f"{', '.join(spec.search)} is for `adprune-sweep launch`"
        )
    start = time.perf_counter()
    schedule = PruneSchedule(spec)
    data = schedule.data
    click.echo(
        f"{spec.name}: {spec.model.arch} on {spec.data.dataset} "
        f"({len(data.train_y)} train / {len(data.test_y)} test, {data.num_classes} classes) "
        f"on {schedule.device}"
    )

    def on_epoch(result, decision) -> None:
        if not quiet:
            click.echo(epoch_line(result))
        line = decision_line(result, decision, schedule.state)
        if line:
            click.echo(line)

    state = schedule.run(on_epoch)
    summary = summarize(state)
    click.echo("")
    click.echo(rounds_table(state))
    for line in summary_lines(summary):
        click.echo(line)
    elapsed = time.perf_counter() - start
    click.echo(f"wall time {elapsed:.1f}s")
    payload = {
        "spec": spec_to_dict(spec),
        "summary": summary.__dict__,
        "records": [r.__dict__ for r in state.records],
        "wall_time_s": elapsed,
    }
    if output:
        Path(output).write_text(json.dumps(payload, indent=2))
        click.echo(f"summary written to {output}")
    return payload
