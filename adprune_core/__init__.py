"""Activation-density pruning in training (Foldy-Porto & Panda), in pure PyTorch.

What a script needs, loaded on first use::

    from adprune_core import build_model, cost_report, decide, load_spec, run_schedule

    spec = load_spec("sweeps/quickstart.yaml")
    payload = run_schedule(spec)                  # net0, net1, ... until delta stops it
    print(payload["summary"]["widths"])

- specs: :class:`SweepSpec`, :func:`load_spec`, :func:`spec_from_dict`;
- models: :func:`build_model`, :func:`default_widths`, :data:`ARCHS`; your own network is a
  factory named by ``module.path:function`` whose prunable layers end in :class:`LayerReLU`
  (:class:`PluginError` when it does not keep that protocol);
- the schedule (Algorithm 1): :class:`PruneSchedule`, :func:`run_schedule`, :func:`summarize`;
- the decisions: :func:`decide` (rho, delta and the next widths), :func:`next_widths`,
  :func:`classify_profile`;
- cost: :func:`cost_report`, :func:`training_complexity`;
- data: :func:`load_dataset`, :class:`DataSpec`;
- density: :class:`DensityMonitor`;
- trained networks as files: :func:`load_network` (arch, widths and weights back as a module),
  :func:`save_network`, :class:`NetworkInfo`.

Never imports Ray or MLflow.
"""

from adprune_core._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "SweepSpec": ".spec",
        "SpecError": ".spec",
        "load_spec": ".spec",
        "spec_from_dict": ".spec",
        "ARCHS": ".models",
        "build_model": ".models",
        "default_widths": ".models",
        "LayerReLU": ".models",
        "PluginError": ".plugins",
        "PruneSchedule": ".schedule",
        "summarize": ".schedule",
        "run_schedule": ".runner",
        "Decision": ".criteria",
        "decide": ".criteria",
        "next_widths": ".criteria",
        "classify_profile": ".criteria",
        "cost_report": ".cost",
        "training_complexity": ".cost",
        "DataSpec": ".data",
        "load_dataset": ".data",
        "DensityMonitor": ".density",
        "NetworkInfo": ".network_file",
        "load_network": ".network_file",
        "save_network": ".network_file",
    },
)
