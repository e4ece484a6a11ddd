"""The spec's ``search_alg`` as a Tune search algorithm.

``random`` and ``grid`` are Tune's variant generator (:class:`RoundAwareVariantGenerator`).
``optuna`` is Tune's :class:`~ray.tune.search.optuna.OptunaSearch` with Optuna's TPE, NSGA-II
or GP sampler, capped by Tune's :class:`~ray.tune.search.ConcurrencyLimiter`; metric and mode
are lists for a multi-objective study.

What the sampler learns from: Tune hands a searcher the *last* report of a completed trial.
Here that is the report that ended the schedule, which carries the chosen network's (or the
final-phase network's) values as ``final_<metric>``; its plain ``accuracy`` belongs to the
last round trained, usually the one delta rejected. :class:`ChosenNetworkSearch` passes Optuna
those ``final_`` values, and tells it a trial FAILED when it diverged, errored or ended without
finishing its schedule, never a made-up value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from ray.tune.search import ConcurrencyLimiter, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from adprune_core.schedule import EpochReport
from ray_jobs.sweep._scheduler import ActivationDensityScheduler, RoundAwareVariantGenerator
from ray_jobs.sweep._spec import MODEL_BASED, SearchAlgSpec, parse_search_objectives, result_key
from ray_jobs.sweep._trial_errors import failure_reason

if TYPE_CHECKING:
    from ray_jobs.sweep._spec import SweepSpec


def chosen_values(result: dict[str, Any] | None, columns: list[str]) -> list[float] | None:
    """The chosen network's objective values, or None when the trial did not finish."""
    if not result or result.get("diverged") or not result.get("schedule_done"):
        return None
    summary = EpochReport.from_tune(result).summary
    if summary is None:
        return None
    values = [getattr(summary, column, None) for column in columns]
    if any(v is None for v in values):
        return None
    return [float(v) for v in values]


class ChosenNetworkSearch(OptunaSearch):
    """OptunaSearch told each trial's chosen-network values, or that it failed."""

    def __init__(self, alg: SearchAlgSpec, **kwargs: Any) -> None:
        objectives = parse_search_objectives(alg.objectives)
        self.objective_keys = [result_key(o) for o in objectives]
        self.objective_names = [o.column for o in objectives]
        modes = [o.mode for o in objectives]
        single = len(objectives) == 1
        super().__init__(
            metric=self.objective_keys[0] if single else self.objective_keys,
            mode=modes[0] if single else modes,
            sampler=make_sampler(alg),
            **kwargs,
        )

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Per-epoch results are one round's, not the trial's: the rho/delta scheduler acts
        on them, Optuna does not (it would prune on a round's accuracy)."""

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        values = None if error else chosen_values(result, self.objective_names)
        if values is None:
            reason = failure_reason(result or {}) or ("error" if error else "unfinished")
            click.echo(f"search: trial {trial_id} failed ({reason}); told the sampler so")
            super().on_trial_complete(trial_id, None, error=True)
            return
        told = dict(zip(self.objective_keys, values))
        shown = ", ".join(f"{n} {v:.4g}" for n, v in zip(self.objective_names, values))
        click.echo(f"search: trial {trial_id} -> {shown}")
        super().on_trial_complete(trial_id, told, error=False)


class RoundAwareSearchGenerator(SearchGenerator):
    """Tune's searcher wrapper that, like :class:`RoundAwareVariantGenerator`, does not call
    the search finished while a trial is between rounds (so its actor stays cached)."""

    def __init__(self, searcher: Any, scheduler: ActivationDensityScheduler) -> None:
        super().__init__(searcher)
        self._scheduler = scheduler

    def is_finished(self) -> bool:
        return super().is_finished() and not self._scheduler.between_rounds

    def next_trial(self) -> Any:
        # SearchGenerator asks is_finished() whether to create a trial: num_samples alone
        # decides that, whatever trials are between rounds.
        if super().is_finished():
            return None
        return super().next_trial()

    @property
    def metric(self) -> None:
        """None, so that Tune does not demand the objectives in every per-epoch result:
        they exist only in the report that ends the schedule, which the searcher reads
        when the trial completes."""
        return None


def make_sampler(alg: SearchAlgSpec) -> Any:
    import optuna

    # Optuna's INFO lines ("A new study created in memory") would interleave with ours.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if alg.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=alg.seed, population_size=alg.population_size)
    if alg.sampler == "gp":
        return optuna.samplers.GPSampler(seed=alg.seed, n_startup_trials=alg.startup_trials)
    return optuna.samplers.TPESampler(seed=alg.seed, n_startup_trials=alg.startup_trials)


def trials_that_fit(spec: SweepSpec, resources: dict[str, float]) -> int:
    """How many trials the cluster runs at once (``max_concurrent: 0``), at least one."""
    slots = int(resources.get("CPU", 1.0) // spec.resources.cpu)
    if spec.resources.gpu > 0:
        slots = min(slots, int(resources.get("GPU", 0.0) // spec.resources.gpu))
    return max(1, slots)


def make_search_alg(
    spec: SweepSpec, scheduler: ActivationDensityScheduler, max_concurrent: int
) -> Any:
    """Tune's search algorithm for the spec; ``max_concurrent`` 0 means as many as fit."""
    alg = spec.search_alg
    if alg.name not in MODEL_BASED:
        kwargs = {} if alg.seed is None else {"random_state": alg.seed}
        return RoundAwareVariantGenerator(scheduler, max_concurrent=max_concurrent, **kwargs)
    import ray

    limit = max_concurrent or trials_that_fit(spec, ray.cluster_resources())
    searcher = ConcurrencyLimiter(ChosenNetworkSearch(alg), max_concurrent=limit)
    return RoundAwareSearchGenerator(searcher, scheduler)
