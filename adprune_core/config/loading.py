"""Reading a spec: YAML, ``--set`` overrides, pydantic validation, one-line errors.

Every error is a :class:`SpecError` of one line that starts with the key path (and, from a
file, the file), so the command line can print it as it is and exit 2.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import TypeAdapter, ValidationError

from adprune_core.config.errors import SpecError
from adprune_core.config.spec import ScheduleSpec

SpecT = TypeVar("SpecT")

_TYPE_NAMES = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "dataclass_type": "a mapping",
    "dataclass_exact_type": "a mapping",
}
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _loc_path(loc: Sequence[Any]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith(
            ("function-", "literal[", "lax-or-strict", "nullable")
        ):
            continue  # pydantic's own validator steps, not keys of the spec
        else:
            path = _join(path, str(part))
    return path


def _fields_at(cls: type, path: str) -> list[str]:
    """The field names of the section ``path`` names inside ``cls`` (for 'known here')."""
    current: Any = cls
    for part in [p for p in path.split(".") if p]:
        hints = typing.get_type_hints(current) if dataclasses.is_dataclass(current) else {}
        current = hints.get(part)
        args = [a for a in typing.get_args(current) if dataclasses.is_dataclass(a)]
        current = args[0] if args else current
    return (
        [f.name for f in dataclasses.fields(current)] if dataclasses.is_dataclass(current) else []
    )


def error_line(cls: type, err: ValidationError) -> str:
    """The first of pydantic's errors as ``key.path: what is wrong``."""
    first = err.errors(include_url=False)[0]
    kind, loc, value = first["type"], first["loc"], first.get("input")
    path = _loc_path(loc)
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        parent = path.rpartition(".")[0]
        known = ", ".join(_fields_at(cls, parent))
        return f"{path}: unknown key (known here: {known})"
    if kind in _BOUNDS:
        bound = next(iter(first.get("ctx", {}).values()), "?")
        return f"{path or 'spec'}: expected a value {_BOUNDS[kind]} {bound}, got {_short(value)}"
    if kind == "literal_error":
        expected = first.get("ctx", {}).get("expected", "")
        choices = expected.replace(" or ", ", ").replace("'", "")
        return f"{path}: expected one of {choices}, got {_short(value)}"
    if kind == "finite_number":
        return f"{path}: expected a finite number, got {_short(value)}"
    if kind in _TYPE_NAMES:
        return f"{path or 'spec'}: expected {_TYPE_NAMES[kind]}, got {_short(value)}"
    message = str(first["msg"]).removeprefix("Value error, ")
    # A model validator names the field it checked first in its message ("widths: ...").
    head, sep, rest = message.partition(": ")
    if sep and re.fullmatch(r"[A-Za-z_][\w.]*", head):
        return f"{_join(path, head)}: {rest}"
    return f"{path or 'spec'}: {message}"


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    # Building the validator costs more than using it; the scheduler validates every result.
    return TypeAdapter(cls)


def validate_as(cls: type[SpecT], data: Any) -> SpecT:
    """``data`` as ``cls``, or a one-line :class:`SpecError` naming the key path."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SpecError(f"spec: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return _adapter(cls).validate_python(dict(data))
    except ValidationError as err:
        raise SpecError(error_line(cls, err)) from None


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


def spec_from_dict(
    data: Any, overrides: Sequence[str] = (), cls: type[SpecT] = ScheduleSpec
) -> SpecT:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"spec: expected a mapping at the top level, got {type(data).__name__}")
    return validate_as(cls, apply_overrides(data, overrides))


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


def load_spec(
    path: str | Path, overrides: Sequence[str] = (), cls: type[SpecT] = ScheduleSpec
) -> SpecT:
    """Read, override and validate a spec; errors are one line naming the file and key."""
    data = read_yaml(path)
    try:
        return spec_from_dict(data, overrides, cls)
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
