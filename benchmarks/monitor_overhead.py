"""Density monitor overhead: epoch time with AD monitoring on vs off, interleaved.

Target: <= 1.03x on CPU (cnn, and a VGG at reduced width). On a GPU, also: zero host syncs
per batch, checked with torch.cuda.set_sync_debug_mode("error") over a monitored epoch.
"""

import torch
from common import cifar_shaped, median, reproduce, timed, verdict

from adprune_core.data import DeviceBatches
from adprune_core.engine import DensityMonitor, train_epoch
from adprune_core.nets import build_model, default_widths

REPEATS = 15
CASES = {
    "cnn": None,
    "vgg11 x0.25": [max(1, w // 4) for w in default_widths("vgg11")],
}


def one_case(label: str, widths: list[int] | None, device: str) -> float:
    arch = label.split()[0]
    data = cifar_shaped(2048 if device == "cpu" else 50000)
    batches = DeviceBatches(data, device, augment=True)
    model = build_model(arch, widths, num_classes=10, input_size=32, in_channels=3).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(0)

    def plain() -> None:
        train_epoch(model, batches, optimizer, 128, generator)

    def monitored() -> None:
        with DensityMonitor(model) as monitor:
            train_epoch(model, batches, optimizer, 128, generator)
            monitor.read()  # the epoch's one host sync

    plain()  # warm-up: allocator, kernels
    off, on, ratios = [], [], []
    for index in range(REPEATS):
        # Adjacent pairs, alternating which goes first: drift on a shared machine hits both.
        first, second = (plain, monitored) if index % 2 == 0 else (monitored, plain)
        a, b = timed(first), timed(second)
        t_off, t_on = (a, b) if first is plain else (b, a)
        off.append(t_off)
        on.append(t_on)
        ratios.append(t_on / t_off)
    ratio = median(ratios)
    print(
        f"{label:<12} {device}: epoch off {median(off):.3f}s  on {median(on):.3f}s  "
        f"median paired ratio {ratio:.3f}x, min-time ratio {min(on) / min(off):.3f}x  "
        f"({verdict(ratio, 1.03, higher_is_better=False)})"
    )
    return ratio


def no_sync_per_batch() -> None:
    model = build_model("vgg11", None, num_classes=10, input_size=32, in_channels=3).cuda()
    batches = DeviceBatches(cifar_shaped(4096), "cuda", augment=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    monitor = DensityMonitor(model)
    monitor.attach()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for inputs, targets in batches.train_batches(128, generator):
            loss = torch.nn.functional.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    monitor.read()
    monitor.detach()
    print("GPU: a monitored epoch ran under set_sync_debug_mode('error'): 0 host syncs/batch")


if __name__ == "__main__":
    reproduce("monitor_overhead.py")
    torch.set_num_threads(1)  # one trial's share of the machine, and less noise
    for label, widths in CASES.items():
        one_case(label, widths, "cpu")
    if torch.cuda.is_available():
        no_sync_per_batch()
        for label, widths in CASES.items():
            one_case(label, widths, "cuda")
    else:
        print("GPU: none on this machine; the sync check runs where CUDA is available")
