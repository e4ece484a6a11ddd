"""adprune-sweep on Ray Tune and MLflow, for scripts as well as the CLI.

Three rooms, with imports flowing one way (``cli`` -> ``sweep`` -> ``tracking`` and
``cli`` -> ``results`` -> ``tracking``):

- :mod:`ray_jobs.sweep`: the Tune side (trainable, scheduler, launch);
- :mod:`ray_jobs.tracking`: writing MLflow (journal, run keys, recorder, Tune callback);
- :mod:`ray_jobs.results`: reading sweeps back (records, compare, the Pareto front, ui).

This package joins them: :func:`launch` runs a sweep whose sweep run ends with its own front.
Everything else is exported from where it lives, loaded on first use::

    from ray_jobs import LaunchOptions, launch, load_sweep_spec

    result = launch(load_sweep_spec("sweeps/quickstart.yaml"), LaunchOptions(name="mine"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adprune_core._exports import lazy_exports

if TYPE_CHECKING:
    from ray_jobs.results import ReferenceSpec
    from ray_jobs.sweep import LaunchOptions, SweepResult
    from ray_jobs.sweep._spec import SweepSpec

__getattr__, __dir__, _lazy_names = lazy_exports(
    __name__,
    {
        "ActivationDensityScheduler": ".sweep",
        "RoundAwareVariantGenerator": ".sweep",
        "adprune_trainable": ".sweep",
        "LaunchOptions": ".sweep",
        "LaunchError": ".sweep",
        "SweepResult": ".sweep",
        "SweepInterrupted": ".sweep",
        "SweepSpec": ".sweep",
        "load_sweep_spec": ".sweep",
        "compare_trials": ".results",
        "export_pareto": ".results",
        "load_networks": ".results",
        "load_trials": ".results",
    },
)
__all__ = sorted([*_lazy_names, "launch"])


def launch(
    spec: SweepSpec | None,
    options: LaunchOptions | None = None,
    reference: ReferenceSpec | None = None,
) -> SweepResult:
    """Run a sweep of ``spec`` (a :class:`ray_jobs.sweep.SweepSpec`) with Ray Tune, recording
    sweep -> trial -> net[i] runs in MLflow and, at the end, the sweep's accuracy/MAC front
    on its sweep run (with its hypervolume, also logged after every completed trial).
    ``options`` is a :class:`LaunchOptions`; returns a :class:`SweepResult`.

    With ``options.resume``, ``spec`` may be None: the sweep goes on with the spec it was
    launched with. SIGINT or SIGTERM stops the sweep with its state saved, and raises
    :class:`SweepInterrupted`. With ``options.register_as``, the sweep's chosen network (the
    best-accuracy network with a logged model on its accuracy/MAC front) is registered in
    the MLflow Model Registry under that name once the sweep ends.

    ``reference`` (the spec's ``pareto.reference``, e.g. ``parse_reference("accuracy=net0-2")``)
    sets the point the sweep run's hypervolume is scored against; by default 5 points below
    the experiment's earliest net0, and 1x MACs.
    """
    import functools

    from ray_jobs.results import register_sweep_choice, sweep_report, trial_end_hypervolume
    from ray_jobs.sweep import launch as launch_sweep

    end_report, trial_report = sweep_report, trial_end_hypervolume
    if reference is not None:  # a partial of module functions pickles with the sweep's state
        end_report = functools.partial(sweep_report, reference=reference)
        trial_report = functools.partial(trial_end_hypervolume, reference=reference)
    result = launch_sweep(spec, options, sweep_end_report=end_report, trial_end_report=trial_report)
    if options is not None and options.register_as:
        register_sweep_choice(
            result.tracking_uri, result.experiment, result.sweep_id, options.register_as
        )
    return result
