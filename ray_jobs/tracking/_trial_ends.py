"""The order in which a sweep's trials ended: the sweep run's progress metrics after each
trial are scored over the trials ended by then, so they read the same however far the
writer's lanes have got.

The order is the store's (runs' end times). While one writer owns every run of the sweep,
it gave each trial run its end time itself and knows them all; otherwise (a resumed driver,
a write that failed) they are read from the store, one search over every trial run.
"""

from __future__ import annotations

from typing import Any

from ray_jobs.tracking.keys import KIND_TAG, PARENT_TAG, TRIAL_KIND, trial_key


class TrialEnds:
    """The end time (ms) this process gave each trial run it closed."""

    def __init__(self, sweep_id: str) -> None:
        self._prefix = trial_key(sweep_id, "")
        self._ended_at: dict[str, int] = {}

    def note_closed(self, key: str, ended_at: int | None) -> None:
        """A run closed with ``ended_at``; only trial runs (``sweep/trial``) count."""
        trial_id = key.removeprefix(self._prefix)
        if ended_at is not None and key.startswith(self._prefix) and "/" not in trial_id:
            self._ended_at[trial_id] = ended_at

    def known(self) -> dict[str, int]:
        return dict(self._ended_at)


def stored_end_times(client: Any, experiment_id: str, sweep_run_id: str) -> dict[str, int]:
    """End times of the sweep's ended trial runs, as the store has them."""
    where = f"tags.`{PARENT_TAG}` = '{sweep_run_id}' and tags.`{KIND_TAG}` = '{TRIAL_KIND}'"
    runs = client.search_runs(
        [experiment_id], f"{where} and attributes.status != 'RUNNING'", max_results=50_000
    )
    return {r.data.tags.get("trial_id", ""): r.info.end_time or 0 for r in runs}


def ended_through(ended_at: dict[str, int], trial_id: str) -> list[str]:
    """The trials of ``ended_at`` in the order they ended, up to ``trial_id`` (last; added
    when it is not closed in the store yet: what has ended is scored)."""
    order = [trial for _, trial in sorted((t, trial) for trial, t in ended_at.items())]
    if trial_id not in order:
        return [*order, trial_id]
    return order[: order.index(trial_id) + 1]
