"""PNG figures for MLflow artifacts: AD curves (the paper's Figs. 1 and 2) and the front."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # drivers and CI have no display

import matplotlib.pyplot as plt


def plot_net_ad(
    path: Path,
    title: str,
    ad_history: Sequence[float],
    layer_ad_history: Sequence[Sequence[float]],
) -> Path:
    """Total AD and every layer's AD against the epoch, for one network."""
    epochs = list(range(1, len(ad_history) + 1))
    fig, (total_ax, layer_ax) = plt.subplots(1, 2, figsize=(10, 4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
    total_ax.plot(epochs, ad_history, marker="o", color="black")
    total_ax.set(xlabel="epoch", ylabel="total activation density", title=f"{title}: total AD")
    if layer_ad_history:
        per_layer = list(zip(*layer_ad_history))
        colors = plt.cm.viridis([i / max(len(per_layer) - 1, 1) for i in range(len(per_layer))])
        for index, (curve, color) in enumerate(zip(per_layer, colors)):
            layer_ax.plot(epochs[: len(curve)], curve, color=color, label=f"layer {index}")
        layer_ax.legend(fontsize="x-small", ncol=2 if len(per_layer) > 8 else 1)
    layer_ax.set(xlabel="epoch", ylabel="activation density", title=f"{title}: per layer")
    for ax in (total_ax, layer_ax):
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_trial_ad(path: Path, title: str, curves: Sequence[tuple[str, Sequence[float]]]) -> Path:
    """Total AD across all of a trial's networks, on one running epoch axis."""
    fig, ax = plt.subplots(figsize=(8, 4))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.13, top=0.9)
    start = 0
    for label, curve in curves:
        epochs = list(range(start + 1, start + len(curve) + 1))
        ax.plot(epochs, curve, marker="o", label=label)
        if start:
            ax.axvline(start + 0.5, color="grey", linestyle=":", linewidth=1)
        start += len(curve)
    ax.set(xlabel="epoch (all rounds)", ylabel="total activation density", title=title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
