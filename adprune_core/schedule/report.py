"""The epoch report: what a schedule says after every epoch, as a type.

A sweep trial hands it to Tune as a flat dict (:meth:`EpochReport.to_tune`); the scheduler,
the recorder, the progress lines and the searcher read it back by field
(:meth:`EpochReport.from_tune`). Torch-free, so the driver's readers never load torch for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adprune_core.config import LATENCY_FIELDS, net_name
from adprune_core.schedule.summary import ScheduleSummary

SUMMARY_PREFIX = "final_"


@dataclass(frozen=True)
class NetClosing:
    """What the report that ends a network adds about it, for its record."""

    layer_ad_history: list[list[float]]
    profile: str
    epochs_to_rho: int | None
    latency: dict[str, float] = field(default_factory=dict)

    def to_tune(self) -> dict[str, Any]:
        return {
            "net_layer_ad_history": self.layer_ad_history,
            "net_profile": self.profile,
            "epochs_to_rho": self.epochs_to_rho,
            **self.latency,
        }

    @classmethod
    def from_tune(cls, result: Mapping[str, Any]) -> NetClosing | None:
        if "net_profile" not in result:
            return None
        return cls(
            layer_ad_history=result.get("net_layer_ad_history", []),
            profile=result["net_profile"],
            epochs_to_rho=result.get("epochs_to_rho"),
            latency={k: result[k] for k in LATENCY_FIELDS if result.get(k) is not None},
        )


@dataclass(frozen=True)
class EpochReport:
    """One epoch of one network, with the decision taken after it."""

    phase: str
    round: int
    epoch: int
    widths: list[int]
    ad_total: float
    layer_ad: list[float]
    # The network's whole AD curve so far: what the scheduler decides from.
    ad_history: list[float]
    accuracy: float
    loss: float
    train_accuracy: float
    params: int
    macs: int
    energy_j: float
    param_reduction: float
    mac_reduction: float
    # Eq. 1 so far, this network's epochs included.
    training_complexity: float
    net0_widths: list[int]
    decision: str
    decision_reason: str
    profile: str
    schedule_done: bool
    closing: NetClosing | None = None
    summary: ScheduleSummary | None = None
    fig3: dict[str, Any] | None = None
    # Set by the sweep's trainable: where the epoch ran and on what share.
    node_ip: str = ""
    pid: int = 0
    resources_cpu: float | None = None
    resources_gpu: float | None = None
    # MACs of the next network over net0's, with resources.per_round only.
    next_mac_ratio: float | None = None
    checkpoint_fallback: str | None = None
    # Train each shared network once: whether this epoch was loaded from the epoch store,
    # how many of this network's epochs were, and the trainer that trained them.
    shared: bool = False
    shared_epochs: int = 0
    trained_by: str = ""
    # The network's sharing key ("" without sharing), and, where another trial was training
    # the next epoch this trial needs when it reported, that epoch's key, number and
    # trainer: the scheduler then PAUSEs the trial instead of letting it wait in its slot.
    share_key: str = ""
    awaits_key: str = ""
    awaits_epoch: int = 0
    awaits_trainer: str = ""
    # Over the whole schedule so far: epochs loaded, and epochs in net0 units (each costs
    # 1 / its network's MAC reduction), all of them and those trained here.
    trial_shared_epochs: int = 0
    net0_epochs: float = 0.0
    net0_epochs_trained: float = 0.0
    # The trainable process's time and memory, only where a benchmark asks for them.
    process: dict[str, float] | None = None

    @property
    def ends_network(self) -> bool:
        return self.decision != "continue"

    @property
    def awaits_another_trial(self) -> bool:
        return bool(self.awaits_key)

    def with_fields(self, **changes: Any) -> EpochReport:
        return dataclasses.replace(self, **changes)

    def to_tune(self) -> dict[str, Any]:
        """The flat dict Tune records (``result.json``) and hands to the driver's readers."""
        flat = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for nested in ("closing", "summary", "process"):
            flat.pop(nested)
        for optional in (
            "fig3",
            "resources_cpu",
            "resources_gpu",
            "next_mac_ratio",
            "checkpoint_fallback",
        ):
            if flat[optional] is None:
                flat.pop(optional)
        if self.closing is not None:
            flat.update(self.closing.to_tune())
        if self.summary is not None:
            summary = dataclasses.asdict(self.summary)
            flat.update({f"{SUMMARY_PREFIX}{k}": v for k, v in summary.items()})
            flat["fig3"] = self.fig3
        flat.update(self.process or {})
        return flat

    @classmethod
    def from_tune(cls, result: Mapping[str, Any]) -> EpochReport:
        """The report inside a Tune result (which adds keys of its own, ignored here)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"closing", "summary", "process"}
        values = {k: result[k] for k in names if k in result}
        summary_names = [f.name for f in dataclasses.fields(ScheduleSummary)]
        summary = None
        if result.get("schedule_done") and f"{SUMMARY_PREFIX}chosen_round" in result:
            summary = ScheduleSummary(**{k: result[f"{SUMMARY_PREFIX}{k}"] for k in summary_names})
        return cls(**values, closing=NetClosing.from_tune(result), summary=summary)


@dataclass(frozen=True)
class DivergedReport:
    """The last report of a trial whose loss became NaN or infinite: the scheduler STOPs it,
    since a retry from its checkpoint would diverge again."""

    phase: str
    round: int
    epoch: int
    widths: list[int]
    reason: str
    node_ip: str = ""
    pid: int = 0

    @property
    def description(self) -> str:
        return f"{self.reason} in {net_name(self.phase, self.round)} epoch {self.epoch}"

    def to_tune(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "round": self.round,
            "epoch": self.epoch,
            "widths": list(self.widths),
            "diverged": self.description,
            "decision": "diverged",
            "decision_reason": self.reason,
            "node_ip": self.node_ip,
            "pid": self.pid,
            "schedule_done": False,
        }
