"""The network being trained: model, optimizer, lr schedule, batch generator and density
monitor, built together for one net[i] and thrown away together when it ends."""

from __future__ import annotations

from typing import Any

import torch

from adprune_core.config import DataShape, ScheduleSpec
from adprune_core.data import DeviceBatches
from adprune_core.engine import (
    DensityMonitor,
    DensityReading,
    EpochStats,
    compile_failure,
    compile_model,
    evaluate,
    is_compile_failure,
    make_lr_schedule,
    make_optimizer,
    memory_format,
    set_thread_invariant,
    train_epoch,
)
from adprune_core.nets import PrunableNet, build_model, inherit_filters
from adprune_core.schedule.epoch_store import StoredState
from adprune_core.schedule.state import round_seed


class LiveNetwork:
    """net[i] (or the final-phase network) with everything that trains it."""

    def __init__(
        self,
        spec: ScheduleSpec,
        widths: list[int],
        phase: str,
        round_index: int,
        shape: DataShape,
        device: torch.device,
        horizon: int,
        parent: PrunableNet | None = None,
    ) -> None:
        self.spec, self.widths, self.shape, self.device = spec, list(widths), shape, device
        train = spec.train
        seed = round_seed(train.seed, phase, round_index)
        torch.manual_seed(seed)  # weights of net[i] depend only on the seed and i
        # A stored epoch's state not read yet (see ``restore``): whatever reads the model,
        # optimizer, lr schedule or generator reads it first.
        self._stored: StoredState | None = None
        self._model: PrunableNet = build_model(
            spec.model.arch, self.widths, **shape.as_kwargs(), kwargs=spec.model.kwargs
        ).to(device, memory_format=memory_format(train.channels_last))
        self.generator = torch.Generator().manual_seed(seed)
        if parent is not None:
            inherit_filters(parent, self.model, self.generator)
        self.optimizer = make_optimizer(self.model, train)
        self.lr_schedule = make_lr_schedule(self.optimizer, train, horizon)
        measure_eval = spec.prune.measure == "eval"
        self.monitor = DensityMonitor(
            self.model,
            count_train=not measure_eval,
            count_eval=measure_eval,
            group_density=spec.prune.group_density,
        )
        # Attached for the network's whole life, before its first forward: a compiled graph
        # traces the hooks in, and adding or removing hooks later would force a recompile.
        self.monitor.attach()
        if train.compile:
            # The previous network's graphs can never run again (other widths), and would
            # use up dynamo's per-function recompile limit, after which it silently runs eager.
            torch.compiler.reset()
            compile_model(self.model)

    @property
    def model(self) -> PrunableNet:
        self._settle()
        return self._model

    def restore(self, saved: dict[str, Any] | StoredState) -> None:
        """Take a saved state now, or a stored epoch's state when it is first needed: a
        schedule that loads several stored epochs in a row reads only the last one's."""
        self._forget_stored()
        if isinstance(saved, StoredState):
            self._stored = saved
        else:
            self.load_state_dict(saved)

    def _settle(self) -> None:
        stored, self._stored = self._stored, None
        if stored is not None:
            self.load_state_dict(stored.read())

    def _forget_stored(self) -> None:
        stored, self._stored = self._stored, None
        if stored is not None:
            stored.close()

    def train_epoch(self, batches: DeviceBatches) -> tuple[EpochStats, float, DensityReading]:
        """One epoch of SGD, then evaluation; the epoch's training stats, test accuracy and
        densities (counted on this epoch only)."""
        self._settle()
        self.monitor.reset()
        try:
            stats, accuracy = self._train_and_evaluate(batches)
        except RuntimeError as err:
            if is_compile_failure(err):
                raise compile_failure(err) from err
            raise
        reading = self.monitor.read()
        self.lr_schedule.step()
        return stats, accuracy, reading

    def _train_and_evaluate(self, batches: DeviceBatches) -> tuple[EpochStats, float]:
        data, train = self.spec.data, self.spec.train
        if self.device.type == "cpu":
            set_thread_invariant(train.deterministic)
        stats = train_epoch(
            self.model,
            batches,
            self.optimizer,
            data.batch_size,
            self.generator,
            train.label_smoothing,
            train.channels_last,
            train.precision,
        )
        accuracy = evaluate(
            self.model, batches, data.eval_batch_size, train.channels_last, train.precision
        )
        return stats, accuracy

    def hook_free_copy(self) -> torch.nn.Module:
        """The trained network without the density monitor's hooks (and uncompiled)."""
        self._settle()
        with torch.random.fork_rng(devices=[]):  # its throwaway init must not move the seed
            copy = build_model(
                self.spec.model.arch,
                self.widths,
                **self.shape.as_kwargs(),
                kwargs=self.spec.model.kwargs,
            )
        copy.to(self.device, memory_format=memory_format(self.spec.train.channels_last))
        copy.load_state_dict(self.model.state_dict())
        return copy

    def release(self) -> None:
        # The hooks hold the monitor, which holds the model: a cycle that would keep the old
        # network's (device) memory until the garbage collector happens to run.
        self.monitor.detach()

    def state_dict(self) -> dict[str, Any]:
        self._settle()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self._forget_stored()
        self._model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.lr_schedule.load_state_dict(saved["lr_schedule"])
        self.generator.set_state(saved["generator"])
