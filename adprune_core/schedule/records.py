"""What is kept of every trained network: :class:`NetRecord`, plain data (no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from adprune_core.config import net_label


@dataclass
class NetRecord:
    """Everything known about one trained network net[i] (or the final-phase network)."""

    round: int
    phase: str
    widths: list[int]
    epochs: int
    ad_history: list[float]
    layer_ad_history: list[list[float]]
    channel_ad: list[list[float]]
    accuracy_history: list[float]
    loss_history: list[float]
    accuracy: float
    loss: float
    params: int
    macs: int
    energy_j: float
    param_reduction: float
    mac_reduction: float
    end_reason: str
    profile: str
    epochs_to_rho: int | None
    training_complexity: float
    # Measured forward latency (ms) and its reduction against net0's (net0 / this); None
    # where record.latency is off.
    latency_ms_b1: float | None = None
    latency_ms_batch: float | None = None
    latency_reduction_b1: float | None = None
    latency_reduction_batch: float | None = None
    # Fig. 3: the mean activation of every prunable layer for the first test image.
    activation_maps: dict[str, list] | None = None

    @property
    def label(self) -> str:
        return net_label(self.phase, self.round)
