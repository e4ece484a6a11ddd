"""The sweep side's user-facing error."""

from __future__ import annotations

from adprune_core.config import SpecError


class LaunchError(SpecError):
    """A launch option that cannot work (cluster, storage, resume); one line, exit 2."""
