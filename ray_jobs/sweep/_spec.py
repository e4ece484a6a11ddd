"""The sweep spec: the schedule spec plus the sections only a sweep reads.

``search``, ``search_alg``, ``num_samples``, ``max_concurrent``, ``resources`` and
``record.models`` are read by Tune and MLflow, never by a schedule, so they live here and not
in ``adprune_core``. ``run`` loads the same file as a :class:`SweepSpec` (so a bad search key is
still an error there) and trains its schedule part. No Ray, no torch: loading a spec stays fast.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, StrictInt, StrictStr, model_validator
from pydantic.dataclasses import dataclass

from adprune_core.config import (
    STRICT,
    LatencySpec,
    Number,
    Objective,
    ScheduleSpec,
    SpecError,
    parse_objectives,
    read_yaml,
    set_dotted,
    spec_from_dict,
    spec_to_dict,
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


# ---------------------------------------------------------------------------- search checks


def _section_fields(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}


def check_search_key(key: Any) -> None:
    """The search key names a spec field that can be searched over."""
    if not isinstance(key, str) or not key:
        raise SpecError(f"search: keys must be dotted spec keys, got {key!r}")
    path = f"search.{key}"
    if key.split(".")[0] in UNSEARCHABLE:
        raise SpecError(f"{path}: cannot be searched over")
    current: Any = SweepSpec
    for part in key.split("."):
        hints = _section_fields(current)
        if part not in hints:
            raise SpecError(f"{path}: no such key in the spec")
        current = hints[part]
    if _section_fields(current):
        raise SpecError(f"{path}: is a section; search one of its keys")


def _check_domain(path: str, kind: str, args: Any) -> None:
    if kind not in SEARCH_KINDS:
        raise SpecError(f"{path}: unknown search kind {kind!r} (known: {', '.join(SEARCH_KINDS)})")
    if kind in ("grid", "choice"):
        if not isinstance(args, list) or not args:
            raise SpecError(f"{path}.{kind}: expected a non-empty list of values")
        return
    if not (
        isinstance(args, list)
        and len(args) == 2
        and all(isinstance(a, int | float) and not isinstance(a, bool) for a in args)
    ):
        raise SpecError(f"{path}.{kind}: expected [low, high]")
    low, high = args
    if not all(math.isfinite(float(a)) for a in args):
        raise SpecError(f"{path}.{kind}: expected finite bounds, got {args}")
    if not low < high:
        raise SpecError(f"{path}.{kind}: expected low < high, got {args}")
    if kind == "loguniform" and low <= 0:
        raise SpecError(f"{path}.{kind}: expected low > 0, got {low}")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise SpecError(f"{path}.{kind}: expected integer bounds, got {args}")


def _domain_samples(kind: str, args: Any) -> list[Any]:
    if kind in ("grid", "choice"):
        return list(args)
    if kind == "randint":
        return [args[0], args[1] - 1]
    return [args[0]]


def _check_domain_values(base: dict[str, Any], key: str, kind: str, args: Any) -> None:
    """Every value the search can produce must be valid for the field it sets: each is set
    into the spec and the whole spec validated, so cross-field checks apply too."""
    for i, value in enumerate(_domain_samples(kind, args)):
        data = copy.deepcopy({k: v for k, v in base.items() if k != "search"})
        set_dotted(data, key, value)
        try:
            spec_from_dict(data, cls=SweepSpec)
        except SpecError as err:
            detail = str(err).partition(": ")[2]
            raise SpecError(f"search.{key}.{kind}[{i}]: {detail}") from None


def check_search(spec: SweepSpec) -> None:
    base = spec_to_dict(spec)
    for key, domain in spec.search.items():
        check_search_key(key)
        path = f"search.{key}"
        if not isinstance(domain, Mapping) or len(domain) != 1:
            raise SpecError(f"{path}: expected one of {{{'|'.join(SEARCH_KINDS)}: ...}}")
        ((kind, args),) = domain.items()
        _check_domain(path, kind, args)
        _check_domain_values(base, key, kind, args)


def check_search_alg(alg: SearchAlgSpec, search: Mapping[str, Any]) -> None:
    """Checks across ``search_alg`` and ``search``; a SpecError naming the key."""
    try:
        parse_search_objectives(alg.objectives)
    except ValueError as err:
        raise SpecError(str(err)) from None
    if alg.name not in MODEL_BASED:
        return
    for key, domain in search.items():
        ((kind, args),) = domain.items()
        if kind == "grid":
            raise SpecError(
                f"search.{key}: grid cannot be used with search_alg.name {alg.name} (its "
                f"{alg.sampler} sampler picks every point); use choice: {list(args)}"
            )
        if kind == "choice" and not all(isinstance(v, _CATEGORICAL_TYPES) for v in args):
            raise SpecError(
                f"search.{key}.choice: {alg.name} takes only numbers, strings, booleans or "
                "null as choices"
            )


def check_model_based_samples(data: Mapping[str, Any]) -> None:
    """A model-based search needs its budget stated: the spec must set ``num_samples``."""
    alg = data.get("search_alg")
    if isinstance(alg, Mapping) and alg.get("name") in MODEL_BASED and "num_samples" not in data:
        raise SpecError(
            f"num_samples: required with search_alg.name {alg['name']} (the number of "
            "trials the sampler proposes), e.g. num_samples: 16"
        )


def sweep_spec_from_dict(data: Any, overrides: Sequence[str] = ()) -> SweepSpec:
    """A sweep spec from a plain mapping (with ``KEY=VALUE`` overrides), fully checked."""
    spec = spec_from_dict(data, overrides, cls=SweepSpec)
    check_model_based_samples(data if isinstance(data, Mapping) else {})
    check_search(spec)
    check_search_alg(spec.search_alg, spec.search)
    return spec


def load_sweep_spec(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read, override and check a sweep spec; errors are one line naming the file and key."""
    data = read_yaml(path)
    try:
        return sweep_spec_from_dict(data, overrides)
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None


def searched_values(spec: SweepSpec, key: str, base: object) -> list[object]:
    """``base`` and every value a grid or choice over ``key`` can give."""
    domain = spec.search.get(key, {})
    return [base, *domain.get("grid", []), *domain.get("choice", [])]
