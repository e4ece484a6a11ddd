"""Reading sweeps back out of MLflow: records, ``compare``, the Pareto front and its exports,
plots, and ``ui``.

- ``_records``: rows from the store (:class:`NetworkRow`, :class:`TrialRow`).
- ``_compare``: one row per trial (:func:`compare_trials`).
- ``_front``: objectives and the non-dominated rule (:func:`front_mask`).
- ``_export``: the front as parquet/CSV (:func:`export_pareto`), and each sweep's own front
  (:func:`sweep_front`).
- ``_comparison``: each sweep's threshold comparison, and with its front the sweep-end
  report handed to the recorder (:func:`sweep_report`).
- ``_reference``: the reference point (:class:`ReferenceSpec`, :func:`parse_reference`,
  :func:`resolve_reference`): by default 5 points below the baseline net0, 1x reductions.
- ``_hypervolume``: the front's hypervolume against one shared reference (moocore;
  :func:`sweep_hypervolumes`; :func:`trial_end_hypervolume`, handed to the recorder to log
  after every completed trial).
- ``_loss``: the best MAC reduction at each accuracy loss (:func:`reductions_at_loss`).
- ``_sweep_rows``: ``compare``'s one row per sweep.
- ``_plots``: the front as a PNG.
- ``_ui``: the MLflow UI over the store (:func:`serve_ui`).
- ``_models``: logged networks back out: ``register`` into the Model Registry
  (:func:`register_network`, :func:`register_sweep_choice`); ``_network_export``: ``export``
  to a file (:func:`export_network`).

Never imports ``ray_jobs.sweep``; of ``ray_jobs.tracking`` it uses only the run keys and tag
names (``keys``) and where the store is (``store``), never the writer.
"""

from adprune_core._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "NetworkRow": "._records",
        "TrialRow": "._records",
        "load_networks": "._records",
        "load_trials": "._records",
        "existing_store": "._records",
        "compare_trials": "._compare",
        "Objective": "._front",
        "DEFAULT_OBJECTIVES": "._front",
        "OBJECTIVE_COLUMNS": "._front",
        "parse_objectives": "._front",
        "non_dominated": "._front",
        "front_mask": "._front",
        "ordered": "._front",
        "front_table": "._export",
        "write_parquet": "._export",
        "write_csv": "._export",
        "export_pareto": "._export",
        "sweep_front": "._export",
        "SweepFront": "._export",
        "sweep_report": "._comparison",
        "SweepReport": "._comparison",
        "plot_comparison": "._comparison",
        "ParetoOptions": "._export",
        "spec_reference": "._spec_reference",
        "ReferenceSpec": "._reference",
        "Reference": "._reference",
        "parse_reference": "._reference",
        "parse_losses": "._reference",
        "resolve_reference": "._reference",
        "reductions_at_loss": "._loss",
        "ReductionAtLoss": "._loss",
        "hypervolume": "._hypervolume",
        "sweep_hypervolumes": "._hypervolume",
        "trial_end_hypervolume": "._hypervolume",
        "plot_front": "._plots",
        "serve_ui": "._ui",
        "FrontRule": "._models",
        "register_network": "._models",
        "register_sweep_choice": "._models",
        "export_network": "._network_export",
        "EXPORT_FORMATS": "._network_export",
        "UiOptions": "._ui",
    },
)
