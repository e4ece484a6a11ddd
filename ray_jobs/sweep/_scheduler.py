"""``ActivationDensityScheduler``: rho ends a round (PAUSE with net[i+1]'s widths), delta ends
the trial (STOP, or a final phase first).

Stateless across ``Tuner.restore`` (ray#30838): every decision is made from the reported
result and ``trial.config`` alone, with :func:`adprune_core.schedule.decide`, the function
``adprune-sweep run`` uses. The one thing it tracks, which trials are between rounds, only
keeps their actors cached; a restored sweep starts without it and merely restarts those
trials on new workers.

With ``resources.per_round``, each transition also writes net[i+1]'s share into
``trial.config["transition"]["resources"]``, and the trial's placement group follows it while
the trial is not running, as Tune's ``ResourceChangingScheduler`` does (``update_resources``).
Kept in the config, the share survives a retry after a failure and ``Tuner.restore``, which
rebuilds every trial's placement group from its default. ``ResourceChangingScheduler`` itself
is not composed in: it refuses ``reuse_actors`` (which keeps same-size transitions at ~0.2 s)
and resizes only on results its base scheduler CONTINUEs, with a PAUSE of its own.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator

from adprune_core.schedule import Decision, EpochReport
from ray_jobs.sweep._per_round import round_resources
from ray_jobs.sweep._share_waits import ShareWaits, decision_for
from ray_jobs.sweep._spec import SweepSpec
from ray_jobs.sweep._spec_checks import sweep_spec_from_dict
from ray_jobs.tracking.keys import TRIAL_ERROR

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

REQUIRED_FIELDS = ("phase", "round", "epoch", "widths", "ad_history", "layer_ad")


class SpecCache:
    """Each trial's spec, parsed once per config: the scheduler reads it at every result,
    and parsing it there took 1.2 s of the event loop in a 36-trial sweep."""

    def __init__(self) -> None:
        # The config's spec dict itself is kept: a new config (a round transition sets a
        # copy) is a new dict, so an identity check tells a stale entry.
        self._parsed: dict[str, tuple[dict, SweepSpec]] = {}

    def of(self, trial: Trial) -> SweepSpec:
        raw = trial.config["spec"]
        cached = self._parsed.get(trial.trial_id)
        if cached is None or cached[0] is not raw:
            cached = self._parsed[trial.trial_id] = (raw, trial_spec(trial))
        return cached[1]

    def forget(self, trial_id: str) -> None:
        self._parsed.pop(trial_id, None)


# What the scheduler does not pickle: none of it survives a restore, and Tune pickles the
# scheduler at every save of the experiment's state.
TRANSIENT = ("between_rounds", "waits", "specs")


class ActivationDensityScheduler(FIFOScheduler):
    """Acts on the method's rho and delta criteria; starts trials first-in first-out, with
    trials paused between rounds ahead of those not yet started."""

    def __init__(self) -> None:
        super().__init__()
        # Trials PAUSEd by rho that have not reported from net[i+1] yet; read by
        # :class:`RoundAwareVariantGenerator` so their actors stay cached for the restart.
        self.between_rounds: set[str] = set()
        # Trials PAUSEd while another trains the epochs they need (holding no slot).
        self.waits = ShareWaits()
        self.specs = SpecCache()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in TRANSIENT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A restored sweep starts with no knowledge of transitions (see the generator) or
        # of waiting trials, which then simply restart.
        self.__dict__.update(state)
        self.between_rounds = set()
        self.waits = ShareWaits()
        self.specs = SpecCache()

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        # Tune calls this for new, retried and restored trials; a restored one came back
        # with net0's placement group.
        fit_placement_group(trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self.forget(trial)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self.forget(trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self.forget(trial)

    def forget(self, trial: Trial) -> None:
        self.between_rounds.discard(trial.trial_id)
        self.waits.forget(trial.trial_id)
        self.specs.forget(trial.trial_id)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        """A trial PAUSEd between rounds goes before any trial not yet started; one PAUSEd
        while another trains the epochs it needs waits until it may go on (``_share_waits``).

        FIFO's default starts every PENDING trial first, so with more trials than slots a
        trial waited for a whole other trial's round before training net[i+1]. Resuming it
        at once keeps its round transition to Tune's pause-and-restart time on a reused
        actor, and finishes trials (and their MLflow records) one after another.
        """
        trials = tune_controller.get_trials()
        for trial in trials:
            if trial.status == "PAUSED":
                # Resized here, before Tune stages it: a PAUSEd trial's actor is already
                # cached under its old share, and no staged request holds the old one.
                fit_placement_group(trial)
        statuses = {trial.trial_id: trial.status for trial in trials}
        for trial in trials:
            if trial.status == "PAUSED" and self.waits.resumable(trial.trial_id, statuses):
                return trial
        for trial in trials:
            if trial.status == "PENDING":
                return trial
        return None

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        self.between_rounds.discard(trial.trial_id)
        if result.get("diverged") or result.get(TRIAL_ERROR):
            return TrialScheduler.STOP  # a retry or another round would meet it again
        missing = [k for k in REQUIRED_FIELDS if k not in result]
        if missing:
            raise ValueError(f"trial {trial} reported no {', '.join(missing)}")
        report = EpochReport.from_tune(result)
        spec = self.specs.of(trial)
        decision = decision_for(report, spec)
        self.waits.observe(trial.trial_id, report, decision)
        if decision.action == "stop" or report.schedule_done:
            return TrialScheduler.STOP
        waits = self.waits.should_wait(trial.trial_id, report, spec)
        if decision.action == "continue" and not waits:
            return TrialScheduler.CONTINUE
        if decision.action != "continue":
            trial.set_config(with_transition(trial.config, report, decision, spec))
        # Either way its actor stays cached for its restart (see the generator).
        self.between_rounds.add(trial.trial_id)
        return TrialScheduler.PAUSE


class RoundAwareVariantGenerator(BasicVariantGenerator):
    """Tune's grid/random variant generator that does not call the search finished while a
    trial is between rounds.

    Tune caches a stopping actor for reuse only while the search is unfinished or another
    trial is staged. Once every trial had started, a trial PAUSEd by rho therefore lost its
    actor, and net[i+1] waited for a new worker process to start and import torch (2-9 s
    on 2 cores). Tune ends the sweep when every trial is done and the search is finished;
    a trial between rounds is not done, so this never holds a sweep open.
    """

    def __init__(self, scheduler: ActivationDensityScheduler, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._scheduler = scheduler

    def is_finished(self) -> bool:
        return super().is_finished() and not self._scheduler.between_rounds

    def get_state(self) -> dict[str, Any] | bool:
        state = super().get_state()
        if isinstance(state, dict):
            state.pop("_scheduler", None)  # the scheduler is restored on its own
        return state


def trial_spec(trial: Trial) -> SweepSpec:
    return sweep_spec_from_dict(copy.deepcopy(trial.config["spec"]))


def with_transition(
    config: dict, report: EpochReport, decision: Decision, spec: SweepSpec | None = None
) -> dict:
    """A copy of ``config`` saying which network the trial left, and with
    ``resources.per_round``, the share to start the next one with. The restarted trainable
    needs no more: the report's checkpoint already starts the next network."""
    new_config = copy.deepcopy(config)
    new_config["transition"] = {
        "from_phase": report.phase,
        "from_round": report.round,
        "at_epoch": report.epoch,
        "decision": asdict(decision),
    }
    if spec is not None and spec.resources.per_round is not None:
        share = round_resources(
            spec.resources.cpu,
            spec.resources.gpu,
            spec.resources.per_round,
            report.next_mac_ratio if report.next_mac_ratio is not None else 1.0,
        )
        new_config["transition"]["resources"] = share.as_tune()
        # Every network's share, in order, for the trial table.
        new_config["transition_resources"] = [
            *config.get("transition_resources", []),
            share.as_tune(),
        ]
    return new_config


def placement_resources(trial: Trial) -> dict[str, float]:
    required = trial.placement_group_factory.required_resources
    return {"cpu": float(required.get("CPU", 0.0)), "gpu": float(required.get("GPU", 0.0))}


def fit_placement_group(trial: Trial) -> bool:
    """Give a trial that is not running the share its current network asks for; True when
    that changed its placement group."""
    wanted = (trial.config.get("transition") or {}).get("resources")
    if not wanted or trial.status == "RUNNING" or placement_resources(trial) == wanted:
        return False
    trial.update_resources(dict(wanted))
    return True
