"""Trial results and events, as the operations the recorder applies (JSON-able dicts)."""

from __future__ import annotations

from typing import Any

from adprune_core.config import flatten, get_dotted
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
LATENCY_METRICS = (
    "latency_ms_b1",
    "latency_ms_batch",
    "latency_reduction_b1",
    "latency_reduction_batch",
)
TRIAL_METRICS = {
    **{f"final_{key}": key for key in LATENCY_METRICS},
    "final_accuracy": "accuracy",
    "final_param_reduction": "param_reduction",
    "final_mac_reduction": "mac_reduction",
    "final_training_complexity": "training_complexity",
    "final_baseline_complexity": "baseline_complexity",
    "final_rounds": "rounds",
    "final_chosen_round": "chosen_round",
}


def network_fields(op: str, trial_id: str, result: dict[str, Any]) -> dict[str, Any]:
    """What names the net[i] run an operation belongs to, its epoch, and the share it
    trains on (a param of the run: with ``resources.per_round`` it differs per network)."""
    fields = {
        "op": op,
        "trial": trial_id,
        "net": net_name(result["phase"], result["round"]),
        "phase": result["phase"],
        "round": result["round"],
        "widths": result["widths"],
        "epoch": result["epoch"],
    }
    if "resources_cpu" in result:
        fields["resources"] = {
            "resources.cpu": result["resources_cpu"],
            "resources.gpu": result.get("resources_gpu", 0.0),
        }
    return fields


def epoch_op(trial_id: str, result: dict[str, Any]) -> dict[str, Any]:
    metrics = {key: result[key] for key in EPOCH_METRICS}
    metrics.update({layer_metric(i): ad for i, ad in enumerate(result["layer_ad"])})
    return {
        **network_fields("epoch", trial_id, result),
        "metrics": metrics,
        "node_ip": result.get("node_ip", ""),
        "time_ms": int(1000 * result.get("timestamp", 0)) or None,
    }


def net_end_op(trial_id: str, result: dict[str, Any]) -> dict[str, Any]:
    """The network's closing metrics and tags (a run record)."""
    metrics: dict[str, Any] = {key: result[key] for key in NET_SUMMARY_METRICS}
    metrics["epochs"] = result["epoch"]
    if result.get("epochs_to_rho") is not None:
        metrics["epochs_to_rho"] = result["epochs_to_rho"]
    metrics.update({k: result[k] for k in LATENCY_METRICS if result.get(k) is not None})
    return {
        **network_fields("net_end", trial_id, result),
        "metrics": metrics,
        "profile": result.get("net_profile", result.get("profile", "")),
        "end_reason": result["decision_reason"],
        "time_ms": int(1000 * result.get("timestamp", 0)) or None,
    }


def net_figures_op(trial_id: str, result: dict[str, Any]) -> dict[str, Any]:
    """The network's files (an artifact record, written off the metrics' path)."""
    return {
        **network_fields("net_figures", trial_id, result),
        "net0_widths": result["net0_widths"],
        "ad_history": result["ad_history"],
        "layer_ad_history": result.get("net_layer_ad_history", []),
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
    return {v: result[k] for k, v in TRIAL_METRICS.items() if result.get(k) is not None}


def trial_end_op(trial_id: str, result: dict[str, Any]) -> dict[str, Any]:
    """A completed trial: done (delta or max_rounds), diverged, ended by an error a retry
    could not fix, or stopped otherwise. Only a done trial has a chosen network, so only it
    gets the network's metrics: the others leave them unset rather than record zeros."""
    done = bool(result.get("schedule_done"))
    status = "done" if done else trial_failure_status(result)
    return {
        "op": "trial_end",
        "trial": trial_id,
        "status": status,
        "reason": result.get("final_stop_reason")
        or result.get("diverged")
        or result.get(TRIAL_ERROR, ""),
        "metrics": trial_metrics(result) if done else {},
        "final_widths": result.get("final_widths") if done else None,
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
