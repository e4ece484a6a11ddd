"""Where a graph-pruned model comes from: ``torchvision:NAME`` or a plain ``nn.Module``
factory ``pkg.mod:factory``, each built as ``builder(num_classes=K, **model.kwargs)``.

Both are treated alike, so ``torchvision.models:resnet18`` and ``torchvision:resnet18`` build
the same model. Every way the call can fail is one :class:`ArchError` line naming the model.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import torchvision
from torch import nn

from adprune_core.config import ArchError, DataShape
from adprune_core.config.plugin_loading import MODEL_GROUP, first_line, load_object
from adprune_core.nets.prunable import LayerReLU

TORCHVISION_PREFIX = "torchvision:"


@dataclass(frozen=True)
class Source:
    """Where the model comes from: ``torchvision:NAME`` or a plain ``nn.Module`` factory
    ``pkg.mod:factory``, with ``model.kwargs`` as canonical JSON (hashable, for the caches)."""

    arch: str
    kwargs: str = "{}"

    def build(self, shape: DataShape) -> nn.Module:
        """A freshly initialised model: ``builder(num_classes=K, **model.kwargs)``."""
        if self.arch.startswith(TORCHVISION_PREFIX) and shape.in_channels != 3:
            # The stem is left as built, and torchvision's stems read 3 channels.
            raise ArchError(f"{self.arch} takes 3 input channels, got {shape.in_channels}")
        kwargs = json.loads(self.kwargs)
        if "num_classes" in kwargs:
            raise ArchError(f"model.kwargs: {self.arch}: num_classes is set by the data")
        builder = _builder(self.arch)
        try:
            model = builder(num_classes=shape.num_classes, **kwargs)
        except TypeError as err:
            unknown = re.search(r"unexpected keyword argument '(\w+)'", str(err))
            # Only a key the user gave is theirs to fix; any other TypeError is the builder's.
            if unknown is None or unknown.group(1) not in kwargs:
                raise ArchError(self._call_failed(err)) from None
            raise ArchError(
                f"model.kwargs: {self.arch} takes no keyword argument {unknown.group(1)!r}"
            ) from None
        except Exception as err:  # a bad kwarg value, or a user factory's own bug
            raise ArchError(self._call_failed(err)) from None
        return _checked_module(self.arch, model)

    def _call_failed(self, err: Exception) -> str:
        if self.arch.startswith(TORCHVISION_PREFIX):
            return f"{self.arch}: the builder raised {first_line(err)}"
        # Say which protocol was assumed: a LayerReLU factory that forgot its widths lands here.
        return (
            f"model.arch: {self.arch}: has no default widths, so it was called as an nn.Module "
            f"builder factory(num_classes=K, **model.kwargs), which raised {first_line(err)}"
        )


def _builder(arch: str) -> Callable[..., nn.Module]:
    if arch.startswith(TORCHVISION_PREFIX):
        return functools.partial(torchvision.models.get_model, known_name(arch))
    factory = load_object(arch, MODEL_GROUP, "model.arch")
    if factory is None or not callable(factory):
        raise ArchError(f"{arch}: not a factory")
    return factory


def _checked_module(arch: str, model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ArchError(f"{arch}: the factory returned a {type(model).__name__}, not an nn.Module")
    if any(isinstance(m, LayerReLU) for m in model.modules()):
        # Half of each protocol: LayerReLUs mean the LayerReLU protocol, which needs widths.
        raise ArchError(
            f"{arch}: the model has LayerReLU modules but the factory has no default_widths; "
            "a LayerReLU factory takes (widths, ...) and declares default_widths"
        )
    return model


def known_name(arch: str) -> str:
    name = arch.removeprefix(TORCHVISION_PREFIX)
    if name not in classification_models():
        raise ArchError(
            f"{arch}: unknown torchvision model {name!r}; known: classification builders of "
            "torchvision.models, e.g. resnet18, resnet50, mobilenet_v2, vgg11_bn, densenet121"
        )
    return name


@functools.cache
def classification_models() -> frozenset[str]:
    return frozenset(torchvision.models.list_models(module=torchvision.models))
