"""Networks: the built-in archs as modules, plugin factories, analytic and counted cost, and
the network file.

A factory named by ``module.path:function`` is a plugin whose prunable layers end in
:class:`LayerReLU`. Builders take the data shape by keyword (or as one :class:`DataShape`), so
the order of classes, input size and channels cannot be swapped.
"""

from adprune_core._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "ANALYTIC_FAMILIES": ".cost",
        "ARCHS": ".models",
        "ArchInfo": ".prunable",
        "BasicBlock": ".models",
        "CostReport": ".cost",
        "DATASET_GROUP": ".plugins",
        "ENERGY_PER_MAC_J": ".cost",
        "Group": ".prunable",
        "LayerCost": ".cost",
        "LayerReLU": ".prunable",
        "MODEL_GROUP": ".plugins",
        "NETWORK_FILE": ".network_file",
        "NETWORK_METRICS": ".network_file",
        "NetCost": ".cost",
        "NetworkInfo": ".network_file",
        "PLUGIN_FAMILY": ".plugins",
        "PlainNet": ".models",
        "PluginNet": ".plugins",
        "PrunableNet": ".prunable",
        "ResNet": ".models",
        "arch_info": ".models",
        "build_model": ".models",
        "build_network": ".network_file",
        "build_plugin_net": ".plugins",
        "call_plugin": ".plugins",
        "check_arch": ".models",
        "check_relu_calls": ".plugins",
        "check_widths": ".models",
        "conv_cost": ".cost",
        "cost_report": ".cost",
        "cost_text": ".cost",
        "counted_cost": ".flop_cost",
        "counted_params_and_macs": ".flop_cost",
        "declared_groups": ".plugins",
        "default_widths": ".models",
        "describe_cost": ".cost",
        "dry_forward_check": ".plugins",
        "entry_point_names": ".plugins",
        "factory_default_widths": ".plugins",
        "head_cost": ".cost",
        "inherit_filters": ".models",
        "layer_costs": ".cost",
        "load_network": ".network_file",
        "net_cost": ".cost",
        "no_channel_groups": ".models",
        "plain_layers": ".cost",
        "plugin_arch_info": ".plugins",
        "read_network_file": ".network_file",
        "register_arch": ".models",
        "resnet_layers": ".cost",
        "save_network": ".network_file",
        "training_complexity": ".cost",
    },
)
