"""What the user sees while a sweep runs and when it ends: a line per trial result and
decision, and the table of trials."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click

from adprune_core.config import get_dotted, net_name
from adprune_core.schedule import EpochReport, short_widths
from ray_jobs.sweep._trial_errors import (
    ERROR_LOG,
    TUNE_ERROR_FILE,
    error_line,
    failure_reason,
    tune_error_line,
    write_error_log,
)
from ray_jobs.tracking import sweep_sharing_metrics
from ray_jobs.tracking.keys import TRIAL_ERROR


def make_progress_callback() -> Any:
    from ray.tune import Callback

    class ProgressPrinter(Callback):
        """One line per trial result: round, epoch, AD, accuracy, widths; and each decision."""

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict) -> None:
            if failure_reason(result):  # its traceback goes to its log, not to the console
                write_error_log(trial.path, result)
            if result.get(TRIAL_ERROR):
                click.echo(f"[{trial.trial_id}] error (not retried): {result[TRIAL_ERROR]}")
                return
            if result.get("diverged"):
                name = net_name(result["phase"], result["round"])
                click.echo(f"[{trial.trial_id}] {name:<6} diverged: {result['diverged']}")
                return
            click.echo(epoch_progress_line(trial.trial_id, EpochReport.from_tune(result)))

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            click.echo(
                f"[{trial.trial_id}] failed; Tune retries it from its last checkpoint "
                f"({tune_error_line(trial)})"
            )

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            click.echo(
                f"[{trial.trial_id}] error: {tune_error_line(trial)}; "
                "out of retries (--max-failures)"
            )

    return ProgressPrinter()


def epoch_progress_line(trial_id: str, report: EpochReport) -> str:
    """The epoch's line (after a checkpoint-fallback line, when the trial resumed from an
    older checkpoint), with the decision when the epoch ends a network."""
    prefix = ""
    if report.checkpoint_fallback:
        prefix = f"[{trial_id}] checkpoint {report.checkpoint_fallback}\n"
    name = net_name(report.phase, report.round)
    line = (
        f"[{trial_id}] {name:<6} epoch {report.epoch:>3}  "
        f"AD {report.ad_total:.4f}  acc {100 * report.accuracy:5.1f}%  "
        f"widths {short_widths(report.widths)}{share_text(report)}"
    )
    if report.ends_network:
        line += f"  -> {report.decision} ({report.decision_reason})"
    return prefix + line


def share_text(report: EpochReport) -> str:
    """The CPUs (and GPU share) this network trains on: with ``resources.per_round`` they
    change from round to round."""
    if report.resources_cpu is None:
        return ""
    text = f"  cpu {report.resources_cpu:g}"
    if report.resources_gpu:
        text += f" gpu {report.resources_gpu:g}"
    return text


# ---------------------------------------------------------------------------- summary


SUMMARY_HEADERS = (
    "trial",
    "searched",
    "status",
    "rounds",
    "chosen",
    "final widths",
    "accuracy",
    "MACs red.",
    "train. complexity",
    "stop",
    "shared ep.",
    "cpu/gpu by net",
    "node",
)


def searched_values(config: dict[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for key in keys:
        node = get_dotted(config["spec"], key)
        parts.append(
            f"{key.split('.')[-1]}={node:g}" if isinstance(node, float) else f"{key}={node}"
        )
    return " ".join(parts)


def shares_by_net(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Each network's share in training order, e.g. ``2,1,1`` (``cpu/gpu`` pairs with GPUs):
    net0's from the spec, the later ones from the transitions the scheduler made."""
    resources = config["spec"]["resources"]
    shares = [(resources["cpu"], resources["gpu"])]
    shares += [(s["cpu"], s["gpu"]) for s in config.get("transition_resources", [])]
    if "resources_cpu" in metrics:  # the share the trial reported last runs on
        shares[-1] = (metrics["resources_cpu"], metrics.get("resources_gpu", 0.0))
    if any(gpu for _, gpu in shares):
        return ",".join(f"{cpu:g}/{gpu:g}" for cpu, gpu in shares)
    return ",".join(f"{cpu:g}" for cpu, _ in shares)


