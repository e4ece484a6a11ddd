"""Writing a sweep to MLflow: sweep -> trial -> net[i] runs, each record exactly once.

- :mod:`~ray_jobs.tracking.keys`: run keys and tag names, shared with the reading side.
- :mod:`~ray_jobs.tracking.store`: the tracking URI, a client that fails fast, the experiment.
- ``_journal``: the on-disk journal (fsynced appends) and the dead letters.
- ``_errors``: sorting the writer's errors into transient (retry) and permanent (set aside).
- ``_writer``: from the journal to the store, batched per run (:class:`BackgroundWriter`).
- ``_renderer``: the figure processes, which draw the PNGs off the driver's interpreter.
- ``_runs``: resolving run keys to runs (:class:`RunResolver`).
- ``_trial_ends``: the order in which the sweep's trials ended, for its progress metrics.
- ``_recorder``: applying operations to runs (:class:`Recorder`).
- ``_callback``: the Tune callback that feeds them (:class:`MlflowCallback`).

Never imports ``ray_jobs.sweep`` or ``ray_jobs.results``. Exports load on first use, so the
reading side can import :mod:`keys` and :mod:`store` without Ray.
"""

from adprune_core._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "MlflowCallback": "._callback",
        "Recorder": "._recorder",
        "SweepEndReport": "._recorder",
        "TrialEndReport": "._recorder",
        "RunResolver": "._runs",
        "RunState": "._runs",
        "SweepInfo": "._runs",
        "BackgroundWriter": "._writer",
        "WriterConfig": "._writer",
        "Journal": "._journal",
        "DeadLetters": "._journal",
        "QUEUE_FILE": "._journal",
        "DEAD_LETTER_FILE": "._journal",
        "is_transient": "._errors",
        "sweep_sharing_metrics": "._operations",
        "TrackingError": ".store",
        "resolve_tracking_uri": ".store",
        "check_store": ".store",
        "ensure_experiment": ".store",
        "make_client": ".store",
    },
)
