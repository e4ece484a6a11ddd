"""The spec's ``pareto`` section, read beside the method's spec: ``pareto.reference`` sets the
reference point the sweep run's hypervolume is scored against (the syntax of
``pareto --reference``).

The method's spec (``adprune_core``) does not know the section yet, so it is taken out of the
YAML (and out of ``--set pareto.…`` overrides) before the rest is validated there. Errors are
one line naming the file and key, like the spec's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adprune_core.errors import SpecError
from ray_jobs.results._front import DEFAULT_OBJECTIVES, parse_objectives
from ray_jobs.results._reference import (
    SPEC_KEY,
    ReferenceSpec,
    check_reference_objectives,
    parse_reference,
)

SECTION = "pareto"
SECTION_KEYS = ("reference",)


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(``--set pareto.…`` overrides, the others)."""
    ours = [o for o in overrides if o.strip().startswith(f"{SECTION}.")]
    return ours, [o for o in overrides if o not in ours]


def section_reference(section: Any, overrides: Sequence[str]) -> ReferenceSpec | None:
    """The reference the ``pareto`` section (and its overrides) give; None when absent."""
    from adprune_core.spec import parse_override

    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise SpecError(f"{SECTION}: expected a mapping, got {section!r}")
    section = dict(section)
    for text in overrides:
        key, value = parse_override(text)
        section[key.split(".", 1)[1]] = value
    for key in section:
        if key not in SECTION_KEYS:
            known = ", ".join(SECTION_KEYS)
            raise SpecError(f"{SECTION}.{key}: unknown key (known here: {known})")
    text = section.get("reference")
    if text is None:
        return None
    if not isinstance(text, str | int | float):
        raise SpecError(f"{SPEC_KEY}: expected a string such as 'accuracy=net0-5'")
    reference = parse_reference(str(text), SPEC_KEY)
    check_reference_objectives(reference, parse_objectives(DEFAULT_OBJECTIVES), SPEC_KEY)
    return reference


def load_spec_and_reference(
    path: str | Path, overrides: Sequence[str] = ()
) -> tuple[Any, ReferenceSpec | None]:
    """The method's spec and the ``pareto.reference`` beside it."""
    from adprune_core.spec import read_yaml, spec_from_dict

    data = read_yaml(path)
    ours, theirs = split_overrides(overrides)
    section = data.pop(SECTION, None) if isinstance(data, dict) else None
    try:
        reference = section_reference(section, ours)
        return spec_from_dict(data, theirs), reference
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None
