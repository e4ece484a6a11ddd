"""Figures drawn in a process of their own, so that matplotlib never holds the driver's GIL.

The artifact lane already keeps figures off the thread that writes epoch metrics, but a
thread shares the driver's interpreter lock: while matplotlib rasterises a Fig. 3 (~150 ms),
the metrics thread, Tune's event loop and the journal's appends wait for the lock. Drawing in
a child process (spawned once, on the first figure) lets them run on another core. The
child's CPU time is still the writer's, and is counted as such (:attr:`FigureRenderer.cpu_s`).
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


class FigureProcessDied(RuntimeError):
    """The figure process died twice on one figure: drawing it again would too."""


class FigureFailed(RuntimeError):
    """Drawing raised in the figure process; the message is its error line."""


class FigureRenderer:
    """One child process that draws PNG files, started on the first figure and restarted
    if it dies. A plain ``python -m`` child, not multiprocessing's spawn: spawn re-runs the
    caller's ``__main__``, and a user's script that calls ``launch`` at top level would
    launch again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one figure at a time, and start/stop
        self._child: subprocess.Popen | None = None
        self._child_cpu_s = 0.0  # the current child's CPU at its last answer
        self.cpu_s = 0.0  # every child's CPU time, startup and imports included
        self.on_cpu: Callable[[float], None] | None = None  # the writer's CPU tally

    def draw(self, name: str, path: Path, *args: Any) -> Path:
        """Draw ``_figures.<name>(path, *args)`` in the child process; ``path``."""
        with self._lock:
            for attempt in range(2):
                try:
                    reply = self._ask(self._started(), (name, str(path), args))
                except (EOFError, OSError, pickle.UnpicklingError):
                    self._stop_child()
                    if attempt:
                        died = f"the figure process died drawing {path.name}"
                        raise FigureProcessDied(died) from None
                    continue
                return self._settle(reply, path)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._stop_child()

    def _started(self) -> subprocess.Popen:
        if self._child is None or self._child.poll() is not None:
            self._child = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=child_environment(),
            )
            self._child_cpu_s = 0.0
        return self._child

    @staticmethod
    def _ask(child: subprocess.Popen, request: tuple[str, str, tuple[Any, ...]]) -> Any:
        assert child.stdin is not None and child.stdout is not None
        pickle.dump(request, child.stdin)
        child.stdin.flush()
        return pickle.load(child.stdout)

    def _settle(self, reply: tuple[str, Any, float], path: Path) -> Path:
        outcome, detail, child_cpu = reply
        spent = max(child_cpu - self._child_cpu_s, 0.0)
        self._child_cpu_s = child_cpu
        self.cpu_s += spent
        if self.on_cpu is not None:
            self.on_cpu(spent)
        if outcome != "ok":
            raise FigureFailed(f"{path.name}: {detail}")
        return path

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        try:
            if child.stdin is not None:
                child.stdin.close()  # the child ends at end of input
            child.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            child.kill()
            child.wait()


class FigureRenderers:
    """Up to ``size`` figure processes, so that the writer's artifact threads draw side by
    side; each process starts on the first figure that finds the others busy."""

    def __init__(self, size: int = 1) -> None:
        self._all: list[FigureRenderer] = []
        self._free: queue.LifoQueue[FigureRenderer] = queue.LifoQueue()
        self.grow(size)

    def grow(self, size: int) -> None:
        """At least ``size`` figure processes (each still starts on its first figure).
        Called before the first figure: the free list is rebuilt."""
        tally = self._all[0].on_cpu if self._all else None
        while len(self._all) < size:
            self._all.append(FigureRenderer())
            self._all[-1].on_cpu = tally
        # Last in, first out, the first process on top: one thread drawing at a time keeps
        # using one process, and a second starts only when two figures are drawn at once.
        self._free = queue.LifoQueue()
        for renderer in reversed(self._all):
            self._free.put(renderer)

    @property
    def cpu_s(self) -> float:
        return sum(renderer.cpu_s for renderer in self._all)

    @property
    def on_cpu(self) -> Callable[[float], None] | None:
        return self._all[0].on_cpu

    @on_cpu.setter
    def on_cpu(self, tally: Callable[[float], None] | None) -> None:
        for renderer in self._all:
            renderer.on_cpu = tally

    def draw(self, name: str, path: Path, *args: Any) -> Path:
        """Draw ``_figures.<name>(path, *args)`` in a free figure process; ``path``."""
        renderer = self._free.get()
        try:
            return renderer.draw(name, path, *args)
        finally:
            self._free.put(renderer)

    def close(self) -> None:
        for renderer in self._all:
            renderer.close()


def child_environment() -> dict[str, str]:
    """The driver's environment, with this package importable even where the driver found it
    through ``sys.path`` rather than an install (a source checkout, a notebook)."""
    package_root = str(Path(__file__).resolve().parents[2])
    paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "MPLBACKEND": "Agg"}


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The child's loop: draw each request, answer with the outcome and the CPU so far."""
    from ray_jobs.tracking import _figures

    while True:
        try:
            name, path, args = pickle.load(requests)
        except EOFError:
            return
        try:
            getattr(_figures, name)(Path(path), *args)
            reply: tuple[str, Any, float] = ("ok", None, time.process_time())
        except Exception as err:  # one bad figure is that record's error, not the child's end
            reply = ("error", f"{type(err).__name__}: {err}"[:300], time.process_time())
        pickle.dump(reply, replies)
        replies.flush()


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group: the driver decides when drawing ends (it closes
    # the pipe), and a KeyboardInterrupt traceback here would break its one-line exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing a library prints may corrupt the replies
    serve(sys.stdin.buffer, replies)
