"""Trial checkpoints load with ``torch.load(weights_only=True)``: they sit on shared storage,
and a full unpickle could run code. A checkpoint holding a pickled object is refused in one
line, and an older readable one is used instead."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adprune_core.config import spec_from_dict
from adprune_core.data import load_dataset
from adprune_core.schedule import PruneSchedule
from ray_jobs.sweep._trainable import CHECKPOINT_FILE, load_saved_state, read_checkpoint

TINY = [
    "model.arch=cnn2",
    "model.widths=[4, 6]",
    "data.dataset=synthetic",
    "data.synthetic.num_train=32",
    "data.synthetic.num_test=16",
    "record.latency.enabled=false",
]


class Payload:
    """Any class of its own: unpickling it needs the full machinery weights_only refuses."""

    def __init__(self) -> None:
        self.note = "unpickled"


def write(folder: Path, content: object) -> Path:
    folder.mkdir(parents=True)
    torch.save(content, folder / CHECKPOINT_FILE)
    return folder


@pytest.fixture(scope="module")
def real_checkpoint() -> dict:
    spec = spec_from_dict({}, TINY)
    schedule = PruneSchedule(spec, load_dataset(spec.data), "cpu")
    schedule.step()
    return schedule.checkpoint()


def test_a_real_checkpoint_loads_with_weights_only(tmp_path, real_checkpoint):
    folder = write(tmp_path / "checkpoint_000000", real_checkpoint)
    saved = read_checkpoint(folder, "cpu")
    assert saved["state"] == real_checkpoint["state"]
    assert torch.equal(saved["generator"], real_checkpoint["generator"])


def test_a_pickled_object_is_refused_in_one_line(tmp_path, real_checkpoint):
    folder = write(tmp_path / "checkpoint_000001", {**real_checkpoint, "extra": Payload()})
    with pytest.raises(Exception, match=r"[Ww]eights only load failed"):
        read_checkpoint(folder, "cpu")
    with pytest.raises(RuntimeError) as info:
        load_saved_state(folder, "cpu")
    message = str(info.value)
    assert message == "no readable checkpoint: checkpoint_000001 unreadable (UnpicklingError)"


def test_an_older_readable_checkpoint_is_used_instead(tmp_path, real_checkpoint):
    write(tmp_path / "checkpoint_000000", real_checkpoint)
    latest = write(tmp_path / "checkpoint_000001", {**real_checkpoint, "extra": Payload()})
    saved, note = load_saved_state(latest, "cpu")
    assert saved["state"] == real_checkpoint["state"]
    assert note == "checkpoint_000001 unreadable (UnpicklingError): resumed from checkpoint_000000"
