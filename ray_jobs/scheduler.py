"""``ActivationDensityScheduler``: rho ends a round (PAUSE with net[i+1]'s widths), delta ends
the trial (STOP, or a final phase first).

Stateless across ``Tuner.restore`` (ray#30838): every decision is made from the reported
result and ``trial.config`` alone, with :func:`adprune_core.criteria.decide`, the function
``adprune-sweep run`` uses.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from adprune_core.criteria import Decision, decide
from adprune_core.spec import SweepSpec, spec_from_dict

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

REQUIRED_FIELDS = ("phase", "round", "epoch", "widths", "ad_history", "layer_ad")


class ActivationDensityScheduler(FIFOScheduler):
    """Runs trials first-in first-out and acts on the method's rho and delta criteria."""

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if result.get("diverged"):
            return TrialScheduler.STOP
        missing = [k for k in REQUIRED_FIELDS if k not in result]
        if missing:
            raise ValueError(f"trial {trial} reported no {', '.join(missing)}")
        spec = trial_spec(trial)
        decision = decision_for(result, spec)
        if decision.action == "continue":
            return TrialScheduler.CONTINUE
        if decision.action == "stop" or result.get("schedule_done"):
            return TrialScheduler.STOP
        trial.set_config(with_transition(trial.config, result, decision))
        return TrialScheduler.PAUSE


def trial_spec(trial: Trial) -> SweepSpec:
    return spec_from_dict(copy.deepcopy(trial.config["spec"]))


def decision_for(result: dict, spec: SweepSpec) -> Decision:
    history = result["ad_history"]
    return decide(
        result["phase"],
        result["round"],
        result["widths"],
        history,
        result["layer_ad"],
        spec.prune,
        spec.final.epochs,
    )


def with_transition(config: dict, result: dict, decision: Decision) -> dict:
    """A copy of ``config`` telling the restarted trainable which network to start."""
    new_config = copy.deepcopy(config)
    new_config["transition"] = {
        "from_phase": result["phase"],
        "from_round": result["round"],
        "at_epoch": result["epoch"],
        "decision": asdict(decision),
    }
    return new_config
