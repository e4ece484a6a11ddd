"""Checking a sweep spec beyond its fields, and loading one: every value a search can give
must be valid for the key it sets, a model-based search states its budget, and the search
algorithm's objectives parse.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adprune_core.config import SpecError, read_yaml, set_dotted, spec_from_dict, spec_to_dict
from ray_jobs.sweep._spec import (
    _CATEGORICAL_TYPES,
    MODEL_BASED,
    SEARCH_KINDS,
    UNSEARCHABLE,
    SearchAlgSpec,
    SweepSpec,
    parse_search_objectives,
)

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
