"""Stopping a sweep: Ctrl-C (SIGINT) and SIGTERM alike, ending in one line of our own.

The first signal asks Tune to save the experiment state and stop, through Tune's own stop
handler (the one it installs for SIGUSR1 while ``fit()`` runs); Tune then ends every trial,
the MLflow writer writes what it has, and ``fit()`` returns. A second signal ends at once:
whatever the writer had not yet written is still in its on-disk journal, and the next
``--resume`` writes it.

SIGTERM would otherwise meet Ray's native handler, which aborts the driver with a stack
dump (ray#50358); SIGINT would meet Tune's handler, whose message tells the user to call
``Tuner.restore``. A handler of our own, installed after ``ray.init``, replaces both.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Tune's lines about an interrupted run: the CLI says it in its own words, with the command
# that goes on. The experiment-analysis line lists trials that had no results yet.
_TUNE_INTERRUPT_LINES = (
    "Stop signal received",
    "Experiment has been interrupted",
    "Trials did not complete",
)


class SweepInterrupted(Exception):
    """The sweep stopped on a signal; ``str()`` is the line to show, with how to go on."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class StopSignals:
    """While active, SIGINT and SIGTERM stop the sweep as described in the module docstring.

    ``received`` is the first signal's number; ``KeyboardInterrupt`` is raised for a second
    one, or for a first one before Tune can save anything.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._usr1_before: Any = None
        self._sigint_env: str | None = None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach only the main thread; Tune's defaults stay
        self._sigint_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours takes SIGINT
        self._usr1_before = signal.getsignal(signal.SIGUSR1)
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def reinstall(self) -> None:
        """Take the signals back after ``ray.init``, which installs a SIGTERM handler (and
        its core worker a native one) of its own."""
        if self._previous:
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum
        tune_stop = signal.getsignal(signal.SIGUSR1)
        # Only a handler Tune installed during this fit() is live; before that, nothing
        # has been saved that a stop could keep, so stop at once.
        if not callable(tune_stop) or tune_stop is self._usr1_before:
            raise KeyboardInterrupt
        tune_stop(signum, frame)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._previous:
            if self._sigint_env is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._sigint_env


class _TuneNoise(logging.Filter):
    """Drops Tune's interruption lines, and its list of trials without results when every
    entry is only a missing result file (trials that had not reported yet)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(_TUNE_INTERRUPT_LINES):
            return False
        if message.startswith("Failed to fetch metrics for"):
            entries = [line for line in message.splitlines()[1:] if line.startswith("- ")]
            return not all("FileNotFoundError(" in line for line in entries)
        return True


def quiet_tune_interruptions() -> None:
    """Install :class:`_TuneNoise` on the loggers that print those lines (idempotent)."""
    for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _TuneNoise) for f in logger.filters):
            logger.addFilter(_TuneNoise())
