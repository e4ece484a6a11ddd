"""Any torchvision ReLU CNN, pruned by name: ``model.arch: "torchvision:NAME"``.

The model is ``torchvision.models.get_model(NAME, num_classes=K)``, stem left as built (at
32×32 input resnet, mobilenet, vgg_bn and densenet still run; the stem is not rewritten).
Torch-Pruning's :class:`~torch_pruning.DependencyGraph` finds the groups of coupled output
channels; a group is prunable when its channels reach a ReLU or ReLU6 *module* whole.

Density site rule: activations are not modules in the dependency graph, and torchvision
reuses one ``relu`` module several times per block, so a site is one *call* of a ReLU/ReLU6
module (module, call index within a forward). Its group is found on a dry forward by walking
the autograd graph back from the activation's input, through BN, adds and pooling, to the
convs that wrote it; the call is a site of group g when every conv reached writes g's output
channels and the input has exactly g's channels. The count is ``> 0`` of the activation's own
output, which is the real post-ReLU density (a residual block's ReLU follows the add).

Group merge rule (``prune.group_density``, applied by the density monitor): a group with
several sites (the block outputs of a residual stage, the expand and depthwise ReLUs of an
inverted residual) takes by default the *max* of its sites' densities: a channel the densest
use needs must survive, and a mean would let a sparse late site shrink it.

Widths are one per prunable group, in forward order; net0's are the model's own. A network at
other widths is a freshly built model (the caller's seed) pruned by explicit indices to keep
the first ``w`` channels of each group, so every group ends at exactly ``w``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from adprune_core.config import ArchError, DataShape
from adprune_core.nets.activation_sites import Call, activation_calls, convs_behind
from adprune_core.nets.model_source import Source, known_name
from adprune_core.nets.prunable import ArchInfo, PrunableNet

TORCHVISION_FAMILY = "torchvision"
ACTIVATIONS = (nn.ReLU, nn.ReLU6)

Hook = Callable[[nn.Module, tuple, torch.Tensor], None]


@dataclass(frozen=True)
class Site:
    module: str  # name of the ReLU/ReLU6 module
    call: int  # which call of that module in one forward pass
    group: int  # index of the prunable group (width index)


@dataclass(frozen=True)
class Structure:
    """What a dry run of net0 found: per prunable group its root conv, and the sites."""

    roots: tuple[str, ...]
    default_widths: tuple[int, ...]
    sites: tuple[Site, ...]
    # Per prunable group, the convs whose output channels it holds, in forward order.
    layers: tuple[tuple[str, ...], ...] = ()


def torchvision_arch_info(arch: str, kwargs: str = "{}") -> ArchInfo:
    """The registry entry of ``torchvision:NAME``; one-line :class:`ArchError` if unknown."""
    known_name(arch)
    return graph_arch_info(Source(arch, kwargs))


def graph_arch_info(source: Source) -> ArchInfo:
    """The registry entry of a model pruned through its dependency graph."""
    # Default widths depend only on the model, not on the data shape: analyse at CIFAR shape.
    widths = structure(source, DataShape(10, 32, 3)).default_widths
    return ArchInfo(
        source.arch,
        TORCHVISION_FAMILY,
        widths,
        lambda w, shape: build_torchvision_net(source, w, shape),
    )


def _classifier(model: nn.Module) -> list[nn.Module]:
    # The last Linear maps to the classes: its output channels are never pruned.
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def _dependency_graph(model: nn.Module, shape: DataShape, arch: str = "") -> tp.DependencyGraph:
    example = torch.zeros(1, shape.in_channels, shape.input_size, shape.input_size)
    try:
        with torch.enable_grad():  # the graph is traced through autograd; callers may not be
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except Exception as err:  # any tracing failure is one line for the user
        name = f"{arch}: " if arch else ""
        raise ArchError(f"{name}Torch-Pruning cannot trace this model: {str(err)[:120]}") from None
    model.train()  # build_dependency leaves the model in eval mode
    return graph


def _groups(model: nn.Module, graph: tp.DependencyGraph) -> list[tuple[str, dict[str, int]]]:
    """Per group: its root conv's name and every conv whose output channels it holds."""
    names = {m: n for n, m in model.named_modules()}
    found = []
    for group in graph.get_all_groups(
        ignored_layers=_classifier(model), root_module_types=(nn.Conv2d,)
    ):
        root = group[0].dep.target.module
        convs = {
            names[item.dep.target.module]: item.dep.target.module.out_channels
            for item in group
            if isinstance(item.dep.target.module, nn.Conv2d)
            and item.dep.handler.__name__ == "prune_out_channels"
        }
        found.append((names[root], convs))
    return found


