"""Tune's search space from a spec: the spec as a nested dict, with Tune domains at the
searched keys."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from adprune_core.config import set_dotted, spec_to_dict
from ray_jobs.sweep._spec import SweepSpec


def tune_domain(kind: str, args: Any) -> Any:
    from ray import tune

    if kind == "grid":
        return tune.grid_search(list(args))
    if kind == "choice":
        return tune.choice(list(args))
    if kind == "uniform":
        return tune.uniform(*args)
    if kind == "loguniform":
        return tune.loguniform(*args)
    return tune.randint(*args)  # [low, high), as in Tune


def absolute_data_root(spec_dict: dict[str, Any]) -> None:
    # Tune runs each trial in its own working directory; a relative root would move with it.
    root = spec_dict["data"]["root"]
    if "://" not in root:
        spec_dict["data"]["root"] = str(Path(root).expanduser().resolve())


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune's search space: the spec as a nested dict, with domains at the searched keys."""
    spec_dict = copy.deepcopy(spec_to_dict(spec))
    search = spec_dict.pop("search")
    absolute_data_root(spec_dict)
    for key, domain in search.items():
        ((kind, args),) = domain.items()
        set_dotted(spec_dict, key, tune_domain(kind, args))
    return {"spec": spec_dict}
