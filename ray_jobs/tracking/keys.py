"""Names shared by the side that writes a sweep and the side that reads it back.

Every run of a sweep carries its logical key (``sweep_id``, ``sweep_id/trial``,
``sweep_id/trial/net1``) in :data:`KEY_TAG` and its level in :data:`KIND_TAG`; a run is
finished, and never written again, once :data:`CLOSED_TAG` is ``"true"``. The writer finds
runs by key, never by run id, which is what makes its writes exactly-once; the readers select
runs by kind and closed mark. It imports only the torch-free definitions of
:mod:`adprune_core.config`, so both sides can import it.
"""

from __future__ import annotations

from adprune_core.config import net_name  # noqa: F401  (the net[i] run's name, one definition)

KIND_TAG = "adprune.kind"
KEY_TAG = "adprune.key"
CLOSED_TAG = "adprune.closed"
PARENT_TAG = "mlflow.parentRunId"
# On a net run whose network was logged as an MLflow model: that model's URI (models:/<id>).
MODEL_TAG = "adprune.model_uri"
# On a net run some of whose epochs another trial trained (and this one loaded): that trial.
TRAINED_BY_TAG = "adprune.trained_by"

# The MLflow UI opens an experiment with this kind on its runs ("Model training"), not on the
# GenAI overview of traces and token usage.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"

SWEEP_KIND = "sweep"
TRIAL_KIND = "trial"
NET_KIND = "net"

# A trial report field: the one-line reason of an error that ended the trial at once (a
# retry could not fix it). Such a trial's run is FAILED, with the reason in its error tag.
TRIAL_ERROR = "trial_error"


def sweep_key(sweep_id: str) -> str:
    return sweep_id


def trial_key(sweep_id: str, trial_id: str) -> str:
    return f"{sweep_id}/{trial_id}"


def net_key(sweep_id: str, trial_id: str, net: str) -> str:
    return f"{sweep_id}/{trial_id}/{net}"


def layer_metric(index: int) -> str:
    return f"ad/layer_{index:02d}"
