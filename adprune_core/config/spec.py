"""The schedule spec: every section a prune schedule reads, as pydantic v2 dataclasses.

No torch here: loading a spec (``run``, ``launch``, ``--help``) must not pay for importing it.
Each field says its type, range and help once; pydantic enforces them (strict types, unknown
keys forbidden) and :mod:`adprune_core.config.loading` turns its errors into one line that
names the key path. A sweep spec extends :class:`ScheduleSpec` on the Ray side
(``ray_jobs.sweep``) with the sections only a sweep reads.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic.dataclasses import dataclass

from adprune_core.config.archs import builtin_default_widths, builtin_family, validate_widths
from adprune_core.config.errors import ArchError
from adprune_core.config.plugin_loading import (
    check_arch_name,
    check_dataset_name,
)

# Unknown keys are errors; the Strict* field types keep a YAML `true` from passing as a width
# and "64" as a batch size (strict mode itself would refuse a section given as a mapping).
STRICT = ConfigDict(extra="forbid")

PRECISIONS = ("fp32", "bf16")


def _yaml_number(value: Any) -> Any:
    # YAML 1.1 reads `1e-3` (no dot) as a string; users type it, so accept it as a number.
    if isinstance(value, str) and value.strip():
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return value


Number = Annotated[float, BeforeValidator(_yaml_number), Strict(), Field(allow_inf_nan=False)]


@dataclass(config=STRICT)
class ModelSpec:
    arch: Annotated[StrictStr, AfterValidator(check_arch_name)] = Field(
        default="cnn", description="built-in arch, or factory 'module.path:function'"
    )
    widths: list[StrictInt] | None = Field(
        default=None, description="net0 widths, one per prunable conv (default: the arch's)"
    )
    kwargs: dict[StrictStr, Any] = Field(
        default_factory=dict,
        description="keyword arguments of a torchvision:NAME or nn.Module builder, "
        "called as builder(num_classes=K, **kwargs)",
    )

    @model_validator(mode="after")
    def _widths_fit_builtin_arch(self) -> ModelSpec:
        # A plugin factory's widths are checked by preflight, which builds it.
        if builtin_family(self.arch) is not None:
            try:
                validate_widths(self.arch, builtin_default_widths(self.arch), self.widths)
            except ArchError as err:
                raise ValueError(f"widths: {err}") from None
        return self

    @model_validator(mode="after")
    def _kwargs_fit_the_builder(self) -> ModelSpec:
        # Only a builder takes kwargs; whether it knows each key is checked by preflight,
        # which calls it (torchvision's builders pass **kwargs on, so no signature says).
        if self.kwargs and builtin_family(self.arch) is not None:
            raise ValueError(f"kwargs: {self.arch} is a built-in arch and takes no model.kwargs")
        if "num_classes" in self.kwargs:
            raise ValueError(f"kwargs: num_classes of {self.arch} is set by the data")
        return self


@dataclass(config=STRICT)
class SyntheticSpec:
    num_train: StrictInt = Field(
        default=512, ge=1, description="number of synthetic training images"
    )
    num_test: StrictInt = Field(default=128, ge=1, description="number of synthetic test images")
    num_classes: StrictInt = Field(
        default=4, ge=2, description="number of classes (one prototype image each)"
    )
    input_size: StrictInt = Field(
        default=8, ge=4, description="height and width of the square images"
    )
    in_channels: StrictInt = Field(default=1, ge=1, description="number of image channels")
    noise: Number = Field(
        default=0.5, ge=0.0, description="std of the Gaussian noise added to each class prototype"
    )


@dataclass(config=STRICT)
class DataSpec:
    dataset: Annotated[StrictStr, AfterValidator(check_dataset_name)] = Field(
        default="digits", description="built-in dataset, or loader 'module.path:function'"
    )
    root: StrictStr = Field(
        default="data",
        description="folder holding the cifar/tinyimagenet data (or where to download it)",
    )
    download: StrictBool = Field(
        default=False,
        description="let torchvision download cifar10/cifar100 into root (needs network)",
    )
    batch_size: StrictInt = Field(default=128, ge=1, description="training batch size")
    eval_batch_size: StrictInt = Field(default=1024, ge=1, description="batch size for evaluation")
    augment: StrictBool | None = Field(
        default=None,
        description="random crop + horizontal flip on training batches; null = dataset default",
    )
    crop_padding: StrictInt = Field(
        default=4, ge=0, description="zero padding (pixels) for the random crop"
    )
    num_train: StrictInt | None = Field(
        default=None,
        ge=1,
        description="use only the first N training images after a seeded shuffle",
    )
    seed: StrictInt = Field(
        default=0, description="seed for the train/test split, subsetting and synthetic data"
    )
    synthetic: SyntheticSpec = Field(
        default_factory=SyntheticSpec, description="settings of the 'synthetic' dataset"
    )


@dataclass(config=STRICT)
class TrainSpec:
    lr: Number = Field(default=0.05, gt=0.0, description="peak learning rate")
    momentum: Number = Field(default=0.9, ge=0.0, le=1.0, description="SGD momentum")
    nesterov: StrictBool = Field(default=True, description="Nesterov momentum")
    weight_decay: Number = Field(default=5e-4, ge=0.0, description="L2 weight decay")
    lr_schedule: Literal["cosine", "step", "constant"] = Field(
        default="cosine",
        description="per-epoch lr schedule; cosine spans rho.max_epochs (final.epochs when final)",
    )
    step_size: StrictInt = Field(
        default=30, ge=1, description="epochs between lr drops (step schedule)"
    )
    gamma: Number = Field(
        default=0.1, gt=0.0, le=1.0, description="lr factor per drop (step schedule)"
    )
    label_smoothing: Number = Field(
        default=0.0, ge=0.0, le=0.99, description="cross-entropy label smoothing"
    )
    seed: StrictInt = Field(default=0, description="seeds weights, batch order and augmentation")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: cuda when available"
    )
    channels_last: StrictBool = Field(
        default=False, description="model weights and input batches in channels_last format"
    )
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="bf16: autocast forward and loss to bfloat16 (weights, grads, SGD stay fp32)",
    )
    deterministic: StrictBool = Field(
        default=False,
        description="CPU results independent of the thread count (native convolutions, "
        "single-threaded BLAS reductions); about 3x slower on CPU",
    )
    compile: StrictBool = Field(
        default=False,
        description="torch.compile the model (needs a C++ compiler on CPU, Triton on GPU); "
        "compiles once per network, since every round has new widths",
    )


@dataclass(config=STRICT)
class RhoSpec:
    threshold: Number = Field(
        default=0.001, gt=0.0, description="|dAD_total| per epoch below which AD is saturated"
    )
    patience: StrictInt = Field(
        default=2, ge=1, description="consecutive saturated epochs end a round"
    )
    min_epochs: StrictInt = Field(default=3, ge=1, description="a round never ends before this")
    max_epochs: StrictInt = Field(default=30, ge=1, description="a round always ends after this")

    @model_validator(mode="after")
    def _min_not_above_max(self) -> RhoSpec:
        if self.min_epochs > self.max_epochs:
            raise ValueError(
                f"min_epochs: {self.min_epochs} is more than prune.rho.max_epochs {self.max_epochs}"
            )
        return self


@dataclass(config=STRICT)
class DeltaSpec:
    flat_band: Number = Field(
        default=0.001,
        ge=0.0,
        description="|least-squares slope| of AD_total per epoch at or below which a round is flat",
    )


@dataclass(config=STRICT)
class PruneSpec:
    rho: RhoSpec = Field(default_factory=RhoSpec)
    delta: DeltaSpec = Field(default_factory=DeltaSpec)
    min_width: StrictInt = Field(default=1, ge=1, description="no layer shrinks below this")
    max_rounds: StrictInt = Field(
        default=4, ge=1, description="most networks trained in the search (net0 included)"
    )
    init: Literal["random", "inherit"] = Field(
        default="random",
        description="net[i+1] starts from random weights, or inherits a random subset of filters",
    )
    measure: Literal["train", "eval"] = Field(
        default="train", description="count densities on training or eval passes"
    )
    group_density: Literal["max", "mean"] = Field(
        default="max",
        description="a channel group with several activation sites (a residual stage) takes "
        "the max or the mean of their densities; max keeps what the densest site needs",
    )


@dataclass(config=STRICT)
class FinalSpec:
    epochs: StrictInt = Field(
        default=0, ge=0, description="train the chosen widths from scratch this long (0: skip)"
    )


@dataclass(config=STRICT)
class LatencySpec:
    enabled: StrictBool = Field(
        default=True, description="time each network's forward pass (latency_ms_* metrics)"
    )
    warmup: StrictInt = Field(default=2, ge=0, description="untimed passes first")
    repeats: StrictInt = Field(default=5, ge=1, description="timed passes; the median is recorded")


@dataclass(config=STRICT)
class RecordSpec:
    """What each trained network's record holds beyond its accuracy and cost."""

    latency: LatencySpec = Field(default_factory=LatencySpec)


@dataclass(config=STRICT)
class ScheduleSpec:
    """Everything one prune schedule (Algorithm 1) reads."""

    name: StrictStr = Field(default="adprune", description="sweep name")
    experiment: StrictStr = Field(default="adprune-sweep", description="MLflow experiment")
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    prune: PruneSpec = Field(default_factory=PruneSpec)
    final: FinalSpec = Field(default_factory=FinalSpec)
    record: RecordSpec = Field(default_factory=RecordSpec)
