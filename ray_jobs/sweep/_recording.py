"""The sweep side of MLflow: the sweep's params, its recording callback, the store check
before training, and the closing line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adprune_core.config import flatten, spec_to_dict
from ray_jobs.sweep._spec import SweepSpec
from ray_jobs.tracking.keys import KEY_TAG
from ray_jobs.tracking.store import check_store, ensure_experiment, first_line, make_client

if TYPE_CHECKING:
    from ray_jobs.tracking import SweepEndReport, TrialEndReport


def sweep_params(spec: SweepSpec) -> dict[str, Any]:
    """The spec as flat MLflow params; each search domain as one JSON value."""
    spec_dict = spec_to_dict(spec)
    search = spec_dict.pop("search")
    params = flatten(spec_dict)
    params.update({f"search.{key}": json.dumps(domain) for key, domain in search.items()})
    return params


def make_mlflow_callback(
    spec: SweepSpec,
    identity: dict[str, Any],
    name: str,
    storage: str,
    home: Path,
    sweep_end_report: SweepEndReport | None,
    trial_end_report: TrialEndReport | None = None,
) -> Any:
    """The callback that records the sweep; ``sweep_end_report`` adds the sweep run's
    end-of-sweep figures and files (the sweep's front)."""
    from ray_jobs.tracking import MlflowCallback, SweepInfo

    info = SweepInfo(
        sweep_id=identity["sweep_id"],
        name=name,
        experiment=spec.experiment,
        tracking_uri=identity["tracking_uri"],
        params=sweep_params(spec),
        search_keys=list(spec.search),
        arch=spec.model.arch,
        dataset=spec.data.dataset,
        storage=f"{storage}/{name}",
    )
    retry_s = float(os.environ.get("ADPRUNE_MLFLOW_RETRY_S", "15"))
    return MlflowCallback(
        info,
        home,
        retry_interval_s=retry_s,
        sweep_end_report=sweep_end_report,
        trial_end_report=trial_end_report,
    )


def open_store(uri: str, experiment: str) -> str:
    """Fail before any training if the store cannot be used; the experiment's id."""
    client = check_store(uri)
    return ensure_experiment(client, experiment, uri)


def mlflow_summary(identity: dict[str, Any], experiment: str) -> str:
    uri = identity["tracking_uri"]
    try:
        client = make_client(uri)
        runs = client.search_runs(
            [client.get_experiment_by_name(experiment).experiment_id],
            filter_string=f"tags.`{KEY_TAG}` = '{identity['sweep_id']}'",
        )
    except Exception as err:  # the store went away during the sweep; the queue says the rest
        return f"MLflow: {uri} not answering at the end ({first_line(err)})"
    run = f"sweep run {runs[0].info.run_id}" if runs else "no sweep run yet"
    return (
        f"MLflow: experiment {experiment!r}, {run}, in {uri} "
        "(browse: adprune-sweep ui; table: adprune-sweep compare)"
    )
