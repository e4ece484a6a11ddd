"""A shared view of a sweep for the MLflow UI's runs page: the sweep's trial runs, its swept keys
and results as columns, and a scatter of accuracy against MAC reduction.

It is the UI's own "share view" feature: the view state is an experiment tag
``mlflow.sharedViewState.<key>``, and ``?viewStateShareKey=<key>`` on the runs page loads it.
"""

from __future__ import annotations

import json
from typing import Any

from ray_jobs.tracking.keys import KIND_TAG, SWEEP_KIND, TRIAL_KIND

SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
RESULT_METRICS = ("accuracy", "mac_reduction", "training_complexity")
# What sweeps compare by: the hypervolume against the experiment's shared reference, the
# MAC reduction at 1 point of loss, and the reference's accuracy. Few on purpose: the runs
# table orders metric columns by name and renders only those within the page's width.
SWEEP_METRICS = ("hypervolume", "mac_reduction_at_1pt", "hypervolume_ref_accuracy")
SECTION_ID = "adprune-comparison"


def view_key(sweep_id: str) -> str:
    return f"adprune-{sweep_id}"


def column(kind: str, key: str) -> str:
    """The runs table's name for a column, as the UI writes it."""
    return f"{kind}.`{key}`"


def comparison_charts(swept: list[str]) -> list[dict[str, Any]]:
    """Accuracy against MAC reduction, and the swept keys against the results in parallel."""
    base = {"metricSectionId": SECTION_ID, "deleted": False, "isGenerated": False}
    scatter = {
        **base,
        "uuid": "adprune-accuracy-vs-mac-reduction",
        "type": "SCATTER",
        "xaxis": {"key": "mac_reduction", "type": "METRIC"},
        "yaxis": {"key": "accuracy", "type": "METRIC"},
        "runsCountToCompare": 100,
    }
    parallel = {
        **base,
        "uuid": "adprune-swept-keys",
        "type": "PARALLEL",
        "selectedParams": swept,
        "selectedMetrics": list(RESULT_METRICS),
        "runsCountToCompare": 100,
        "showAllRuns": True,
    }
    return [scatter, parallel] if swept else [scatter]


def sweep_view_state(sweep_id: str, swept: list[str]) -> dict[str, Any]:
    """The runs page showing one sweep's trials, its swept keys and results first."""
    return {
        "searchFilter": f"tags.`{KIND_TAG}` = '{TRIAL_KIND}' and tags.sweep_id = '{sweep_id}'",
        "orderByKey": column("params", swept[0]) if swept else "attributes.start_time",
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": [column("params", key) for key in swept]
        + [column("metrics", key) for key in RESULT_METRICS],
        "compareRunCharts": comparison_charts(swept),
        "compareRunSections": [
            {
                "uuid": SECTION_ID,
                "name": "Threshold comparison",
                "display": True,
                "isReordered": False,
            }
        ],
        "isAccordionReordered": False,
    }


def share_sweep_view(client: Any, experiment_id: str, sweep_run: Any) -> str:
    """Store the sweep's view on its experiment (again, if ``ui`` ran before) and return the
    key that opens it."""
    sweep_id = sweep_run.data.tags.get("sweep_id", sweep_run.info.run_id)
    swept = json.loads(sweep_run.data.tags.get("search_keys", "[]"))
    key = view_key(sweep_id)
    state = json.dumps(sweep_view_state(sweep_id, swept), separators=(",", ":"))
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG_PREFIX + key, state)
    return key


def sweeps_view_key(experiment_id: str) -> str:
    return f"adprune-sweeps-{experiment_id}"


def sweeps_view_state() -> dict[str, Any]:
    """The runs page showing the experiment's sweep runs, with what sweeps compare by."""
    return {
        "searchFilter": f"tags.`{KIND_TAG}` = '{SWEEP_KIND}'",
        "orderByKey": column("metrics", "hypervolume"),
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": [column("metrics", key) for key in SWEEP_METRICS],
        "compareRunCharts": [],
        "isAccordionReordered": False,
    }


def share_sweeps_view(client: Any, experiment_id: str) -> str:
    """Store the experiment's sweep-runs view and return the key that opens it."""
    key = sweeps_view_key(experiment_id)
    state = json.dumps(sweeps_view_state(), separators=(",", ":"))
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG_PREFIX + key, state)
    return key
