import pytest
import torch

from adprune_core.engine import DensityMonitor
from adprune_core.nets import build_model


def reference_densities(model, batches):
    """Per-layer positive fraction over all batches, counted with plain hooks in the test."""
    pos = [0] * len(model.prunable_relus())
    tot = [0] * len(model.prunable_relus())
    chan = [None] * len(pos)

    def hook(i):
        def fn(_m, _i, out):
            pos[i] += int((out > 0).sum())
            tot[i] += out.numel()
            c = (out > 0).sum(dim=(0, 2, 3)).double()
            chan[i] = c if chan[i] is None else chan[i] + c

        return fn

    handles = [r.register_forward_hook(hook(i)) for i, r in enumerate(model.prunable_relus())]
    for x in batches:
        model(x)
    for h in handles:
        h.remove()
    per_channel_elems = [t // len(c) for t, c in zip(tot, chan)]
    return [p / t for p, t in zip(pos, tot)], [
        (c / n).tolist() for c, n in zip(chan, per_channel_elems)
    ]


@pytest.mark.parametrize("arch", ["cnn", "resnet18", "vgg11"])
def test_monitor_matches_reference_counts(arch):
    torch.manual_seed(0)
    widths = [3 + (i % 4) for i in range(len(build_model(arch).widths))]
    model = build_model(arch, widths, num_classes=4, input_size=8, in_channels=1).train()
    batches = [torch.randn(5, 1, 8, 8), torch.randn(3, 1, 8, 8)]
    with torch.no_grad():
        expected_layers, expected_channels = reference_densities(model, batches)
        with DensityMonitor(model) as monitor:
            for x in batches:
                model(x)
            reading = monitor.read()
    assert reading.layers == pytest.approx(expected_layers)
    for got, want in zip(reading.channels, expected_channels):
        assert got == pytest.approx(want)
    assert reading.total == pytest.approx(sum(expected_layers) / len(expected_layers))
    assert len(reading.layers) == len(widths)


def test_counts_train_passes_only_by_default():
    model = build_model("cnn2", [4, 4], num_classes=2, input_size=8, in_channels=1)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad(), DensityMonitor(model) as monitor:
        model.eval()(x)
        model.eval()(x)
        with pytest.raises(RuntimeError):
            monitor.read()  # nothing counted yet
        model.train()(x)
        reading = monitor.read()
    # cnn2 pools after its second conv, so both layers see 8x8 maps: N*C*H*W each.
    assert reading.elements == [4 * 4 * 8 * 8, 4 * 4 * 8 * 8]


def test_counts_eval_passes_when_asked():
    model = build_model("cnn2", [4, 4], num_classes=2, input_size=8, in_channels=1)
    with torch.no_grad(), DensityMonitor(model, count_train=False, count_eval=True) as monitor:
        model.train()(torch.randn(4, 1, 8, 8))
        model.eval()(torch.randn(2, 1, 8, 8))
        reading = monitor.read()
    assert reading.elements[0] == 2 * 4 * 8 * 8


def test_detaches_on_exit_and_on_error():
    model = build_model("cnn2", [4, 4], num_classes=2, input_size=8, in_channels=1)
    with pytest.raises(ValueError), DensityMonitor(model) as monitor:
        assert monitor.attached
        raise ValueError("boom")
    assert not monitor.attached
    assert all(not r._forward_hooks for r in model.prunable_relus())


def test_counters_are_int64_on_the_model_device_and_reset():
    model = build_model("cnn2", [4, 4], num_classes=2, input_size=8, in_channels=1)
    monitor = DensityMonitor(model)
    with torch.no_grad(), monitor:
        model(torch.randn(2, 1, 8, 8))
        counters = [c for c in monitor._positives if c is not None]
        assert all(c.dtype == torch.int64 for c in counters)
        assert all(c.device == next(model.parameters()).device for c in counters)
        first = monitor.read()
        model(torch.ones(2, 1, 8, 8) * 100)
        second = monitor.read()
    # After a reset the second reading reflects only the second batch.
    assert second.elements == first.elements
    assert second.layers != first.layers


def test_int64_counts_do_not_overflow_past_2_31():
    model = build_model("cnn2", [1, 1], num_classes=2, input_size=8, in_channels=1)
    monitor = DensityMonitor(model)
    # Seed the device counters as a long epoch would have left them.
    monitor._positives[0].fill_(2**31 - 10)
    monitor._elements[0].fill_(2**32)
    with torch.no_grad(), monitor:
        model.train()(torch.randn(1, 1, 8, 8))
        reading = monitor.read()
    assert reading.layers[0] > 0.49  # (2**31 - 10 + k) / (2**32 + 64), no wrap to negative
