"""Waiting trials hold no slot: the scheduler's side of training each shared network once.

A trial that reports that the next epoch it needs is being trained by another trial right
now (``awaits_key``, ``awaits_epoch``, ``awaits_trainer`` in its report, with a checkpoint)
is PAUSEd, and its slot goes to another trial. It stays PAUSEd until one of:

- its own decision, computed with :func:`decision_for` on the reports of that network's
  epochs (any trial's: they are identical), leaves the round at an epoch already trained: it
  restarts from its checkpoint, loads those epochs from the epoch store and goes on with its
  own next widths (the fork);
- the trainer has left that network, ended, or is not running: it restarts and carries on,
  training what is not stored yet;
- no trial reported that network for :data:`WAIT_LIMIT_S`: it restarts and waits in its slot
  (the epoch store then takes a dead trainer's claim over).

Restarting the trial from its own checkpoint and loading the trainer's epochs is the fork.
Tune's ``PopulationBasedTraining`` forks by restoring a trial from another trial's checkpoint
(``trial.temporary_state.restoring_from``); here the epoch store holds every trained epoch's
whole state by content, so the forked trial needs no copy of the other's Tune checkpoint, and
``num_to_keep`` deleting those cannot take a fork point away.

Nothing here is needed for correct results: a trial restarted too early loads or trains the
same epochs. It is lost on ``Tuner.restore``, after which waiting trials simply restart.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adprune_core.schedule import Decision, EpochReport, decide

if TYPE_CHECKING:
    from ray_jobs.sweep._spec import SweepSpec

# As the epoch store's claim timeout: after this long with no news of the network, the
# waiting trial restarts and waits in its slot, as without this module.
WAIT_LIMIT_S = 600.0


def decision_for(report: EpochReport, spec: SweepSpec) -> Decision:
    """The trial's decision, made from a report alone with the function ``run`` uses."""
    return decide(
        report.phase,  # type: ignore[arg-type]
        report.round,
        report.widths,
        report.ad_history,
        report.layer_ad,
        spec.prune,
        spec.final.epochs,
    )


@dataclass
class Wait:
    """A PAUSEd trial waiting for epoch ``epoch`` of network ``key``, trained by ``trainer``."""

    key: str
    epoch: int
    trainer: str
    spec: SweepSpec
    since: float


class ShareWaits:
    """Which PAUSEd trials wait for another's epochs, and when each may restart."""

    def __init__(self) -> None:
        self.waiting: dict[str, Wait] = {}
        # Every network's reported epochs, by key and epoch: what waiting trials decide on.
        self.reports: dict[str, dict[int, EpochReport]] = {}
        # Each trial's last reported network, and whether its decision there left it.
        self.position: dict[str, tuple[str, bool]] = {}
        self.last_news: dict[str, float] = {}

    def observe(self, trial_id: str, report: EpochReport, decision: Decision) -> None:
        """Take a trial's report: the trial is running again, and trials waiting for its
        network may now restart."""
        self.waiting.pop(trial_id, None)
        key = report.share_key
        if not key:
            self.position.pop(trial_id, None)
            return
        # Only what decisions read is kept: a network's last report also carries its
        # closing figures and, a trial's last, the summary and Fig. 3's maps.
        slim = dataclasses.replace(report, closing=None, summary=None, fig3=None, process=None)
        self.reports.setdefault(key, {})[report.epoch] = slim
        self.last_news[key] = time.monotonic()
        self.position[trial_id] = (key, decision.action != "continue")
        for waiter, wait in list(self.waiting.items()):
            if wait.key == key and report.epoch >= wait.epoch and leaves(report, wait.spec):
                del self.waiting[waiter]

    def should_wait(self, trial_id: str, report: EpochReport, spec: SweepSpec) -> bool:
        """Whether the trial is to be PAUSEd until the epochs it awaits are trained (and it
        is now counted as waiting)."""
        if not report.awaits_another_trial or report.awaits_trainer == trial_id:
            return False
        wait = Wait(
            report.awaits_key,
            report.awaits_epoch,
            report.awaits_trainer,
            spec,
            time.monotonic(),
        )
        known = self.reports.get(wait.key, {})
        if any(epoch >= wait.epoch and leaves(r, spec) for epoch, r in known.items()):
            return False  # its fork point is trained already
        self.waiting[trial_id] = wait
        return True

    def resumable(self, trial_id: str, statuses: dict[str, str]) -> bool:
        """Whether a PAUSEd trial may restart now (it is no longer counted as waiting)."""
        wait = self.waiting.get(trial_id)
        if wait is None:
            return True
        quiet = time.monotonic() - max(wait.since, self.last_news.get(wait.key, 0.0))
        if self.trainer_left(wait, statuses) or quiet > WAIT_LIMIT_S:
            del self.waiting[trial_id]
            return True
        return False

    def trainer_left(self, wait: Wait, statuses: dict[str, str]) -> bool:
        if statuses.get(wait.trainer) != "RUNNING":
            return True
        position = self.position.get(wait.trainer)
        if position is None:
            return False  # no report yet: it is on its first network
        key, left = position
        # On the awaited network unless it left it; past another it left, it is on the next.
        return left if key == wait.key else not left

    def forget(self, trial_id: str) -> None:
        """A trial ended, failed or was removed."""
        self.waiting.pop(trial_id, None)
        self.position.pop(trial_id, None)


def leaves(report: EpochReport, spec: SweepSpec) -> bool:
    return decision_for(report, spec).action != "continue"
