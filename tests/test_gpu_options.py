"""The GPU training options (channels_last, bf16 autocast, torch.compile) and the one-host-sync-
per-epoch rule, all exercised on the CPU with tiny networks."""

from __future__ import annotations

import io

import pytest
import torch
from torch.overrides import TorchFunctionMode

from adprune_core.config import SpecError
from adprune_core.data import load_dataset
from adprune_core.engine import CompileUnavailable
from adprune_core.schedule import PruneSchedule
from ray_jobs.sweep import sweep_spec_from_dict as spec_from_dict

# Calls that make the host wait for the device when the tensor lives on a GPU: reads of values
# (item, tolist, numpy, cpu, Python number conversions) and ops whose output shape depends on
# the data (nonzero and friends). Host->device copies are not here: the GPU benchmark checks
# those with torch.cuda.set_sync_debug_mode.
SYNCING_CALLS = frozenset(
    {
        "item",
        "tolist",
        "numpy",
        "cpu",
        "__bool__",
        "__int__",
        "__float__",
        "__index__",
        "is_nonzero",
        "nonzero",
        "argwhere",
        "masked_select",
        "unique",
        "unique_consecutive",
        "equal",
        "allclose",
    }
)


class SyncCounter(TorchFunctionMode):
    """Counts every syncing call that Python code makes on a tensor while the mode is active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCING_CALLS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def tiny_spec(*overrides: str, num_train: int = 96, num_test: int = 48):
    base = [
        "model.arch=cnn2",
        "model.widths=[8, 8]",
        "data.dataset=synthetic",
        f"data.synthetic.num_train={num_train}",
        f"data.synthetic.num_test={num_test}",
        "data.synthetic.in_channels=3",  # with one channel both layouts are the same strides
        "data.batch_size=32",
        "prune.rho.min_epochs=4",  # no round ends within these tests
        "prune.rho.max_epochs=8",
    ]
    return spec_from_dict({}, [*base, *overrides])


@pytest.fixture(scope="module")
def data():
    return load_dataset(tiny_spec().data)


def epochs(spec, data, count: int) -> tuple[PruneSchedule, list]:
    schedule = PruneSchedule(spec, data, "cpu")
    return schedule, [schedule.train_one_epoch() for _ in range(count)]


# ---------------------------------------------------------------------------- channels_last


def test_channels_last_weights_and_batches_during_training(data):
    seen = []

    def record(conv, inputs):
        x = inputs[0]
        seen.append(
            (
                x.is_contiguous(memory_format=torch.channels_last),
                x.is_contiguous(),
                conv.weight.is_contiguous(memory_format=torch.channels_last),
                conv.weight.is_contiguous(),
            )
        )

    results = {}
    for layout in ("false", "true"):
        schedule = PruneSchedule(tiny_spec(f"train.channels_last={layout}"), data, "cpu")
        seen.clear()
        handle = schedule.model.features[0].register_forward_pre_hook(record)
        results[layout] = schedule.train_one_epoch()
        handle.remove()
        expected = (True, False, True, False) if layout == "true" else (False, True, False, True)
        assert seen and set(seen) == {expected}, layout

    plain, last = results["false"], results["true"]
    assert torch.isfinite(torch.tensor(last.loss))
    # Same seed, same arithmetic up to summation order inside the convolutions.
    assert last.layer_ad == pytest.approx(plain.layer_ad, abs=1e-3)
    assert last.loss == pytest.approx(plain.loss, rel=1e-3)


# ---------------------------------------------------------------------------- bf16


def test_bf16_autocast_is_active_and_training_still_learns(data):
    conv_dtypes, relu_dtypes = set(), set()
    schedule = PruneSchedule(tiny_spec("train.precision=bf16"), data, "cpu")
    model = schedule.model
    model.features[0].register_forward_hook(lambda _m, _i, out: conv_dtypes.add(out.dtype))
    model.prunable_relus()[0].register_forward_hook(lambda _m, _i, out: relu_dtypes.add(out.dtype))
    bf16 = [schedule.train_one_epoch() for _ in range(3)]
    assert conv_dtypes == {torch.bfloat16} and relu_dtypes == {torch.bfloat16}
    assert model.features[0].weight.dtype == torch.float32  # master weights stay fp32
    assert bf16[-1].loss < bf16[0].loss
    _, fp32 = epochs(tiny_spec(), data, 3)
    for low, full in zip(bf16, fp32):
        assert all(0.0 <= ad <= 1.0 for ad in low.layer_ad)
        assert low.layer_ad == pytest.approx(full.layer_ad, abs=0.03)


def test_bf16_counts_are_exact_past_bf16_precision():
    # A bf16 sum would round 1001 positives per channel to 1000; the monitor must not.
    from adprune_core.engine import positive_counts

    relu_output = torch.zeros(1001, 2, 1, 1, dtype=torch.bfloat16)
    relu_output[:, 0] = 0.5
    relu_output[:7, 1] = 3.0
    assert positive_counts(relu_output).tolist() == [1001, 7]


# ---------------------------------------------------------------------------- host syncs


def syncs_per_epoch(*overrides: str, num_train: int, num_test: int) -> list[str]:
    spec = tiny_spec("data.eval_batch_size=16", *overrides, num_train=num_train, num_test=num_test)
    schedule = PruneSchedule(spec, load_dataset(spec.data), "cpu")
    schedule.train_one_epoch()  # first-call work (allocator, lazy init) is not per batch
    with SyncCounter() as counter:
        schedule.train_one_epoch()  # training, evaluation and the density read
    return counter.calls


@pytest.mark.parametrize(
    "options",
    [(), ("train.precision=bf16", "train.channels_last=true")],
    ids=["fp32", "bf16-channels_last"],
)
def test_monitored_epoch_syncs_a_constant_number_of_times(options):
    # 2 training and 2 eval batches against 5 and 5: any per-batch sync changes the count.
    few = syncs_per_epoch(*options, num_train=64, num_test=32)
    many = syncs_per_epoch(*options, num_train=160, num_test=80)
    assert few == many
    # The three marked HOST SYNC points: epoch loss and accuracy, test accuracy, densities.
    assert sorted(few) == ["cpu", "item", "tolist", "tolist"]


# ---------------------------------------------------------------------------- torch.compile


def test_compiled_training_counts_densities_and_checkpoints_round_trip(data):
    spec = tiny_spec("train.compile=true")
    compiled, compiled_results = epochs(spec, data, 2)
    assert compiled.model._compiled_call_impl is not None
    from torch._dynamo.utils import counters

    assert counters["stats"]["unique_graphs"] >= 1  # it really compiled, not fell back
    _, eager_results = epochs(tiny_spec(), data, 3)
    # The monitor's hooks are traced into the graph: same counts as the eager network.
    for got, want in zip(compiled_results, eager_results):
        assert got.layer_ad == pytest.approx(want.layer_ad, abs=1e-4)

    buffer = io.BytesIO()
    torch.save(compiled.checkpoint(), buffer)
    checkpoint = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert not any(key.startswith("_orig_mod") for key in checkpoint["model"])
    # A compiled run's checkpoint resumes without compile, and continues where it stopped.
    resumed = PruneSchedule.from_checkpoint(tiny_spec(), checkpoint, data, "cpu")
    assert resumed.train_one_epoch().layer_ad == pytest.approx(eager_results[2].layer_ad, abs=1e-4)


def test_compile_without_a_working_compiler_is_one_clear_error(data, monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, "/nonexistent/c++"))
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    spec = tiny_spec("train.compile=true", "model.widths=[5, 7]")  # no kernel built before
    schedule = PruneSchedule(spec, data, "cpu")
    with pytest.raises(CompileUnavailable) as info:
        schedule.train_one_epoch()
    message = str(info.value)
    assert message.startswith("train.compile:") and "\n" not in message
    assert "train.compile=false" in message


# ---------------------------------------------------------------------------- spec keys


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("precision", "fp16", "expected one of fp32, bf16"),
        ("channels_last", "yes", "expected true or false"),
        ("compile", 1, "expected true or false"),
    ],
)
def test_bad_option_values_name_the_key(dotted, value, expected):
    with pytest.raises(SpecError) as info:
        spec_from_dict({"train": {dotted: value}})
    message = str(info.value)
    assert message.startswith(f"train.{dotted}:") and expected in message
    assert "\n" not in message


def test_options_default_off():
    train = spec_from_dict({}).train
    assert (train.channels_last, train.precision, train.compile) == (False, "fp32", False)
