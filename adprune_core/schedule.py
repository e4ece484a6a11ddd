"""Algorithm 1 as a resumable state machine: rounds of train -> measure -> rho -> shrink -> delta.

:class:`ScheduleState` is plain data (JSON-serialisable); :class:`PruneSchedule` owns the live
model, optimizer and batches for the current network and moves the state forward one epoch at
a time. Decisions come from :func:`adprune_core.criteria.decide`, and are applied with
:meth:`PruneSchedule.advance`, so a caller that decides elsewhere (the Tune scheduler) drives
the same transitions.

Longer than 300 lines because :class:`PruneSchedule` is one state machine: its transitions
(train, measure, shrink, final phase, checkpoint) read correctly only side by side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from adprune_core.activation_maps import mean_activation_maps
from adprune_core.cost import cost_report, training_complexity
from adprune_core.criteria import Decision, classify_profile, decide
from adprune_core.data import ArrayDataset, DeviceBatches, load_dataset
from adprune_core.density import DensityMonitor
from adprune_core.latency import LatencyFigures, measure_latency
from adprune_core.models import PrunableNet, build_model, check_widths, inherit_filters
from adprune_core.spec import SweepSpec
from adprune_core.train import (
    EpochStats,
    check_precision,
    compile_failure,
    compile_model,
    evaluate,
    is_compile_failure,
    make_lr_schedule,
    make_optimizer,
    memory_format,
    resolve_device,
    set_thread_invariant,
    train_epoch,
)


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
    # where record.latency is off, and in records written before latency was measured.
    latency_ms_b1: float | None = None
    latency_ms_batch: float | None = None
    latency_reduction_b1: float | None = None
    latency_reduction_batch: float | None = None
    # Fig. 3: the mean activation of every prunable layer for the first test image.
    activation_maps: dict[str, list] | None = None

    @property
    def label(self) -> str:
        return f"net{self.round}" if self.phase == "search" else f"final(net{self.round})"


@dataclass
class ScheduleState:
    """Where a schedule is; enough, with the model checkpoint, to resume mid-round."""

    net0_widths: list[int]
    widths: list[int]
    phase: str = "search"  # search | final | done
    round: int = 0
    ad_history: list[float] = field(default_factory=list)
    layer_ad_history: list[list[float]] = field(default_factory=list)
    accuracy_history: list[float] = field(default_factory=list)
    loss_history: list[float] = field(default_factory=list)
    last_channel_ad: list[list[float]] = field(default_factory=list)
    records: list[NetRecord] = field(default_factory=list)
    stop_reason: str | None = None
    chosen_round: int | None = None
    # The current network's latency once measured at its end: kept in the checkpoint, so the
    # record that closes after a restart (a sweep's round transition) does not time it again.
    network_latency: dict[str, float] | None = None

    @property
    def epoch(self) -> int:
        return len(self.ad_history)

    @property
    def done(self) -> bool:
        return self.phase == "done"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScheduleState:
        records = [NetRecord(**r) for r in data.get("records", [])]
        return cls(**{**data, "records": records})


@dataclass(frozen=True)
class EpochResult:
    phase: str
    round: int
    epoch: int
    widths: list[int]
    ad_total: float
    layer_ad: list[float]
    accuracy: float
    loss: float
    train_accuracy: float


def round_seed(base_seed: int, phase: str, round_index: int) -> int:
    # Distinct, reproducible streams per network; the final phase gets its own.
    return base_seed * 1009 + round_index * 2 + (1 if phase == "final" else 0)


class PruneSchedule:
    """Runs one spec's whole schedule; ``state`` and :meth:`checkpoint` make it resumable."""

    def __init__(
        self,
        spec: SweepSpec,
        data: ArrayDataset | None = None,
        device: str | torch.device | None = None,
        state: ScheduleState | None = None,
    ) -> None:
        self.spec = spec
        self.data = data if data is not None else load_dataset(spec.data)
        self.device = (
            torch.device(device) if device is not None else resolve_device(spec.train.device)
        )
        check_precision(spec.train.precision, self.device)
        augment = spec.data.augment if spec.data.augment is not None else self.data.default_augment
        self.batches = DeviceBatches(self.data, self.device, augment, spec.data.crop_padding)
        net0 = check_widths(spec.model.arch, spec.model.widths)
        self.state = state if state is not None else ScheduleState(net0, list(net0))
        self.model: PrunableNet
        self._build_network()

    # ------------------------------------------------------------------ network lifecycle

    def _horizon(self) -> int:
        if self.state.phase == "final":
            return self.spec.final.epochs
        return self.spec.prune.rho.max_epochs

    def _build_network(self, parent: PrunableNet | None = None) -> None:
        train = self.spec.train
        seed = round_seed(train.seed, self.state.phase, self.state.round)
        torch.manual_seed(seed)  # weights of net[i] depend only on the seed and i
        self.model = build_model(
            self.spec.model.arch,
            self.state.widths,
            self.data.num_classes,
            self.data.input_size,
            self.data.in_channels,
        ).to(self.device, memory_format=memory_format(train.channels_last))
        self.generator = torch.Generator().manual_seed(seed)
        if parent is not None:
            inherit_filters(parent, self.model, self.generator)
        self.optimizer = make_optimizer(self.model, train)
        self.lr_schedule = make_lr_schedule(self.optimizer, train, self._horizon())
        measure_eval = self.spec.prune.measure == "eval"
        self.monitor = DensityMonitor(
            self.model, count_train=not measure_eval, count_eval=measure_eval
        )
        # Attached for the network's whole life, before its first forward: a compiled graph
        # traces the hooks in, and adding or removing hooks later would force a recompile.
        self.monitor.attach()
        if train.compile:
            # The previous network's graphs can never run again (other widths), and would
            # use up dynamo's per-function recompile limit, after which it silently runs eager.
            torch.compiler.reset()
            compile_model(self.model)

    # ------------------------------------------------------------------ one epoch

    def train_one_epoch(self) -> EpochResult:
        if self.state.done:
            raise RuntimeError("the schedule has finished")
        self.monitor.reset()  # count this epoch only, whatever ran since the last read
        try:
            stats, accuracy = self._train_and_evaluate()
        except RuntimeError as err:
            if is_compile_failure(err):
                raise compile_failure(err) from err
            raise
        reading = self.monitor.read()
        self.lr_schedule.step()
        state = self.state
        state.ad_history.append(reading.total)
        state.layer_ad_history.append(reading.layers)
        state.last_channel_ad = reading.channels
        state.accuracy_history.append(accuracy)
        state.loss_history.append(stats.loss)
        return EpochResult(
            state.phase,
            state.round,
            state.epoch,
            list(state.widths),
            reading.total,
            reading.layers,
            accuracy,
            stats.loss,
            stats.train_accuracy,
        )

    def _train_and_evaluate(self) -> tuple[EpochStats, float]:
        spec, train = self.spec, self.spec.train
        if self.device.type == "cpu":
            set_thread_invariant(train.deterministic)
        stats = train_epoch(
            self.model,
            self.batches,
            self.optimizer,
            spec.data.batch_size,
            self.generator,
            train.label_smoothing,
            train.channels_last,
            train.precision,
        )
        accuracy = evaluate(
            self.model,
            self.batches,
            spec.data.eval_batch_size,
            train.channels_last,
            train.precision,
        )
        return stats, accuracy

    def decide(self) -> Decision:
        state = self.state
        return decide(
            "final" if state.phase == "final" else "search",
            state.round,
            state.widths,
            state.ad_history,
            state.layer_ad_history[-1],
            self.spec.prune,
            self.spec.final.epochs,
        )

    # ------------------------------------------------------------------ transitions

    def advance(self, decision: Decision) -> None:
        """Apply a decision: keep training, start net[i+1], start the final phase, or stop."""
        if decision.action == "continue":
            return
        state = self.state
        self._close_record(decision)
        parent = self.model if self.spec.prune.init == "inherit" else None
        if decision.action == "next_round":
            if decision.next_widths is None:
                raise ValueError("a next_round decision needs next_widths")
            state.round += 1
            state.widths = list(decision.next_widths)
        elif decision.action == "final":
            self._end_search(decision)
            state.phase = "final"
            state.widths = list(state.records[state.chosen_round].widths)
            parent = None  # the final phase always trains the chosen widths from scratch
        else:
            if state.phase == "search":
                self._end_search(decision)
            state.phase = "done"
        self._reset_round_history()
        # The hooks hold the monitor, which holds the model: a cycle that would keep the old
        # network's (device) memory until the garbage collector happens to run.
        self.monitor.detach()
        if not state.done:
            self._build_network(parent)

    def _end_search(self, decision: Decision) -> None:
        self.state.stop_reason = decision.reason
        self.state.chosen_round = decision.chosen_round

    def _reset_round_history(self) -> None:
        state = self.state
        state.ad_history, state.layer_ad_history = [], []
        state.accuracy_history, state.loss_history = [], []
        state.last_channel_ad = []

    def _close_record(self, decision: Decision) -> None:
        state, data = self.state, self.data
        searching = state.phase == "search"
        round_index = state.round if searching else state.chosen_round
        cost = cost_report(
            self.spec.model.arch,
            state.widths,
            data.num_classes,
            data.input_size,
            data.in_channels,
            baseline_widths=state.net0_widths,
        )
        previous = state.records[-1].training_complexity if state.records else 0.0
        latency = self.latency_fields()
        record = NetRecord(
            round=int(round_index or 0),
            phase=state.phase,
            widths=list(state.widths),
            epochs=state.epoch,
            ad_history=list(state.ad_history),
            layer_ad_history=[list(x) for x in state.layer_ad_history],
            channel_ad=[list(x) for x in state.last_channel_ad],
            accuracy_history=list(state.accuracy_history),
            loss_history=list(state.loss_history),
            accuracy=state.accuracy_history[-1],
            loss=state.loss_history[-1],
            params=cost.params,
            macs=cost.macs,
            energy_j=cost.energy_j,
            param_reduction=cost.param_reduction,
            mac_reduction=cost.mac_reduction,
            end_reason=decision.rho or decision.reason,
            profile=decision.profile
            or classify_profile(state.ad_history, self.spec.prune.delta.flat_band),
            epochs_to_rho=state.epoch if decision.rho == "saturated" else None,
            training_complexity=previous + training_complexity([(state.epoch, cost.mac_reduction)]),
            **latency,
            activation_maps=self.activation_maps(),
        )
        state.records.append(record)
        state.network_latency = None  # the next network is timed afresh

    # ------------------------------------------------------------------ latency

    def network_latency(self) -> LatencyFigures | None:
        """The current network's forward latency, timed once (None if record.latency is off)."""
        spec = self.spec.record.latency
        if not spec.enabled:
            return None
        if self.state.network_latency is None:
            figures = measure_latency(
                self._hook_free_copy(),
                (self.data.in_channels, self.data.input_size, self.data.input_size),
                self.spec.data.eval_batch_size,
                spec,
                self.spec.train.precision,
                memory_format(self.spec.train.channels_last),
            )
            self.state.network_latency = dataclasses.asdict(figures)
        return LatencyFigures(**self.state.network_latency)

    def _hook_free_copy(self) -> torch.nn.Module:
        """The trained network without the density monitor's hooks (and uncompiled)."""
        with torch.random.fork_rng(devices=[]):  # its throwaway init must not move the seed
            copy = build_model(
                self.spec.model.arch,
                self.state.widths,
                self.data.num_classes,
                self.data.input_size,
                self.data.in_channels,
            )
        copy.to(self.device, memory_format=memory_format(self.spec.train.channels_last))
        copy.load_state_dict(self.model.state_dict())
        return copy

    def activation_maps(self) -> dict[str, list]:
        """Fig. 3's maps of the current network, for the first test image as it sees it."""
        image = next(iter(self.batches.test_batches(1)))[0][0]
        return mean_activation_maps(self._hook_free_copy(), image)

    def latency_fields(self) -> dict[str, float]:
        """``latency_ms_*`` and their reductions against net0 (the first record, or this
        network if it is net0); empty when latency is off."""
        figures = self.network_latency()
        if figures is None:
            return {}
        records = self.state.records
        net0_b1 = records[0].latency_ms_b1 if records else None
        net0_batch = records[0].latency_ms_batch if records else None
        return {
            "latency_ms_b1": figures.b1_ms,
            "latency_ms_batch": figures.batch_ms,
            "latency_reduction_b1": (net0_b1 or figures.b1_ms) / figures.b1_ms,
            "latency_reduction_batch": (net0_batch or figures.batch_ms) / figures.batch_ms,
        }

    # ------------------------------------------------------------------ driving

    def step(self) -> tuple[EpochResult, Decision]:
        """Train one epoch, decide, and apply the decision (the in-process path)."""
        result = self.train_one_epoch()
        decision = self.decide()
        self.advance(decision)
        return result, decision

    def run(self, on_epoch: Callable[[EpochResult, Decision], None] | None = None) -> ScheduleState:
        while not self.state.done:
            result, decision = self.step()
            if on_epoch is not None:
                on_epoch(result, decision)
        return self.state

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self) -> dict[str, Any]:
        """Schedule state plus the live network's weights, optimizer, lr schedule and RNG."""
        return {
            "state": self.state.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "generator": self.generator.get_state(),
        }

    @classmethod
    def from_checkpoint(
        cls,
        spec: SweepSpec,
        checkpoint: dict[str, Any],
        data: ArrayDataset | None = None,
        device: str | torch.device | None = None,
    ) -> PruneSchedule:
        state = ScheduleState.from_dict(checkpoint["state"])
        schedule = cls(spec, data, device, state)
        if not state.done:
            schedule.model.load_state_dict(checkpoint["model"])
            schedule.optimizer.load_state_dict(checkpoint["optimizer"])
            schedule.lr_schedule.load_state_dict(checkpoint["lr_schedule"])
            schedule.generator.set_state(checkpoint["generator"])
        return schedule


