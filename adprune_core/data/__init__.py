"""Datasets as whole tensors (:class:`ArrayDataset`) and their on-device batches
(:class:`DeviceBatches`); plugin loaders named by ``module.path:function``.
"""

from adprune_core._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "ArrayDataset": ".arrays",
        "DeviceBatches": ".batches",
        "LoadedData": ".plugins",
        "channel_stats": ".arrays",
        "crop_at": ".batches",
        "dataset_shape": ".datasets",
        "flip_where": ".batches",
        "load_checked": ".plugins",
        "load_cifar": ".files",
        "load_dataset": ".datasets",
        "load_tinyimagenet": ".files",
        "loader_arguments": ".plugins",
        "plugin_loader": ".plugins",
        "to_device_without_sync": ".batches",
    },
)
