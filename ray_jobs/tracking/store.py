"""Where MLflow records go: the tracking URI, the experiment, and a client that fails fast.

The default store is ``sqlite:///mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts``
(MLflow 3.x keeps the file store in maintenance mode). ``--tracking-uri`` or
``MLFLOW_TRACKING_URI`` selects another store, typically a shared ``mlflow server``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from adprune_core.config import SpecError
from ray_jobs.tracking.keys import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND

DEFAULT_STORE_DIR = "mlruns"
DEFAULT_DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"

# MLflow's HTTP client retries with exponential backoff for minutes by default; a sweep
# driver must not stall on a dead server (writes are queued and retried instead).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
# Against a server, MLflow prints two "View run ... at" lines for every run it ends: a sweep's
# output would be mostly those. The closing line names the sweep run instead.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


class TrackingError(SpecError):
    """A tracking store that cannot be used; one line, exit 2."""


def quiet_mlflow_logging() -> None:
    # Table creation and migration INFO lines on every first use of a sqlite store.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def default_tracking_uri(base: Path | None = None) -> str:
    folder = (base or Path.cwd()) / DEFAULT_STORE_DIR
    return f"sqlite:///{folder.resolve() / DEFAULT_DB_FILE}"


def resolve_tracking_uri(option: str | None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else the local sqlite store."""
    uri = option or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    scheme = urlparse(uri).scheme
    if scheme == "" and uri:
        # A bare path is what `mlflow` itself would treat as a (deprecated) file store.
        raise TrackingError(
            f"--tracking-uri {uri}: expected a URI such as sqlite:///path/mlflow.db "
            "or http://host:5000"
        )
    return uri


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).expanduser()


def is_server(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def artifact_root(uri: str) -> str | None:
    """Artifacts next to a sqlite store; a server or other store chooses for itself."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.resolve().parent / ARTIFACTS_DIR).as_uri()


def prepare_local_store(uri: str) -> None:
    db = sqlite_path(uri)
    if db is None:
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrackingError(
            f"--tracking-uri {uri}: cannot create {db.parent} ({err.strerror})"
        ) from None
    if not os.access(db.parent, os.W_OK):
        raise TrackingError(f"--tracking-uri {uri}: {db.parent} is not writable")


def make_client(uri: str) -> Any:
    from mlflow import MlflowClient

    quiet_mlflow_logging()
    return MlflowClient(tracking_uri=uri)


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def check_store(uri: str) -> Any:
    """A client for ``uri`` that has answered one request; else a one-line TrackingError."""
    prepare_local_store(uri)
    with schema_lock(uri):
        client = make_client(uri)
        try:
            client.search_experiments(max_results=1)
        except Exception as err:  # any failure here means the store is unusable for this sweep
            raise TrackingError(f"--tracking-uri {uri}: {unusable(uri, err)}") from None
    return client


def refused_credentials(err: BaseException) -> bool:
    """The server answered, and said no to who we are (HTTP 401 or 403)."""
    return getattr(err, "error_code", None) in (
        "UNAUTHENTICATED",
        "CUSTOMER_UNAUTHORIZED",
        "PERMISSION_DENIED",
    )


def unusable(uri: str, err: BaseException) -> str:
    """Why the first request to the store failed, in words a user can act on."""
    if refused_credentials(err):
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        who = f"user {user!r}" if user else "no MLFLOW_TRACKING_USERNAME"
        return (
            f"the server refused the credentials ({who}; set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD to an account of its basic-auth app)"
        )
    where = "no MLflow server answering there" if is_server(uri) else "cannot open the store"
    return f"{where} ({first_line(err)})"


def schema_lock(uri: str) -> Any:
    """Held while a process opens a sqlite store for the first time.

    Opening a new sqlite store creates and migrates its schema; several processes doing it
    at once race (``table ... already exists``, alembic ``Online migration expected to match
    one row``; mlflow#19943). A lock file beside the database serializes the first request
    of every process; once the schema exists, the request only reads it.
    """
    db = sqlite_path(uri)
    if db is None:
        return contextlib.nullcontext()
    from filelock import FileLock

    return FileLock(str(db) + ".lock", timeout=300)


def ensure_experiment(client: Any, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (with artifacts beside a sqlite store) if new."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(
                name,
                artifact_location=artifact_root(uri),
                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND},
            )
        except MlflowException:
            # Another process may have created it between the lookup and here.
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"experiment {name!r} is deleted in {uri}; restore it in the MLflow UI, "
            "purge it with `mlflow gc`, or set another `experiment:` in the spec"
        )
    mark_model_training(client, experiment)
    return experiment.experiment_id


def mark_model_training(client: Any, experiment: Any) -> None:
    """Tag the experiment so the MLflow UI shows its runs, unless it already has a kind."""
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(
            experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
        )


def experiment_ids(client: Any, names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Name -> id for the given experiments, or for every active one when none is given."""
    if not names:
        return {e.name: e.experiment_id for e in client.search_experiments()}
    found = {}
    for name in names:
        experiment = client.get_experiment_by_name(name)
        if experiment is None or experiment.lifecycle_stage == "deleted":
            raise TrackingError(f"--experiment {name}: no such experiment in the store")
        found[name] = experiment.experiment_id
    return found
