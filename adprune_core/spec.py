"""The sweep spec: typed dataclasses read from YAML, shared by ``run`` and ``launch``.

Validation is driven by the dataclasses themselves: field types, and ``metadata`` keys
``min``, ``min_exclusive``, ``max``, ``choices`` and ``check`` (a function that raises
``ValueError`` for a bad value). Every error names the key path.

Longer than 300 lines because the spec's dataclasses and the generic validation that reads
their field types and metadata belong together: one cannot be changed without the other.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adprune_core.criteria import PruneSpec
from adprune_core.data import DataSpec
from adprune_core.errors import SpecError
from adprune_core.latency import LatencySpec
from adprune_core.models import ArchError, check_arch, check_widths
from adprune_core.resources import PerRoundSpec, check_per_round
from adprune_core.search_alg import SearchAlgSpec, check_model_based_samples, check_search_alg
from adprune_core.train import TrainSpec

# Which trained networks become MLflow models (weights and all): every one, each trial's
# chosen and final-phase network, or none.
MODEL_CHOICES = ("all", "chosen", "none")


@dataclass
class RecordSpec:
    """What each trained network's record holds beyond its accuracy and cost."""

    latency: LatencySpec = field(default_factory=LatencySpec)
    models: str = field(
        default="chosen",
        metadata={
            "choices": MODEL_CHOICES,
            "help": "networks logged as MLflow models: all, chosen (each trial's chosen and "
            "final-phase network), or none",
        },
    )


@dataclass
class ModelSpec:
    arch: str = field(
        default="cnn",
        metadata={"check": check_arch, "help": "built-in arch, or factory 'module.path:function'"},
    )
    widths: list[int] | None = field(
        default=None, metadata={"help": "net0 widths, one per prunable conv (default: the arch's)"}
    )


@dataclass
class FinalSpec:
    epochs: int = field(
        default=0,
        metadata={"min": 0, "help": "train the chosen widths from scratch this long (0: skip)"},
    )


@dataclass
class ResourcesSpec:
    cpu: float = field(default=1.0, metadata={"min_exclusive": 0.0, "help": "CPUs per trial"})
    gpu: float = field(default=0.0, metadata={"min": 0.0, "help": "GPUs per trial (fractional)"})
    per_round: PerRoundSpec | None = field(
        default=None,
        metadata={"help": "scale each network's cpu/gpu by its MACs (off when absent)"},
    )


SEARCH_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")


@dataclass
class SweepSpec:
    name: str = field(default="adprune", metadata={"help": "sweep name"})
    experiment: str = field(default="adprune-sweep", metadata={"help": "MLflow experiment"})
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    prune: PruneSpec = field(default_factory=PruneSpec)
    final: FinalSpec = field(default_factory=FinalSpec)
    search: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "dotted key -> {grid|choice|uniform|...: ...}"}
    )
    search_alg: SearchAlgSpec = field(default_factory=SearchAlgSpec)
    num_samples: int = field(default=1, metadata={"min": 1, "help": "samples of the space"})
    max_concurrent: int = field(
        default=0, metadata={"min": 0, "help": "concurrent trials (0: as many as fit)"}
    )
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    record: RecordSpec = field(default_factory=RecordSpec)


