"""The errors a user can cause and fix, each one line. They live apart from the modules that
raise them, which import torch, so that a command that only reads records (``compare``,
``pareto``, ``--help``) can catch them without loading torch."""

from __future__ import annotations


class SpecError(ValueError):
    """A bad spec value; the message is one line and starts with the key path."""


class ArchError(ValueError):
    """An unknown architecture or a width list that does not fit it."""


class DatasetNotFoundError(Exception):
    """The dataset's files are not where the spec says; the message says how to fix it."""


class DeviceUnavailable(ValueError):
    """The spec asks for a device this machine does not have."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class PluginError(ValueError):
    """A plugin that cannot be used; one line, ``KEY: NAME: what is wrong``."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"{key}: {detail}")
        self.key = key
        self.detail = detail
