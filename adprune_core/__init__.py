"""Activation-density pruning in training (Foldy-Porto & Panda), in pure PyTorch.

Five rooms, with imports flowing one way (``schedule -> engine -> nets, data -> config``):

- :mod:`adprune_core.config`: the spec, without torch (:class:`ScheduleSpec`, :func:`load_spec`),
  the one-line errors, and the names and formulas every room shares (Eq. 1, net names);
- :mod:`adprune_core.nets`: built-in archs and plugin factories, cost, the network file;
- :mod:`adprune_core.data`: datasets as tensors and their on-device batches;
- :mod:`adprune_core.engine`: one epoch on one device, the density monitor, latency, Fig. 3;
- :mod:`adprune_core.schedule`: Algorithm 1 (decisions, state, :class:`PruneSchedule`, the
  epoch report, ``run``'s runner).

What a script needs, loaded on first use::

    from adprune_core import load_spec, run_schedule

    spec = load_spec("my-schedule.yaml")          # a schedule spec (no search section)
    payload = run_schedule(spec)                  # net0, net1, ... until delta stops it
    print(payload["summary"]["widths"])

A sweep spec (with ``search``) loads with ``ray_jobs.load_sweep_spec``, and runs here too.
Never imports Ray or MLflow.
"""

from adprune_core._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "ScheduleSpec": ".config",
        "SpecError": ".config",
        "load_spec": ".config",
        "spec_from_dict": ".config",
        "DataShape": ".config",
        "training_complexity": ".config",
        "ARCHS": ".nets",
        "build_model": ".nets",
        "default_widths": ".nets",
        "LayerReLU": ".nets",
        "PluginError": ".config",
        "cost_report": ".nets",
        "NetworkInfo": ".nets",
        "load_network": ".nets",
        "save_network": ".nets",
        "DataSpec": ".config",
        "load_dataset": ".data",
        "DensityMonitor": ".engine",
        "PruneSchedule": ".schedule",
        "EpochReport": ".schedule",
        "run_loop": ".schedule",
        "summarize": ".schedule",
        "run_schedule": ".schedule",
        "Decision": ".schedule",
        "decide": ".schedule",
        "next_widths": ".schedule",
        "classify_profile": ".schedule",
    },
)
