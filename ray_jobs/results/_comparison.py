"""A sweep's threshold comparison, attached to its sweep run when it ends: for each swept key,
the chosen network's accuracy and MAC reduction against the key's value (one marker per
trial), and below them the best MAC reduction at each accuracy loss with the network that
reaches it, as ``comparison/thresholds.png``; and the MLflow table ``comparison/trials.json``,
which the UI shows in the run's artifact view."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ray_jobs.results._export import sweep_front
from ray_jobs.results._hypervolume import experiment_baseline, sweep_reference_spec
from ray_jobs.results._loss import ReductionAtLoss, net_label, reductions_at_loss
from ray_jobs.results._records import TrialRow, load_networks, load_trials
from ray_jobs.results._reference import ReferenceSpec

TABLE_FILE = "comparison/trials.json"
FIGURE_FOLDER = "comparison"


class SweepReport(NamedTuple):
    """What a sweep run gets when the sweep ends: metrics, (file, artifact folder) pairs, and
    tables (artifact file -> column name -> values) for ``MlflowClient.log_table``."""

    metrics: dict[str, float]
    files: list[tuple[Path, str]]
    tables: dict[str, dict[str, list[Any]]]


def swept_keys(trials: Sequence[TrialRow]) -> list[str]:
    """The keys the search varied, in the order the spec gives them."""
    keys: dict[str, None] = {}
    for trial in trials:
        keys.update(dict.fromkeys(trial.hyperparams))
    return list(keys)


def comparison_table(trials: Sequence[TrialRow], keys: Sequence[str]) -> dict[str, list[Any]]:
    """One row per trial: its name, status, swept values and its chosen network's figures."""
    ordered = sorted(trials, key=lambda t: t.trial)
    table: dict[str, list[Any]] = {"trial": [t.trial for t in ordered]}
    table["status"] = [t.status for t in ordered]
    for key in keys:
        table[key] = [t.hyperparams.get(key) for t in ordered]
    table["accuracy"] = [t.accuracy for t in ordered]
    table["mac_reduction"] = [t.mac_reduction for t in ordered]
    table["param_reduction"] = [t.param_reduction for t in ordered]
    table["training_complexity"] = [t.training_complexity for t in ordered]
    table["final_widths"] = [str(t.final_widths) if t.final_widths else None for t in ordered]
    table["run_id"] = [t.run_id for t in ordered]
    return table


def axis_positions(values: Sequence[Any]) -> tuple[list[float], list[str] | None]:
    """Numbers stay numbers; anything else (a ``choice`` of strings) gets evenly spaced ticks."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values], None
    labels = sorted({str(v) for v in values})
    return [float(labels.index(str(v))) for v in values], labels


def plot_losses(ax: Any, found: Sequence[ReductionAtLoss]) -> None:
    """The best MAC reduction at each loss, each bar labelled with the network reaching it."""
    shown = [f for f in found if f.network is not None]
    xs = [f"{f.loss_points:g} pt" for f in shown]
    ys = [f.network.mac_reduction for f in shown]
    ax.bar(xs, ys, color="tab:green", alpha=0.7)
    for x, f in zip(xs, shown):
        label = f"{f.network.trial} {net_label(f.network)}\n{100 * f.network.accuracy:.1f}%"
        ax.annotate(label, (x, f.network.mac_reduction), ha="center", va="bottom", fontsize=7)
    ax.set_xlabel("accuracy loss against net0 (points)")
    ax.set_ylabel("best MAC reduction [x]")
    ax.set_title("MAC reduction at a given accuracy loss", fontsize=9)
    ax.grid(alpha=0.3, axis="y")


def plot_comparison(
    trials: Sequence[TrialRow],
    keys: Sequence[str],
    path: Path,
    losses: Sequence[ReductionAtLoss] = (),
) -> Path:
    """A row per swept key: accuracy (left) and MAC reduction (right) against its value; a
    last row with the MAC reduction at each accuracy loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in trials if t.accuracy is not None and t.mac_reduction is not None]
    rows = len(keys) + (1 if losses else 0)
    fig, axes = plt.subplots(
        rows, 2, figsize=(10, 3.2 * rows), squeeze=False, constrained_layout=True
    )
    for row, key in enumerate(keys):
        members = [t for t in done if key in t.hyperparams]
        xs, labels = axis_positions([t.hyperparams[key] for t in members])
        columns = (("accuracy", "accuracy [%]", 100.0), ("mac_reduction", "MAC reduction [x]", 1.0))
        for col, (field, label, scale) in enumerate(columns):
            ax = axes[row][col]
            ys = [scale * getattr(t, field) for t in members]
            ax.scatter(xs, ys, s=45)
            for trial, x, y in zip(members, xs, ys):
                ax.annotate(
                    trial.trial, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7
                )
            if labels is not None:
                ax.set_xticks(range(len(labels)), labels)
            elif xs and min(xs) > 0 and max(xs) / min(xs) >= 20:
                ax.set_xscale("log")  # thresholds are usually swept over decades
            ax.set_xlabel(key)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    if losses:
        plot_losses(axes[-1][0], losses)
        axes[-1][1].axis("off")
    fig.suptitle(f"{len(done)} trials: the chosen network of each, against the swept keys")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def sweep_report(
    client: Any,
    experiment: str,
    sweep_id: str,
    tracking_uri: str,
    folder: Path,
    reference: ReferenceSpec | None = None,
) -> SweepReport:
    """The sweep's front (:func:`sweep_front`, against the experiment's shared reference) and
    its threshold comparison with the MAC reduction at each loss."""
    spec = reference or sweep_reference_spec(client, experiment, sweep_id)
    baseline = experiment_baseline(client, experiment)
    front = sweep_front(client, experiment, sweep_id, tracking_uri, folder, spec, baseline)
    trials = load_trials(client, [experiment], [sweep_id])
    keys = swept_keys(trials)
    if not trials:
        return SweepReport(front.metrics, front.files, {})
    files = list(front.files)
    losses = reductions_at_loss(load_networks(client, [experiment], sweep_id=sweep_id))
    if keys or any(found.network is not None for found in losses):
        figure = plot_comparison(trials, keys, folder / "thresholds.png", losses)
        files.append((figure, FIGURE_FOLDER))
    return SweepReport(front.metrics, files, {TABLE_FILE: comparison_table(trials, keys)})
