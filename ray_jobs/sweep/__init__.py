"""The Tune side of a sweep: every trial runs a whole prune schedule.

- ``_trainable``: the function trainable (:func:`adprune_trainable`), one schedule per trial;
  ``_trial_resources``: the share Tune granted it (threads, GPU memory) and the next
  network's MACs, which ``resources.per_round`` scales the next share by.
- ``_scheduler``: :class:`ActivationDensityScheduler` (the rho and delta decisions) and
  :class:`RoundAwareVariantGenerator` (grid/random search that keeps actors between rounds).
- ``_spec``: :class:`SweepSpec`, the schedule spec plus the sections only a sweep reads;
  ``_spec_checks``: its search checks and loading
  (:func:`load_sweep_spec`); ``_per_round``: each network's share under ``resources.per_round``.
- ``_search_space``: the spec's ``search`` section as Tune domains (:func:`param_space`).
- ``_search_alg``: the spec's ``search_alg`` as Tune's search algorithm
  (:func:`make_search_alg`): the variant generator, or Tune's OptunaSearch told each trial's
  chosen-network values (:class:`ChosenNetworkSearch`).
- ``_launch``: :func:`launch` builds the Tuner, runs it and prints the summary;
  ``_options``: its :class:`LaunchOptions` (and the command that resumes a sweep).
- ``_ray_runtime``: starting or connecting to Ray (with plugin code shipped to its workers),
  and checking the cluster fits the sweep.
- ``_preflight``: what ``run`` checks (the dataset loads, the device exists, the precision
  works), checked before Ray starts, or on a cluster from a zero-CPU task on every node.
- ``_trial_errors``: errors a retry cannot fix end their trial at once, in one line, with the
  traceback in the trial's ``error.log``; others keep Tune's retries.
- ``_folders``: the storage root, checked sweep names, and the claim on a sweep's folder.
- ``_identity``: each sweep's identity file (MLflow sweep id, store, launch spec).
- ``_interrupts``: SIGINT and SIGTERM stop a sweep cleanly.
- ``_recording``: the MLflow callback for a sweep, the store check, the closing line.
- ``_progress``: progress lines, the trial table, and the trials that failed.
- ``_result_log``: Tune's JSON result logger, keeping every row across round transitions.

Imports ``ray_jobs.tracking`` to record, never ``ray_jobs.results``.
"""

from adprune_core._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "SweepSpec": "._spec",
        "load_sweep_spec": "._spec_checks",
        "sweep_spec_from_dict": "._spec_checks",
        "adprune_trainable": "._trainable",
        "ActivationDensityScheduler": "._scheduler",
        "RoundAwareVariantGenerator": "._scheduler",
        "param_space": "._search_space",
        "make_search_alg": "._search_alg",
        "ChosenNetworkSearch": "._search_alg",
        "RoundAwareSearchGenerator": "._search_alg",
        "launch": "._launch",
        "LaunchOptions": "._options",
        "SweepResult": "._launch",
        "LaunchError": "._errors",
        "SweepInterrupted": "._interrupts",
        "start_ray": "._ray_runtime",
        "shipped_code": "._ray_runtime",
    },
)
