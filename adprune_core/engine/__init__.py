"""Training one epoch on one device: SGD and evaluation, device and precision, the density
monitor, measured latency and the activation maps of Fig. 3.
"""

from adprune_core._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "CompileUnavailable": ".device",
        "DensityMonitor": ".density",
        "DensityReading": ".density",
        "EpochStats": ".epoch",
        "LatencyFigures": ".latency",
        "autocast": ".device",
        "channel_mean": ".activation_maps",
        "check_precision": ".device",
        "compile_failure": ".device",
        "compile_model": ".device",
        "evaluate": ".epoch",
        "forward_ms": ".latency",
        "is_compile_failure": ".device",
        "make_lr_schedule": ".epoch",
        "make_optimizer": ".epoch",
        "mean_activation_maps": ".activation_maps",
        "measure_latency": ".latency",
        "memory_format": ".device",
        "positive_counts": ".density",
        "resolve_device": ".device",
        "set_thread_invariant": ".device",
        "train_epoch": ".epoch",
    },
)
