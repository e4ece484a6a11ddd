"""PNG figures for MLflow artifacts: AD curves (the paper's Figs. 1 and 2), activation maps (its
Fig. 3) and the front."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # drivers and CI have no display

from matplotlib import colormaps
from matplotlib.figure import Figure


def plot_net_ad(
    path: Path,
    title: str,
    ad_history: Sequence[float],
    layer_ad_history: Sequence[Sequence[float]],
) -> Path:
    """Total AD (bold black) and every layer's AD against the epoch, for one network.

    One axes rather than two: both are densities in [0, 1], and the driver renders one of
    these per network while trials share its cores (two axes took ~200 ms, one ~120 ms).
    """
    epochs = list(range(1, len(ad_history) + 1))
    fig = Figure(figsize=(7, 4))  # no pyplot: nothing to close, no global figure registry
    ax = fig.subplots()
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.13, top=0.9)
    if layer_ad_history:
        per_layer = list(zip(*layer_ad_history))
        colors = colormaps["viridis"](
            [i / max(len(per_layer) - 1, 1) for i in range(len(per_layer))]
        )
        for index, (curve, color) in enumerate(zip(per_layer, colors)):
            ax.plot(epochs[: len(curve)], curve, color=color, linewidth=1, label=f"layer {index}")
    ax.plot(epochs, ad_history, marker="o", color="black", linewidth=2.5, label="total")
    layers = len(layer_ad_history[0]) if layer_ad_history else 0
    ax.legend(fontsize="x-small", ncol=2 if layers > 8 else 1)
    ax.set(xlabel="epoch", ylabel="activation density", title=f"{title}: total and per-layer AD")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=80)
    return path


def plot_trial_ad(path: Path, title: str, curves: Sequence[tuple[str, Sequence[float]]]) -> Path:
    """Total AD across all of a trial's networks, on one running epoch axis."""
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
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
    return path


def plot_activation_maps(path: Path, title: str, maps: dict[str, Any]) -> Path:
    """The paper's Fig. 3: the input, then net0's layers (top row) beside the chosen network's
    (bottom row), every layer map on one colour scale so that the rows compare directly."""
    net0, chosen = maps["net0"], maps["chosen"]
    columns = 1 + max(len(net0), len(chosen))
    fig = Figure(figsize=(1.6 * columns, 3.9))
    axes = fig.subplots(2, columns, squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.9, bottom=0.04, top=0.82, wspace=0.1, hspace=0.35)
    values = [v for layers in (net0, chosen) for grid in layers for row in grid for v in row]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    image = None
    for row, (label, layers) in enumerate((("net0", net0), (maps["chosen_label"], chosen))):
        axes[row][0].imshow(maps["input"], cmap="gray")
        axes[row][0].set_title("input", fontsize=8)
        axes[row][0].set_ylabel(label, fontsize=9)
        for index in range(columns - 1):
            ax = axes[row][index + 1]
            if index < len(layers):
                image = ax.imshow(layers[index], cmap="viridis", vmin=low, vmax=high)
                ax.set_title(f"layer {index}", fontsize=8)
            else:
                ax.set_visible(False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, cax=fig.add_axes((0.92, 0.1, 0.015, 0.7)), label="mean activation")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=80)
    return path
