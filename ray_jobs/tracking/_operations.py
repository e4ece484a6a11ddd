"""Trial results and events, as the operations the recorder applies (JSON-able dicts)."""

from __future__ import annotations

from typing import Any

from adprune_core.config import LATENCY_FIELDS, flatten, get_dotted
from adprune_core.schedule.report import EpochReport
from ray_jobs.tracking.keys import TRIAL_ERROR, layer_metric, net_name

EPOCH_METRICS = ("ad_total", "loss", "accuracy", "train_accuracy")
NET_SUMMARY_METRICS = (
    "params",
    "macs",
    "energy_j",
    "param_reduction",
    "mac_reduction",
    "training_complexity",
)
# Present where the spec's record.latency is on (the default).
LATENCY_METRICS = LATENCY_FIELDS
# The trial run's metrics: its chosen (or final-phase) network's, from the report's summary.
TRIAL_METRICS = (
    *LATENCY_FIELDS,
    "accuracy",
    "param_reduction",
    "mac_reduction",
    "training_complexity",
    "baseline_complexity",
    "rounds",
    "chosen_round",
)


def network_fields(op: str, trial_id: str, report: EpochReport) -> dict[str, Any]:
    """What names the net[i] run an operation belongs to, its epoch, and the share it
    trains on (a param of the run: with ``resources.per_round`` it differs per network)."""
    fields: dict[str, Any] = {
        "op": op,
        "trial": trial_id,
        "net": net_name(report.phase, report.round),
        "phase": report.phase,
        "round": report.round,
        "widths": report.widths,
        "epoch": report.epoch,
    }
    if report.resources_cpu is not None:
        fields["resources"] = {
            "resources.cpu": report.resources_cpu,
            "resources.gpu": report.resources_gpu or 0.0,
        }
    return fields


def time_ms(result: dict[str, Any]) -> int | None:
    """When Tune received the result (its own ``timestamp``), for the metrics' time."""
    return int(1000 * result.get("timestamp", 0)) or None


def epoch_op(trial_id: str, result: dict[str, Any]) -> dict[str, Any]:
    report = EpochReport.from_tune(result)
    metrics = {key: getattr(report, key) for key in EPOCH_METRICS}
    metrics.update({layer_metric(i): ad for i, ad in enumerate(report.layer_ad)})
    return {
        **network_fields("epoch", trial_id, report),
        "metrics": metrics,
        "node_ip": report.node_ip,
        "time_ms": time_ms(result),
    }


def net_end_op(trial_id: str, result: dict[str, Any]) -> dict[str, Any]:
    """The network's closing metrics and tags (a run record)."""
    report = EpochReport.from_tune(result)
    closing = report.closing
    metrics: dict[str, Any] = {key: getattr(report, key) for key in NET_SUMMARY_METRICS}
    metrics["epochs"] = report.epoch
    metrics["shared_epochs"] = report.shared_epochs
    if closing is not None and closing.epochs_to_rho is not None:
        metrics["epochs_to_rho"] = closing.epochs_to_rho
    metrics.update(closing.latency if closing is not None else {})
    return {
        **network_fields("net_end", trial_id, report),
        "metrics": metrics,
        "profile": closing.profile if closing is not None else report.profile,
        "end_reason": report.decision_reason,
        "trained_by": report.trained_by,
        "time_ms": time_ms(result),
    }


def net_figures_op(trial_id: str, result: dict[str, Any]) -> dict[str, Any]:
    """The network's files (an artifact record, written off the metrics' path)."""
    report = EpochReport.from_tune(result)
    return {
        **network_fields("net_figures", trial_id, report),
        "net0_widths": report.net0_widths,
        "ad_history": report.ad_history,
        "layer_ad_history": report.closing.layer_ad_history if report.closing else [],
    }


def searched_values(config: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {key: get_dotted(config["spec"], key) for key in keys}


def last_error_line(trial: Any) -> str:
    """The exception line of the trial's traceback (e.g. ``TrainingDiverged: ...``)."""
    try:
        text = trial.get_error() or ""
    except Exception:  # the error file may be on storage that is gone
        text = ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1][:500] if lines else "trial failed"


def trial_start_op(trial_id: str, config: dict[str, Any], search_keys: list[str]) -> dict[str, Any]:
    params = flatten({"spec": config["spec"]})
    return {
        "op": "trial_start",
        "trial": trial_id,
        "params": {k.removeprefix("spec."): v for k, v in params.items()},
        "searched": searched_values(config, search_keys),
    }


def trial_metrics(result: dict[str, Any]) -> dict[str, Any]:
    summary = EpochReport.from_tune(result).summary
    if summary is None:
        return {}
    values = {key: getattr(summary, key) for key in TRIAL_METRICS}
    return {key: value for key, value in values.items() if value is not None}


SHARING_METRICS = ("net0_epochs", "net0_epochs_trained")


def sharing_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """A trial's epochs loaded from the epoch store, and its epochs in net0 units: all of
    them, and the part it trained itself."""
    if "net0_epochs" not in result:
        return {}
    values = {key: result[key] for key in SHARING_METRICS}
    values["shared_epochs"] = result.get("trial_shared_epochs", 0)
    return values


def sweep_sharing_metrics(results: list[dict[str, Any]]) -> dict[str, float]:
    """The sweep's net0-epochs: trained, as they would be without sharing, and the ratio."""
    total = sum(r.get("net0_epochs", 0.0) for r in results)
    trained = sum(r.get("net0_epochs_trained", 0.0) for r in results)
    if total <= 0:
        return {}
    return {
        "net0_epochs_trained": trained,
        "net0_epochs_unshared": total,
        "sharing_ratio": trained / total,
    }


def trial_end_op(trial_id: str, result: dict[str, Any]) -> dict[str, Any]:
    """A completed trial: done (delta or max_rounds), diverged, ended by an error a retry
    could not fix, or stopped otherwise. Only a done trial has a chosen network, so only it
    gets the network's metrics: the others leave them unset rather than record zeros."""
    done = bool(result.get("schedule_done"))
    status = "done" if done else trial_failure_status(result)
    summary = EpochReport.from_tune(result).summary if done else None
    return {
        "op": "trial_end",
        "trial": trial_id,
        "status": status,
        "reason": result.get("final_stop_reason")
        or result.get("diverged")
        or result.get(TRIAL_ERROR, ""),
        "metrics": {**(trial_metrics(result) if done else {}), **sharing_metrics(result)},
        "final_widths": summary.widths if done and summary is not None else None,
    }


def trial_figures_op(trial_id: str, result: dict[str, Any] | None) -> dict[str, Any]:
    """After a trial's end: the sweep's progress, and a finished trial's figures."""
    result = result or {}
    return {
        "op": "trial_figures",
        "trial": trial_id,
        "done": bool(result.get("schedule_done")),
        "fig3": result.get("fig3"),
    }


def trial_failure_status(result: dict[str, Any]) -> str:
    if result.get("diverged"):
        return "diverged"
    return "error" if result.get(TRIAL_ERROR) else "stopped"


def trial_error_op(trial_id: str, reason: str) -> dict[str, Any]:
    return {
        "op": "trial_end",
        "trial": trial_id,
        "status": "error",
        "reason": reason,
        "metrics": {},
    }
