"""Package exports that load their module on first use (PEP 562).

A package's ``__init__`` names its public API in one table; nothing is imported until a
name is used. Reading a sweep back (``compare``, ``pareto``) then never pays for importing
Ray, and importing one room never drags in another.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, table: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package``, whose name -> module
    table maps each public name to the (relative) module that defines it."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    def __dir__() -> list[str]:
        return sorted(table)

    return __getattr__, __dir__, sorted(table)
