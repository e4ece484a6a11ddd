"""What the user sees while a sweep runs and when it ends: a line per trial result and
decision, and the table of trials."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from adprune_core.config import get_dotted
from adprune_core.schedule import short_widths


def make_progress_callback() -> Any:
    from ray.tune import Callback

    class ProgressPrinter(Callback):
        """One line per trial result: round, epoch, AD, accuracy, widths; and each decision."""

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict) -> None:
            name = "final" if result["phase"] == "final" else f"net{result['round']}"
            if result.get("diverged"):
                click.echo(f"[{trial.trial_id}] {name:<6} diverged: {result['diverged']}")
                return
            if result.get("checkpoint_fallback"):
                click.echo(f"[{trial.trial_id}] checkpoint {result['checkpoint_fallback']}")
            line = (
                f"[{trial.trial_id}] {name:<6} epoch {result['epoch']:>3}  "
                f"AD {result['ad_total']:.4f}  acc {100 * result['accuracy']:5.1f}%  "
                f"widths {short_widths(result['widths'])}{share_text(result)}"
            )
            if result["decision"] != "continue":
                line += f"  -> {result['decision']} ({result['decision_reason']})"
            click.echo(line)

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            click.echo(f"[{trial.trial_id}] failed; Tune retries it from its last checkpoint")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            click.echo(f"[{trial.trial_id}] failed and is out of retries (--max-failures)")

    return ProgressPrinter()


def share_text(result: dict[str, Any]) -> str:
    """The CPUs (and GPU share) this network trains on: with ``resources.per_round`` they
    change from round to round."""
    if "resources_cpu" not in result:
        return ""
    text = f"  cpu {result['resources_cpu']:g}"
    if result.get("resources_gpu"):
        text += f" gpu {result['resources_gpu']:g}"
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


def final_or_current(metrics: dict[str, Any], key: str, default: Any) -> Any:
    return metrics.get(f"final_{key}", metrics.get(key, default))


def summary_rows(results: Any, search_keys: Sequence[str]) -> list[list[str]]:
    rows = []
    for result in results:
        metrics = result.metrics or {}
        done = bool(metrics.get("schedule_done"))
        trial_id = metrics.get("trial_id", "?")
        status = "done" if done else ("error" if result.error else "unfinished")
        if metrics.get("diverged"):
            status = "diverged"
        rows.append(
            [
                str(trial_id),
                searched_values(result.config, search_keys),
                status,
                str(metrics.get("final_rounds", metrics.get("round", 0) + 1)),
                f"net{metrics['final_chosen_round']}" if done else "-",
                short_widths(metrics.get("final_widths", metrics.get("widths", [])), 12),
                f"{100 * metrics.get('final_accuracy', metrics.get('accuracy', 0.0)):.1f}%",
                f"{metrics.get('final_mac_reduction', metrics.get('mac_reduction', 1.0)):.1f}x",
                f"{final_or_current(metrics, 'training_complexity', 0.0):.1f}",
                metrics.get("final_stop_reason", metrics.get("diverged", "-")),
                shares_by_net(result.config, metrics),
                str(metrics.get("node_ip", "-")),
            ]
        )
    return rows
