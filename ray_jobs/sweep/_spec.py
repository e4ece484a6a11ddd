"""The sweep spec: the schedule spec plus the sections only a sweep reads.

``search``, ``search_alg``, ``num_samples``, ``max_concurrent``, ``resources`` and
``record.models`` are read by Tune and MLflow, never by a schedule, so they live here and not
in ``adprune_core``. ``run`` loads the same file as a :class:`SweepSpec` (so a bad search key is
still an error there) and trains its schedule part. No Ray, no torch: loading a spec stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StrictBool, StrictInt, StrictStr, model_validator
from pydantic.dataclasses import dataclass

from adprune_core.config import (
    STRICT,
    LatencySpec,
    Number,
    Objective,
    ScheduleSpec,
    parse_objectives,
)

SEARCH_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
SEARCH_ALGS = ("random", "grid", "optuna")
MODEL_BASED = ("optuna",)
# Metrics of the chosen (or final-phase) network, recorded on every finished trial run.
TRIAL_OBJECTIVES = ("accuracy", "mac_reduction", "param_reduction", "training_complexity")
MAX_OBJECTIVES = 3
# Optuna's categorical distributions take these types only.
_CATEGORICAL_TYPES = (type(None), bool, int, float, str)
UNSEARCHABLE = (
    "search",
    "search_alg",
    "name",
    "experiment",
    "num_samples",
    "max_concurrent",
    "resources",
    "pareto",
    "share",
)


@dataclass(config=STRICT)
class PerRoundSpec:
    scale: Literal["macs"] = Field(
        default="macs", description="what net[i]'s share follows, relative to net0"
    )
    min_cpu: Number = Field(default=1.0, gt=0.0, description="fewest CPUs a network gets")
    step_cpu: Number = Field(default=1.0, gt=0.0, description="CPUs are rounded up to this step")
    min_gpu: Number = Field(default=0.0, ge=0.0, description="smallest GPU share a network gets")
    step_gpu: Number = Field(
        default=0.125, gt=0.0, description="GPU shares are rounded up to this step"
    )


@dataclass(config=STRICT)
class ResourcesSpec:
    cpu: Number = Field(default=1.0, gt=0.0, description="CPUs per trial")
    gpu: Number = Field(default=0.0, ge=0.0, description="GPUs per trial (fractional)")
    per_round: PerRoundSpec | None = Field(
        default=None, description="scale each network's cpu/gpu by its MACs (off when absent)"
    )

    @model_validator(mode="after")
    def _minimums_fit_net0(self) -> ResourcesSpec:
        # net0's share is the most any network asks for, so the minimums must fit in it.
        if self.per_round is None:
            return self
        for kind, minimum, full in (
            ("cpu", self.per_round.min_cpu, self.cpu),
            ("gpu", self.per_round.min_gpu, self.gpu),
        ):
            if minimum > full:
                raise ValueError(
                    f"per_round.min_{kind}: {minimum:g} is more than resources.{kind} "
                    f"{full:g} (net0's share, the most any network gets)"
                )
        return self


def _default_objectives() -> list[str]:
    return ["accuracy:max", "mac_reduction:max"]


def parse_search_objectives(
    texts: Sequence[str], path: str = "search_alg.objectives"
) -> list[Objective]:
    """``["accuracy:max", ...]`` as objectives; a ValueError naming the bad entry."""
    return parse_objectives(texts, TRIAL_OBJECTIVES, path, MAX_OBJECTIVES)


def result_key(objective: Objective) -> str:
    """A trial's last report carries its chosen network's value under this key."""
    return f"final_{objective.column}"


@dataclass(config=STRICT)
class SearchAlgSpec:
    name: Literal["random", "grid", "optuna"] = Field(
        default="random",
        description="random or grid: Tune's variant generator; optuna: a model-based sampler",
    )
    sampler: Literal["tpe", "nsga2", "gp"] = Field(
        default="tpe", description="Optuna sampler (optuna only)"
    )
    seed: StrictInt | None = Field(default=None, description="seeds the sampler / random draws")
    objectives: list[StrictStr] = Field(
        default_factory=_default_objectives,
        description="1 to 3 of COLUMN:max|min, the chosen network's metrics",
    )
    population_size: StrictInt = Field(
        default=50, ge=2, description="NSGA-II trials per generation"
    )
    startup_trials: StrictInt = Field(
        default=10, ge=0, description="TPE / GP random trials before the model"
    )


@dataclass(config=STRICT)
class SweepRecordSpec:
    latency: LatencySpec = Field(default_factory=LatencySpec)
    models: Literal["all", "chosen", "none"] = Field(
        default="chosen",
        description="networks logged as MLflow models: all, chosen (each trial's chosen and "
        "final-phase network), or none",
    )


@dataclass(config=STRICT)
class ParetoSpec:
    reference: StrictStr | None = Field(
        default=None,
        description="the sweep run's hypervolume reference, as pareto --reference takes it "
        "(default accuracy=net0-5, and 1x reductions)",
    )


@dataclass(config=STRICT)
class ShareSpec:
    enabled: StrictBool = Field(
        default=True,
        description="train each network trials share once (results are identical either way)",
    )
    max_gib: Number = Field(
        default=2.0,
        gt=0.0,
        description="disk the kept per-epoch checkpoints may take; the least recently used go",
    )
    root: StrictStr | None = Field(
        default=None,
        description="the epoch store (default STORAGE/NAME/shared-epochs); sweeps given one "
        "folder share across sweeps",
    )


def _share_shorthand(value: Any) -> Any:
    # `share: false` is the short way to turn it off.
    return {"enabled": value} if isinstance(value, bool) else value


@dataclass(config=STRICT)
class SweepSpec(ScheduleSpec):
    """A schedule spec and how to sweep it: the search, its algorithm, the trials' budget."""

    record: SweepRecordSpec = Field(default_factory=SweepRecordSpec)  # type: ignore[assignment]
    search: dict[str, Any] = Field(
        default_factory=dict, description="dotted key -> {grid|choice|uniform|...: ...}"
    )
    search_alg: SearchAlgSpec = Field(default_factory=SearchAlgSpec)
    num_samples: StrictInt = Field(default=1, ge=1, description="samples of the space")
    max_concurrent: StrictInt = Field(
        default=0, ge=0, description="concurrent trials (0: as many as fit)"
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    pareto: ParetoSpec = Field(default_factory=ParetoSpec)
    share: Annotated[ShareSpec, BeforeValidator(_share_shorthand)] = Field(
        default_factory=ShareSpec
    )
