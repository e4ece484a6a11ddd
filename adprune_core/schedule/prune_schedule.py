"""Algorithm 1 as a resumable state machine: rounds of train -> measure -> rho -> shrink -> delta.

:class:`PruneSchedule` steps one epoch at a time: it trains the live network, decides with
:func:`~adprune_core.schedule.criteria.decide`, and on any decision that ends the network closes
its record and moves to the next one before it reports. So a network's record closes in one
place whatever the decision, and a checkpoint taken after a step always starts where the next
step goes on: mid-round, or at epoch 0 of net[i+1]. :func:`run_loop` is the one outer loop,
used by ``run`` and by a sweep trial alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from adprune_core.config import LATENCY_FIELDS, ScheduleSpec, training_complexity
from adprune_core.data import ArrayDataset, DeviceBatches, load_dataset
from adprune_core.engine import check_precision, resolve_device
from adprune_core.nets import PrunableNet, check_widths, cost_report
from adprune_core.schedule.closing import close_record, measure_probes
from adprune_core.schedule.criteria import Decision, decide
from adprune_core.schedule.epoch_store import ShareSettings
from adprune_core.schedule.network import LiveNetwork
from adprune_core.schedule.report import DivergedReport, EpochReport, NetClosing
from adprune_core.schedule.sharing import EpochSharing
from adprune_core.schedule.state import ScheduleState, transition
from adprune_core.schedule.summary import fig3_maps, summarize


@dataclass(frozen=True)
class EpochMeasures:
    """What one epoch measured on the live network: densities, test accuracy, loss."""

    ad_total: float
    layer_ad: list[float]
    accuracy: float
    loss: float
    train_accuracy: float


class PruneSchedule:
    """Runs one spec's whole schedule; ``state`` and :meth:`checkpoint` make it resumable."""

    def __init__(
        self,
        spec: ScheduleSpec,
        data: ArrayDataset | None = None,
        device: str | torch.device | None = None,
        state: ScheduleState | None = None,
        share: ShareSettings | None = None,
    ) -> None:
        self.spec = spec
        self.data = data if data is not None else load_dataset(spec.data)
        self.device = (
            torch.device(device) if device is not None else resolve_device(spec.train.device)
        )
        check_precision(spec.train.precision, self.device)
        augment = spec.data.augment if spec.data.augment is not None else self.data.default_augment
        self.batches = DeviceBatches(self.data, self.device, augment, spec.data.crop_padding)
        net0 = check_widths(spec.model.arch, spec.model.widths, spec.model.kwargs)
        self.state = state if state is not None else ScheduleState(net0, list(net0))
        self.network: LiveNetwork | None = None
        # The weights of the network the last step closed, for its network file; kept only
        # until the next step.
        self.closed_weights: dict[str, torch.Tensor] | None = None
        self.sharing = EpochSharing(share)
        if not self.state.done:
            self.network = self._build_network()
            self.sharing.start_network(spec, self.state, self.device)

    @property
    def model(self) -> PrunableNet:
        if self.network is None:
            raise RuntimeError("the schedule has finished")
        return self.network.model

    def _build_network(self, parent: PrunableNet | None = None) -> LiveNetwork:
        state = self.state
        horizon = (
            self.spec.final.epochs if state.phase == "final" else self.spec.prune.rho.max_epochs
        )
        return LiveNetwork(
            self.spec,
            state.widths,
            state.phase,
            state.round,
            self.data.shape,
            self.device,
            horizon,
            parent,
        )

    # ------------------------------------------------------------------ stepping

    def train_one_epoch(self) -> EpochMeasures:
        """Train and measure one epoch of the live network (or load it from the epoch store,
        where another schedule trained it), without deciding anything."""
        if self.network is None:
            raise RuntimeError("the schedule has finished")
        network = self.network
        self.closed_weights = None
        entry = self.sharing.epoch(
            self.state.epoch + 1,
            self.device,
            lambda: {**self._train_epoch(network), "network": network.state_dict()},
            lambda loaded: network.restore(loaded["network"]),
        )
        self.state.history.append(
            entry["ad_total"],
            entry["layer_ad"],
            entry["channel_ad"],
            entry["accuracy"],
            entry["loss"],
        )
        return EpochMeasures(
            entry["ad_total"],
            list(entry["layer_ad"]),
            entry["accuracy"],
            entry["loss"],
            entry["train_accuracy"],
        )

    def _train_epoch(self, network: LiveNetwork) -> dict[str, Any]:
        """One epoch trained here: its measures, as the epoch store keeps them."""
        stats, accuracy, reading = network.train_epoch(self.batches)
        return {
            "ad_total": reading.total,
            "layer_ad": list(reading.layers),
            "channel_ad": reading.channels,
            "accuracy": accuracy,
            "loss": stats.loss,
            "train_accuracy": stats.train_accuracy,
            "trainer": self.sharing.trainer,
        }

    def decide(self) -> Decision:
        state = self.state
        return decide(
            state.decision_phase,
            state.round,
            state.widths,
            state.history.ad,
            state.history.layer_ad[-1],
            self.spec.prune,
            self.spec.final.epochs,
        )

    def step(self) -> EpochReport:
        """One epoch, its decision, and (when the network ends) its record and the next one."""
        measures = self.train_one_epoch()
        decision = self.decide()
        self.sharing.decided(self.state.epoch, decision.action == "continue")
        before = self.state
        report = self._epoch_report(before, decision, measures.train_accuracy)
        self.sharing.count(report.mac_reduction)
        report = report.with_fields(**self.sharing.report_fields())
        self.advance(decision)
        if decision.action == "continue":
            return report
        closed = self.state.records[-1]
        report = report.with_fields(
            training_complexity=closed.training_complexity,
            closing=NetClosing(
                layer_ad_history=closed.layer_ad_history,
                profile=closed.profile,
                epochs_to_rho=closed.epochs_to_rho,
                latency={
                    key: getattr(closed, key)
                    for key in LATENCY_FIELDS
                    if getattr(closed, key) is not None
                },
            ),
            schedule_done=self.state.done,
        )
        if self.state.done:
            report = report.with_fields(summary=summarize(self.state), fig3=fig3_maps(self.state))
        return report

    def _epoch_report(
        self, state: ScheduleState, decision: Decision, train_accuracy: float
    ) -> EpochReport:
        history = state.history
        cost = cost_report(
            self.spec.model.arch,
            state.widths,
            **self.data.shape.as_kwargs(),
            baseline_widths=state.net0_widths,
            kwargs=self.spec.model.kwargs,
        )
        previous = state.records[-1].training_complexity if state.records else 0.0
        return EpochReport(
            phase=state.decision_phase,
            round=state.record_round,
            epoch=history.epochs,
            widths=list(state.widths),
            ad_total=history.ad[-1],
            layer_ad=list(history.layer_ad[-1]),
            ad_history=list(history.ad),
            accuracy=history.accuracy[-1],
            loss=history.loss[-1],
            train_accuracy=train_accuracy,
            params=cost.params,
            macs=cost.macs,
            energy_j=cost.energy_j,
            param_reduction=cost.param_reduction,
            mac_reduction=cost.mac_reduction,
            training_complexity=previous
            + training_complexity([(history.epochs, cost.mac_reduction)]),
            net0_widths=list(state.net0_widths),
            decision=decision.action,
            decision_reason=decision.reason,
            profile=decision.profile or "",
            schedule_done=False,
            pid=os.getpid(),
        )

    def diverged_report(self, reason: str) -> DivergedReport:
        state = self.state
        return DivergedReport(
            phase=state.decision_phase,
            round=state.record_round,
            epoch=state.epoch + 1,
            widths=list(state.widths),
            reason=reason,
            pid=os.getpid(),
        )

    def advance(self, decision: Decision) -> None:
        """Apply a decision: keep training, or close the network's record and start net[i+1],
        the final phase, or stop."""
        if decision.action == "continue":
            return
        network = self.network
        if network is None:
            raise RuntimeError("the schedule has finished")
        probes = self.sharing.probes(
            self.state.epoch, self.device, lambda: measure_probes(self.spec, network, self.batches)
        )
        record = close_record(self.spec, self.state, decision, network, probes)
        self.state.records.append(record)
        parent_part = self.sharing.parent_part(self.state.epoch)
        self.state = transition(self.state, decision)
        parent = network.model if self.spec.prune.init == "inherit" else None
        if decision.action == "final":
            parent = None  # the final phase always trains the chosen widths from scratch
        network.release()
        self.closed_weights = network.model.state_dict()
        self.network = None if self.state.done else self._build_network(parent)
        if self.network is not None:
            inherits = parent is not None
            self.sharing.start_network(
                self.spec, self.state, self.device, parent_part if inherits else None, inherits
            )

    def run(self, on_report: Callable[[EpochReport], None] | None = None) -> ScheduleState:
        return run_loop(self, on_report or (lambda _report: None))

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self) -> dict[str, Any]:
        """Schedule state plus the live network's weights, optimizer, lr schedule and RNG."""
        saved: dict[str, Any] = {"state": self.state.to_dict()}
        if self.network is not None:
            saved.update(self.network.state_dict())
            saved["sharing"] = self.sharing.state_dict()
        return saved

    @classmethod
    def from_checkpoint(
        cls,
        spec: ScheduleSpec,
        checkpoint: dict[str, Any],
        data: ArrayDataset | None = None,
        device: str | torch.device | None = None,
        share: ShareSettings | None = None,
    ) -> PruneSchedule:
        state = ScheduleState.from_dict(checkpoint["state"])
        schedule = cls(spec, data, device, state, share)
        if schedule.network is not None:
            schedule.network.load_state_dict(checkpoint)
            inherited = spec.prune.init == "inherit" and state.phase == "search" and state.round
            schedule.sharing.load_state_dict(checkpoint.get("sharing"), bool(inherited))
        return schedule


def run_loop(schedule: PruneSchedule, on_report: Callable[[EpochReport], None]) -> ScheduleState:
    """The outer loop of Algorithm 1: step until the schedule is done, handing every epoch's
    report to ``on_report`` (the progress lines of ``run``, or Tune's report in a trial)."""
    while not schedule.state.done:
        on_report(schedule.step())
    return schedule.state
