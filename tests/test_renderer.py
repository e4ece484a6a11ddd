"""The figure process: figures drawn off the driver's interpreter, restarted if it dies."""

from __future__ import annotations

import os
import signal

import pytest

from ray_jobs.tracking._renderer import FigureFailed, FigureRenderer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CURVES = [("net0", [0.5, 0.45, 0.44]), ("net1", [0.6, 0.52])]


@pytest.fixture
def renderer():
    figures = FigureRenderer()
    yield figures
    figures.close()


def child_pid(figures: FigureRenderer) -> int:
    assert figures._child is not None
    return figures._child.pid


def test_a_figure_is_drawn_in_a_child_process_and_its_cpu_is_counted(tmp_path, renderer):
    counted: list[float] = []
    renderer.on_cpu = counted.append
    path = renderer.draw("plot_trial_ad", tmp_path / "ad.png", "t0: total AD", CURVES)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert child_pid(renderer) != os.getpid()
    # The child's imports and drawing are CPU the writer spent, reported as it is spent.
    assert renderer.cpu_s > 0 and sum(counted) == pytest.approx(renderer.cpu_s)


def test_a_killed_figure_process_is_restarted_for_the_next_figure(tmp_path, renderer):
    renderer.draw("plot_trial_ad", tmp_path / "a.png", "a", CURVES)
    first = child_pid(renderer)
    os.kill(first, signal.SIGKILL)
    renderer._child.wait()
    path = renderer.draw("plot_trial_ad", tmp_path / "b.png", "b", CURVES)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert child_pid(renderer) != first


def test_a_figure_that_raises_names_its_error_and_the_process_lives_on(tmp_path, renderer):
    renderer.draw("plot_trial_ad", tmp_path / "a.png", "a", CURVES)
    pid = child_pid(renderer)
    with pytest.raises(FigureFailed, match=r"maps\.png: KeyError: 'net0'"):
        renderer.draw("plot_activation_maps", tmp_path / "maps.png", "t0", {})
    assert child_pid(renderer) == pid
    assert renderer.draw("plot_trial_ad", tmp_path / "c.png", "c", CURVES).exists()


def test_close_ends_the_figure_process(tmp_path):
    figures = FigureRenderer()
    figures.draw("plot_trial_ad", tmp_path / "a.png", "a", CURVES)
    child = figures._child
    figures.close()
    assert child is not None and child.poll() == 0


def test_ctrl_c_leaves_the_figure_process_to_the_driver(tmp_path, renderer):
    """SIGINT reaches the whole process group; the child must not die with a traceback."""
    renderer.draw("plot_trial_ad", tmp_path / "a.png", "a", CURVES)
    pid = child_pid(renderer)
    os.kill(pid, signal.SIGINT)
    assert renderer.draw("plot_trial_ad", tmp_path / "b.png", "b", CURVES).exists()
    assert child_pid(renderer) == pid
