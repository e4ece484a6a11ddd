"""One schedule in this process, with progress lines and the paper's Table I for it.

What ``adprune-sweep run`` does, and what a script calls to run a spec without Ray: the same
decisions as a sweep trial (:func:`adprune_core.schedule.decide`)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from adprune_core.config import ScheduleSpec, SpecError, load_spec, spec_to_dict
from adprune_core.schedule.preflight import check_plugins
from adprune_core.schedule.progress import decision_line, epoch_line, rounds_table, summary_lines
from adprune_core.schedule.prune_schedule import PruneSchedule
from adprune_core.schedule.report import EpochReport
from adprune_core.schedule.summary import summarize

Echo = Callable[[str], None]


def check_output_path(output: str | None) -> None:
    """Fail before training, not after minutes of it, when the summary cannot be written."""
    if output is None:
        return
    parent = Path(output).resolve().parent
    if not parent.is_dir():
        raise SpecError(f"-o {output}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise SpecError(f"-o {output}: folder {parent} is not writable")


def run_spec_file(
    spec_path: str,
    overrides: Sequence[str] = (),
    output: str | None = None,
    quiet: bool = False,
    echo: Echo = print,
    load: Callable[[str, Sequence[str]], ScheduleSpec] = load_spec,
) -> dict:
    """Load ``spec_path`` (with ``KEY=VALUE`` overrides) with ``load``, run it, and write the
    JSON summary to ``output`` if given."""
    spec = load(spec_path, overrides)
    check_output_path(output)
    payload = run_schedule(spec, quiet, echo)
    if output:
        Path(output).write_text(json.dumps(payload, indent=2))
        echo(f"summary written to {output}")
    return payload


def run_schedule(spec: ScheduleSpec, quiet: bool = False, echo: Echo = print) -> dict:
    """Run ``spec``'s whole schedule; the spec, the summary and a record per network."""
    start = time.perf_counter()
    schedule = PruneSchedule(spec, check_plugins(spec))
    data = schedule.data
    echo(
        f"{spec.name}: {spec.model.arch} on {spec.data.dataset} "
        f"({len(data.train_y)} train / {len(data.test_y)} test, {data.num_classes} classes) "
        f"on {schedule.device}"
    )

    def on_report(report: EpochReport) -> None:
        if not quiet:
            echo(epoch_line(report))
        line = decision_line(report, schedule.state)
        if line:
            echo(line)

    state = schedule.run(on_report)
    summary = summarize(state)
    echo("")
    echo(rounds_table(state))
    for line in summary_lines(summary):
        echo(line)
    elapsed = time.perf_counter() - start
    echo(f"wall time {elapsed:.1f}s")
    return {
        "spec": spec_to_dict(spec),
        "summary": summary.__dict__,
        "records": [r.__dict__ for r in state.records],
        "wall_time_s": elapsed,
    }
