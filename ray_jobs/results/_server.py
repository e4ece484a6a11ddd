"""A child server that its parent owns: started in its own process group, stopped with every
worker it spawned when the parent gets SIGINT or SIGTERM or leaves, and reported if it dies."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ServerDied(RuntimeError):
    """The server exited without being asked to."""


class OwnedServer:
    """``with OwnedServer(command, env) as server:`` runs ``command`` until the block ends or
    a stop signal arrives; either way its whole process group is gone afterwards."""

    def __init__(self, command: list[str], env: Mapping[str, str], grace_s: float = 10.0) -> None:
        self.command = command
        self.env = dict(env)
        self.grace_s = grace_s
        self.stopping = False
        self.process: subprocess.Popen[bytes] | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> OwnedServer:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_stop_signal)
        # A session of its own: Ctrl-C in the terminal reaches only us, and we can end the
        # server's workers with one killpg even after the server itself has exited.
        self.process = subprocess.Popen(self.command, env=self.env, start_new_session=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping = True
        self._end_group()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        self._signal_group(signal.SIGTERM)

    def _signal_group(self, signum: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # every member has exited already
            os.killpg(self.process.pid, signum)

    def _group_alive(self) -> bool:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _end_group(self) -> None:
        """SIGTERM to every member, SIGKILL to what is left after the grace period."""
        assert self.process is not None
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline:
            self.process.poll()  # reap the leader, or it lingers as a zombie in the group
            if not self._group_alive():
                return
            time.sleep(0.1)
        self._signal_group(signal.SIGKILL)
        self.process.wait()

    def wait_until_ready(self, health_url: str, timeout_s: float) -> None:
        """Return once ``health_url`` answers 200; raise :class:`ServerDied` if the server
        exits first, or TimeoutError."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while not self.stopping:
            code = self.process.poll()
            if code is not None:
                raise ServerDied(f"the MLflow server exited with status {code} before it answered")
            try:
                with urllib.request.urlopen(health_url, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise ServerDied(
                    f"the MLflow server did not answer {health_url} in {timeout_s:.0f}s"
                )
            time.sleep(0.25)

    def wait(self) -> None:
        """Block until the server exits; raise :class:`ServerDied` unless we stopped it."""
        assert self.process is not None
        code = self.process.wait()
        if not self.stopping:
            raise ServerDied(f"the MLflow server exited with status {code}; the UI is down")