# A trial that ended without a chosen network has no accuracy, reductions, widths or
# complexity to show: its last round's figures, or zeros, would read as a result.
NO_VALUE = "–"


def trial_status(result: Any) -> str:
    metrics = result.metrics or {}
    if metrics.get("schedule_done"):
        return "done"
    if metrics.get("diverged"):
        return "diverged"
    if metrics.get(TRIAL_ERROR) or result.error:
        return "error"
    return "unfinished"


def trial_reason(result: Any) -> str:
    """Why the trial stopped: delta's reason, or the one line of its divergence or error."""
    metrics = result.metrics or {}
    if metrics.get("schedule_done"):
        return str(metrics.get("final_stop_reason", NO_VALUE))
    return failure_reason(metrics) or (error_line(result.error) if result.error else NO_VALUE)


def network_cells(metrics: dict[str, Any]) -> list[str]:
    """Chosen network, widths, accuracy, MAC reduction and training complexity."""
    if not metrics.get("schedule_done"):
        return [NO_VALUE] * 5
    return [
        net_name("search", metrics["final_chosen_round"]),
        short_widths(metrics["final_widths"], 12),
        f"{100 * metrics['final_accuracy']:.1f}%",
        f"{metrics['final_mac_reduction']:.1f}x",
        f"{metrics['final_training_complexity']:.1f}",
    ]


def rounds_cell(metrics: dict[str, Any]) -> str:
    if "final_rounds" in metrics:
        return str(metrics["final_rounds"])
    return str(metrics["round"] + 1) if "round" in metrics else NO_VALUE


def summary_rows(results: Any, search_keys: Sequence[str]) -> list[list[str]]:
    rows = []
    for result in results:
        metrics = result.metrics or {}
        rows.append(
            [
                str(metrics.get("trial_id", "?")),
                searched_values(result.config, search_keys),
                trial_status(result),
                rounds_cell(metrics),
                *network_cells(metrics),
                trial_reason(result),
                str(metrics.get("trial_shared_epochs", NO_VALUE)),
                shares_by_net(result.config, metrics),
                str(metrics.get("node_ip", NO_VALUE)),
            ]
        )
    return rows


def sharing_line(results: Any) -> str | None:
    """What sharing saved, in net0-epochs (an epoch of net[i] counts 1 / its MAC
    reduction): e.g. ``trained 8.8 of 26.9 net0-epochs (0.33x): 18.1 shared``."""
    counts = sweep_sharing_metrics([r.metrics or {} for r in results])
    if not counts:
        return None
    trained, total = counts["net0_epochs_trained"], counts["net0_epochs_unshared"]
    return (
        f"trained {trained:.1f} of {total:.1f} net0-epochs ({counts['sharing_ratio']:.2f}x): "
        f"{total - trained:.1f} shared"
    )


# ---------------------------------------------------------------------------- failures


@dataclass(frozen=True)
class FailedTrial:
    """A trial that did not finish its schedule: its id, one-line reason and log file."""

    trial_id: str
    reason: str
    log: str


def trial_log(result: Any) -> str:
    """Where a failed trial's traceback is: our error.log for an error it reported, Tune's
    error.txt for one Tune caught (a dead worker, out of retries), else its folder."""
    folder = str(result.path)
    metrics = result.metrics or {}
    if failure_reason(metrics):
        return f"{folder}/{ERROR_LOG}"
    if result.error:
        return f"{folder}/{TUNE_ERROR_FILE}"
    return folder


def failed_trials(results: Any) -> list[FailedTrial]:
    return [
        FailedTrial(str((r.metrics or {}).get("trial_id", "?")), trial_reason(r), trial_log(r))
        for r in results
        if trial_status(r) != "done"
    ]


def failure_line(failed: Sequence[FailedTrial], total: int) -> str:
    """The sweep's closing line when not every trial finished its schedule."""
    logs = ", ".join(f.log for f in failed)
    return f"{len(failed)} of {total} trials failed; their logs: {logs}"