# ---------------------------------------------------------------------------- typed loading


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0]).split(' ', 1)[-1]}s"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _coerce_scalar(tp: type, value: Any, path: str) -> Any:
    # bool is an int subclass in Python; a YAML `true` must not pass as a width or a count.
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        # YAML 1.1 reads `1e-3` (no dot) as a string; users type it, so accept it as a number.
        if isinstance(value, str):
            value = _float_or_none(value) if value.strip() else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if math.isfinite(number):
                return number
            raise SpecError(f"{path}: expected a finite number, got {_short(value)}")
    elif tp is str and isinstance(value, str):
        return value
    raise SpecError(f"{path}: expected {_type_name(tp)}, got {_short(value)}")


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _float_or_none(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, path)
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(f"{path}: expected {_type_name(tp)}, got {_short(value)}")
        (item_type,) = typing.get_args(tp)
        return [_coerce(item_type, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise SpecError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    return _coerce_scalar(tp, value, path)


def _check_range(value: Any, meta: Mapping[str, Any], path: str) -> None:
    if value is None:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise SpecError(
            f"{path}: expected one of {', '.join(map(str, meta['choices']))}, got {value!r}"
        )
    if "check" in meta:
        try:
            meta["check"](value)
        except ValueError as err:  # a plugin error carries its message without its key
            raise SpecError(f"{path}: {getattr(err, 'detail', err)}") from None
    if "min" in meta and value < meta["min"]:
        raise SpecError(f"{path}: expected a value >= {meta['min']}, got {value!r}")
    if "min_exclusive" in meta and value <= meta["min_exclusive"]:
        raise SpecError(f"{path}: expected a value > {meta['min_exclusive']}, got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise SpecError(f"{path}: expected a value <= {meta['max']}, got {value!r}")


def from_mapping(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a plain mapping, validating every key against its field."""
    where = path or "spec"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            known = ", ".join(fields)
            raise SpecError(f"{_join(path, str(key))}: unknown key (known here: {known})")
    values = {}
    for name, value in data.items():
        key_path = _join(path, name)
        values[name] = _coerce(hints[name], value, key_path)
        _check_range(values[name], fields[name].metadata, key_path)
    return cls(**values)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value``, with the value read as YAML (``3``, ``0.1``, ``[8, 16]``, ``true``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or "" in key.strip().split("."):
        raise SpecError(f"--set {text!r}: expected key.path=value")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise SpecError(
            f"--set {key.strip()}: value is not valid YAML ({err.__class__.__name__})"
        ) from None


def get_dotted(data: Mapping[str, Any], key: str) -> Any:
    """``data["a"]["b"]`` for ``key`` ``"a.b"``."""
    node: Any = data
    for part in key.split("."):
        node = node[part]
    return node


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"{'.'.join(parts[: i + 1])}: is not a section, cannot set {key}")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(data, key, value)
    return data


# ---------------------------------------------------------------------------- whole spec


def field_at(cls: type, dotted: str, prefix: str = "") -> tuple[dataclasses.Field, Any]:
    """The dataclass field a dotted key names and its type, or a SpecError naming the key."""
    current: Any = cls
    found: dataclasses.Field | None = None
    for part in dotted.split("."):
        fields = (
            {f.name: f for f in dataclasses.fields(current)}
            if dataclasses.is_dataclass(current)
            else {}
        )
        if part not in fields:
            raise SpecError(f"{_join(prefix, dotted)}: no such key in the spec")
        found = fields[part]
        current = typing.get_type_hints(current)[part]
    if found is None:
        raise SpecError(f"{_join(prefix, dotted)}: no such key in the spec")
    return found, current


UNSEARCHABLE = (
    "search",
    "search_alg",
    "name",
    "experiment",
    "num_samples",
    "max_concurrent",
    "resources",
)


def check_search(search: Mapping[str, Any]) -> None:
    for key, domain in search.items():
        if not isinstance(key, str) or not key:
            raise SpecError(f"search: keys must be dotted spec keys, got {key!r}")
        path = f"search.{key}"
        if key.split(".")[0] in UNSEARCHABLE:
            raise SpecError(f"{path}: cannot be searched over")
        found, field_type = field_at(SweepSpec, key, "search")
        if not isinstance(domain, Mapping) or len(domain) != 1:
            raise SpecError(f"{path}: expected one of {{{'|'.join(SEARCH_KINDS)}: ...}}")
        ((kind, args),) = domain.items()
        _check_domain(path, kind, args)
        _check_domain_values(path, kind, args, found, field_type)


def _check_domain_values(
    path: str, kind: str, args: Any, found: dataclasses.Field, field_type: Any
) -> None:
    """Every value the search can produce must be valid for the field it sets."""
    samples = list(args) if kind in ("grid", "choice") else [args[0]]
    if kind == "randint":
        samples = [args[0], args[1] - 1]
    for i, value in enumerate(samples):
        where = f"{path}.{kind}[{i}]"
        coerced = _coerce(field_type, value, where)
        _check_range(coerced, found.metadata, where)


def _check_domain(path: str, kind: str, args: Any) -> None:
    if kind not in SEARCH_KINDS:
        raise SpecError(f"{path}: unknown search kind {kind!r} (known: {', '.join(SEARCH_KINDS)})")
    if kind in ("grid", "choice"):
        if not isinstance(args, list) or not args:
            raise SpecError(f"{path}.{kind}: expected a non-empty list of values")
        return
    if not (isinstance(args, list) and len(args) == 2 and all(_is_number(a) for a in args)):
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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate(spec: SweepSpec) -> SweepSpec:
    """Checks that span several fields, after each field has been checked on its own."""
    try:
        check_widths(spec.model.arch, spec.model.widths)
    except ArchError as err:
        raise SpecError(f"model.widths: {err}") from None
    rho = spec.prune.rho
    if rho.min_epochs > rho.max_epochs:
        raise SpecError(
            f"prune.rho.min_epochs: {rho.min_epochs} is more than "
            f"prune.rho.max_epochs {rho.max_epochs}"
        )
    check_per_round(spec.resources.cpu, spec.resources.gpu, spec.resources.per_round)
    check_search(spec.search)
    try:
        check_search_alg(spec.search_alg, spec.search)
    except ValueError as err:
        raise SpecError(str(err)) from None
    return spec


def spec_from_dict(data: Any, overrides: Sequence[str] = ()) -> SweepSpec:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"spec: expected a mapping at the top level, got {type(data).__name__}")
    spec = from_mapping(SweepSpec, apply_overrides(data, overrides))
    try:
        check_model_based_samples(data)
    except ValueError as err:
        raise SpecError(str(err)) from None
    return validate(spec)


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: cannot read ({err.__class__.__name__})") from None
    try:
        data = yaml.safe_load(text)  # never yaml.load: a spec must not be able to run code
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or err.__class__.__name__
        raise SpecError(f"{where}: malformed YAML: {problem}") from None
    if data is None:
        # An empty file (or one of comments) would otherwise train every default silently.
        raise SpecError(f"{path}: the spec is empty; see sweeps/quickstart.yaml for one to copy")
    return data


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read, override and validate a spec; errors are one line naming the file and key."""
    data = read_yaml(path)
    try:
        return spec_from_dict(data, overrides)
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None


def spec_to_dict(spec: Any) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = _join(prefix, str(key))
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat
