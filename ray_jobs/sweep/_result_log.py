"""Tune's JSON result logger (``result.json`` per trial), keeping every row across PAUSEs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.logger import JsonLoggerCallback


class KeepLocalJsonLoggerCallback(JsonLoggerCallback):
    """Tune's JSON result logger, minus the download that lost a paused trial's last row.

    On every (re)start of a trial Tune copies ``result.json`` back from storage over the
    driver's local copy. Storage is synced only from time to time, so the rows written since
    the last sync (among them the report that ended the round) vanished at each rho PAUSE.
    The local copy is kept when it exists; a driver without one (``--resume`` on another
    machine) still restores it from storage.
    """

    def _restore_from_remote(self, file_name: str, trial: Any) -> None:
        if not Path(trial.local_path, file_name).exists():
            super()._restore_from_remote(file_name, trial)