@functools.cache
def structure(source: Source, shape: DataShape) -> Structure:
    """Groups and density sites of the model at net0, from one dry run."""
    model = source.build(shape)
    groups = _groups(model, _dependency_graph(model, shape, source.arch))
    calls, conv_nodes, conv_order = activation_calls(model, shape, ACTIVATIONS)
    group_of = {conv: g for g, (_, convs) in enumerate(groups) for conv in convs}
    raw_sites: list[tuple[Call, int]] = []
    for call in calls:
        reached = {group_of.get(c) for c in convs_behind(call.grad_fn, conv_nodes)}
        if len(reached) != 1 or None in reached or call.dim != 4:
            continue  # mixes groups (a concat), reads the classifier, or is not a conv map
        g = reached.pop()
        if call.channels == groups[g][1][groups[g][0]]:
            raw_sites.append((call, g))
    if not raw_sites:
        raise ArchError(f"{source.arch} has no ReLU/ReLU6 module after a conv group")
    # Prunable groups, in the forward order of their root convs.
    prunable = sorted({g for _, g in raw_sites}, key=lambda g: conv_order.index(groups[g][0]))
    index = {g: i for i, g in enumerate(prunable)}
    return Structure(
        roots=tuple(groups[g][0] for g in prunable),
        default_widths=tuple(groups[g][1][groups[g][0]] for g in prunable),
        sites=tuple(Site(c.module, c.call, index[g]) for c, g in raw_sites),
        layers=tuple(tuple(sorted(groups[g][1], key=conv_order.index)) for g in prunable),
    )


def graph_structure(arch: str, kwargs: str = "{}") -> Structure:
    """The groups of ``torchvision:NAME`` or a plain ``nn.Module`` factory at net0, as
    ``adprune-sweep cost --groups`` lists them (at CIFAR shape, like the default widths)."""
    if arch.startswith("torchvision:"):
        known_name(arch)
    return structure(Source(arch, kwargs), DataShape(10, 32, 3))


def prune_to_widths(
    model: nn.Module, shape: DataShape, roots: Sequence[str], keeps: Sequence[Sequence[int]]
) -> None:
    """Shrink each group to exactly ``len(keep)`` channels, keeping the channels ``keep``."""
    graph = _dependency_graph(model, shape)
    modules = dict(model.named_modules())
    for root_name, keep in zip(roots, keeps):
        root, width = modules[root_name], len(keep)
        if width > root.out_channels:
            raise ArchError(f"group {root_name} has {root.out_channels} channels, asked {width}")
        drop = sorted(set(range(root.out_channels)) - {int(i) for i in keep})
        if not drop:
            continue
        group = graph.get_pruning_group(root, tp.prune_conv_out_channels, idxs=drop)
        if not graph.check_pruning_group(group):
            raise ArchError(f"group {root_name} cannot take width {width}")
        group.prune()
        if root.out_channels != width:
            # A grouped conv shrinks in multiples of its group count.
            raise ArchError(f"group {root_name} cannot take width {width} exactly")
    model.train()


class TorchvisionNet(PrunableNet):
    """A torchvision model at given group widths; its density sites are activation calls."""

    def __init__(
        self, arch: str, widths: Sequence[int], net: nn.Module, found: Structure, shape: DataShape
    ) -> None:
        super().__init__(arch, widths)
        self.net = net
        self.sites, self.roots, self.shape = found.sites, found.roots, shape
        self._calls: dict[str, int] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def can_inherit(self) -> bool:
        return True

    def inherit_from(self, parent: PrunableNet, generator: torch.Generator) -> bool:
        """``prune.init: inherit``: a copy of the parent pruned to a random subset of each
        group's channels through the same dependency graph, loaded into this net."""
        source = copy.deepcopy(parent.net).cpu()
        for module in source.modules():  # the parent's density hooks must not count the trace
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()
        keeps = [
            torch.randperm(pw, generator=generator)[:cw].sort().values.tolist()
            for pw, cw in zip(parent.widths, self.widths)
        ]
        prune_to_widths(source, self.shape, self.roots, keeps)
        self.net.load_state_dict(source.state_dict())
        return True

    def density_site_groups(self) -> list[int]:
        return [site.group for site in self.sites]

    def attach_density_hooks(self, hook_for_site: Callable[[int], Hook]) -> list:
        """One forward hook per activation module, dispatching each call to its site."""
        by_module: dict[str, dict[int, Hook]] = {}
        for index, site in enumerate(self.sites):
            by_module.setdefault(site.module, {})[site.call] = hook_for_site(index)
        modules = dict(self.net.named_modules())
        # Call counters restart with each forward pass; registered only while density is
        # counted, so a logged or exported net carries no hook.
        handles = [self.register_forward_pre_hook(lambda *_: self._calls.clear())]
        return handles + [
            modules[name].register_forward_hook(self._dispatch(name, hooks))
            for name, hooks in by_module.items()
        ]

    def _dispatch(self, name: str, hooks: dict[int, Hook]) -> Hook:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            if call in hooks:
                hooks[call](module, inputs, output)

        return hook


def build_torchvision_net(
    source: Source, widths: Sequence[int], shape: DataShape
) -> TorchvisionNet:
    """The model at ``widths``: a fresh model (the caller's seed), pruned."""
    found = structure(source, DataShape(10, 32, 3))
    model = source.build(shape)
    if list(widths) != list(found.default_widths):
        prune_to_widths(model, shape, found.roots, [range(w) for w in widths])
    return TorchvisionNet(source.arch, widths, model, found, shape)
