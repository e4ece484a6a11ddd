"""The spec's ``search_alg`` section: which Tune search algorithm picks the trials, and for a
model-based one (Optuna), its sampler, seed and objectives.

Objectives use the syntax of ``pareto --objectives`` (``COLUMN:max|min``); each names a metric
every finished trial records for the network it chose (or its final-phase network).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SEARCH_ALGS = ("random", "grid", "optuna")
MODEL_BASED = ("optuna",)
SAMPLERS = ("tpe", "nsga2", "gp")
# Metrics of the chosen (or final-phase) network, recorded on every finished trial run.
TRIAL_OBJECTIVES = ("accuracy", "mac_reduction", "param_reduction", "training_complexity")
MAX_OBJECTIVES = 3
# Optuna's categorical distributions take these types only.
_CATEGORICAL_TYPES = (type(None), bool, int, float, str)


def _default_objectives() -> list[str]:
    return ["accuracy:max", "mac_reduction:max"]


@dataclass
class SearchAlgSpec:
    name: str = field(
        default="random",
        metadata={
            "choices": SEARCH_ALGS,
            "help": "random or grid: Tune's variant generator; optuna: a model-based sampler",
        },
    )
    sampler: str = field(
        default="tpe", metadata={"choices": SAMPLERS, "help": "Optuna sampler (optuna only)"}
    )
    seed: int | None = field(default=None, metadata={"help": "seeds the sampler / random draws"})
    objectives: list[str] = field(
        default_factory=_default_objectives,
        metadata={"help": "1 to 3 of COLUMN:max|min, the chosen network's metrics"},
    )
    population_size: int = field(
        default=50, metadata={"min": 2, "help": "NSGA-II trials per generation"}
    )
    startup_trials: int = field(
        default=10, metadata={"min": 0, "help": "TPE / GP random trials before the model"}
    )


@dataclass(frozen=True)
class SearchObjective:
    column: str
    mode: str  # "max" or "min"

    @property
    def result_key(self) -> str:
        """The trial's last report carries the chosen network's value under this key."""
        return f"final_{self.column}"

    def __str__(self) -> str:
        return f"{self.column}:{self.mode}"


def parse_search_objectives(
    texts: Sequence[str], path: str = "search_alg.objectives"
) -> list[SearchObjective]:
    """``["accuracy:max", ...]`` as objectives; a ValueError naming the bad entry."""
    if not 1 <= len(texts) <= MAX_OBJECTIVES:
        raise ValueError(f"{path}: expected 1 to {MAX_OBJECTIVES} objectives, got {len(texts)}")
    objectives = []
    for i, text in enumerate(texts):
        column, _, mode = str(text).strip().partition(":")
        mode = mode.strip() or "max"
        if column.strip() not in TRIAL_OBJECTIVES:
            raise ValueError(
                f"{path}[{i}]: {column.strip()!r} is not a recorded trial metric "
                f"(choose from {', '.join(TRIAL_OBJECTIVES)})"
            )
        if mode not in ("max", "min"):
            raise ValueError(f"{path}[{i}]: mode {mode!r} is not max or min")
        objectives.append(SearchObjective(column.strip(), mode))
    if len({o.column for o in objectives}) != len(objectives):
        raise ValueError(f"{path}: a metric is named twice")
    return objectives


def check_search_alg(alg: SearchAlgSpec, search: Mapping[str, Any]) -> None:
    """Checks across ``search_alg`` and ``search``; a ValueError naming the key."""
    parse_search_objectives(alg.objectives)
    if alg.name not in MODEL_BASED:
        return
    for key, domain in search.items():
        ((kind, args),) = domain.items()
        if kind == "grid":
            raise ValueError(
                f"search.{key}: grid cannot be used with search_alg.name {alg.name} (its "
                f"{alg.sampler} sampler picks every point); use choice: {list(args)}"
            )
        if kind == "choice" and not all(isinstance(v, _CATEGORICAL_TYPES) for v in args):
            raise ValueError(
                f"search.{key}.choice: {alg.name} takes only numbers, strings, booleans or "
                "null as choices"
            )


def check_model_based_samples(data: Mapping[str, Any]) -> None:
    """A model-based search needs its budget stated: the spec must set ``num_samples``."""
    alg = data.get("search_alg")
    if isinstance(alg, Mapping) and alg.get("name") in MODEL_BASED and "num_samples" not in data:
        raise ValueError(
            f"num_samples: required with search_alg.name {alg['name']} (the number of "
            "trials the sampler proposes), e.g. num_samples: 16"
        )