@dataclass(frozen=True)
class ScheduleSummary:
    chosen_round: int
    widths: list[int]
    accuracy: float
    param_reduction: float
    mac_reduction: float
    training_complexity: float
    baseline_complexity: float
    stop_reason: str
    rounds: int
    latency_ms_b1: float | None = None
    latency_ms_batch: float | None = None
    latency_reduction_b1: float | None = None
    latency_reduction_batch: float | None = None


def result_record(state: ScheduleState) -> NetRecord:
    """What a finished schedule delivers: its final-phase network if any, else the chosen one."""
    final = [r for r in state.records if r.phase == "final"]
    search = [r for r in state.records if r.phase == "search"]
    return final[-1] if final else search[int(state.chosen_round or 0)]


def summarize(state: ScheduleState) -> ScheduleSummary:
    """The result of a finished schedule: the final-phase network if any, else the chosen one."""
    if not state.done or state.chosen_round is None:
        raise ValueError("the schedule has not finished")
    search = [r for r in state.records if r.phase == "search"]
    result = result_record(state)
    total_epochs = sum(r.epochs for r in state.records)
    return ScheduleSummary(
        chosen_round=state.chosen_round,
        widths=list(result.widths),
        accuracy=result.accuracy,
        param_reduction=result.param_reduction,
        mac_reduction=result.mac_reduction,
        training_complexity=state.records[-1].training_complexity,
        # Eq. 1 for net0 trained for every epoch the schedule spent: its MAC reduction is 1.
        baseline_complexity=float(total_epochs),
        stop_reason=state.stop_reason or "",
        rounds=len(search),
        latency_ms_b1=result.latency_ms_b1,
        latency_ms_batch=result.latency_ms_batch,
        latency_reduction_b1=result.latency_reduction_b1,
        latency_reduction_batch=result.latency_reduction_batch,
    )


def fig3_maps(state: ScheduleState) -> dict[str, Any] | None:
    """net0's and the result network's activation maps (the paper's Fig. 3), for the driver
    to draw on the trial run; None for records from before the maps were kept."""
    net0, result = state.records[0], result_record(state)
    if net0.activation_maps is None or result.activation_maps is None:
        return None
    return {
        "input": net0.activation_maps["input"],
        "net0": net0.activation_maps["layers"],
        "chosen": result.activation_maps["layers"],
        "chosen_label": result.label,
    }
