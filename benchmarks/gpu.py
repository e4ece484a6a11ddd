"""GPU training options on one CUDA device, with AD monitoring on throughout.

1. A full-width VGG-19 epoch on CIFAR-shaped synthetic data (50,000 images, batch 128, crop +
   flip on the device), through the product's epoch (train, evaluate, density read), with
   channels_last + bf16 (+ torch.compile with --compile), against fp32 / NCHW.
   Target: <= 2 s per epoch on an H100.
2. Host syncs per batch of a monitored epoch: torch.cuda.set_sync_debug_mode("warn") counts
   every synchronizing CUDA call over epochs of two lengths; the slope is the per-batch count,
   the intercept the per-epoch reads. Target: 0 per batch. Measured with and without the
   on-device augmentation, so that a per-batch sync is traced to the loop or to the data.
3. Sharing one GPU: aggregate images/s of 4 trials at resources.gpu 0.25 against 1 trial at
   resources.gpu 1, for a net1-sized VGG-19 (half width), as real sweeps launched through the
   CLI (embedded Ray, one round of fixed epochs), read back from each trial's result.json.

Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch
from common import cifar_shaped, launch, median, reproduce, timed, trial_results, verdict

from adprune_core.data import ArrayDataset
from adprune_core.nets import default_widths
from adprune_core.schedule import PruneSchedule
from ray_jobs.sweep import sweep_spec_from_dict as spec_from_dict

EPOCH_TARGET_S = 2.0
BATCH = 128
NET1_WIDTHS = [max(1, w // 2) for w in default_widths("vgg19")]

SWEEP_SPEC = """
name: {name}
experiment: adprune-bench
model: {{arch: vgg19, widths: {widths}}}
data:
  dataset: synthetic
  batch_size: {batch}
  augment: true
  synthetic: {{num_train: {num_train}, num_test: 1000, num_classes: 10, input_size: 32,
               in_channels: 3}}
train: {{device: cuda, channels_last: true, precision: bf16, compile: {compile}}}
prune:
  rho: {{min_epochs: {epochs}, max_epochs: {epochs}}}
  max_rounds: 1
search:
  train.seed: {{grid: {seeds}}}
resources: {{cpu: 1, gpu: {gpu}}}
"""


def options(channels_last: bool, precision: str, compile_model: bool) -> list[str]:
    return [
        "train.device=cuda",
        f"train.channels_last={str(channels_last).lower()}",
        f"train.precision={precision}",
        f"train.compile={str(compile_model).lower()}",
        "prune.rho.min_epochs=1000",  # no round ends while we time epochs
        "prune.rho.max_epochs=1000",
    ]


def schedule_for(data: ArrayDataset, widths: list[int] | None, extra: list[str]) -> PruneSchedule:
    """The product's schedule on ``data``: every epoch trains, evaluates and reads densities."""
    overrides = ["model.arch=vgg19", f"data.batch_size={BATCH}", *extra]
    if widths is not None:
        overrides.append(f"model.widths={widths}")
    return PruneSchedule(spec_from_dict({}, overrides), data, "cuda")


# ---------------------------------------------------------------------------- 1. epoch time


def epoch_seconds(data: ArrayDataset, extra: list[str], epochs: int) -> float:
    schedule = schedule_for(data, None, extra)
    schedule.train_one_epoch()  # warm-up: cuDNN plans, allocator, compilation
    # Each epoch ends in its host syncs (loss, accuracy, densities): wall time is GPU time.
    return median([timed(schedule.train_one_epoch) for _ in range(epochs)])


def epoch_time(data: ArrayDataset, epochs: int, compile_model: bool) -> None:
    plain = epoch_seconds(data, options(False, "fp32", False), epochs)
    label = "channels_last + bf16" + (" + compile" if compile_model else "")
    fast = epoch_seconds(data, options(True, "bf16", compile_model), epochs)
    images = data.train_x.shape[0]
    print(
        f"VGG-19 full width, {images} CIFAR-shaped images, batch {BATCH}, monitoring on "
        f"(median of {epochs} epochs after one warm-up):"
    )
    print(f"  {'fp32, NCHW:':<32} {plain:.2f} s/epoch  {images / plain:,.0f} images/s")
    print(
        f"  {label + ':':<32} {fast:.2f} s/epoch  {images / fast:,.0f} images/s  "
        f"({plain / fast:.2f}x faster; {verdict(fast, EPOCH_TARGET_S, higher_is_better=False)})"
    )


# ---------------------------------------------------------------------------- 2. host syncs


def syncs_in_one_epoch(num_train: int, augment: bool) -> tuple[int, int]:
    """(synchronizing CUDA calls, batches) of one monitored epoch after a warm-up epoch."""
    extra = [*options(True, "bf16", False), f"data.augment={str(augment).lower()}"]
    schedule = schedule_for(cifar_shaped(num_train), NET1_WIDTHS, extra)
    schedule.train_one_epoch()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            schedule.train_one_epoch()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    return syncs, -(-num_train // BATCH)


def host_syncs() -> None:
    for augment in (False, True):
        few, few_batches = syncs_in_one_epoch(32 * BATCH, augment)
        many, many_batches = syncs_in_one_epoch(64 * BATCH, augment)
        per_batch = (many - few) / (many_batches - few_batches)
        per_epoch = few - per_batch * few_batches
        print(
            f"host syncs, augment {'on ' if augment else 'off'}: {few} in {few_batches} batches, "
            f"{many} in {many_batches}: {per_batch:g} per batch, {per_epoch:g} per epoch "
            f"(target 0 per batch: {'met' if per_batch == 0 else 'NOT met'})"
        )


# ---------------------------------------------------------------------------- 3. GPU sharing


def sweep_images_per_second(trials: int, gpu: float, epochs: int, compile_model: bool) -> float:
    """Images trained per second by all trials together, over the epochs after each one's first.

    The window runs from the earliest start to the latest end of those epochs, so trials that
    do not actually overlap on the GPU get no credit for running "in parallel".
    """
    num_train = 50000
    name = f"share-{trials}x{gpu:g}"
    folder = Path(tempfile.mkdtemp(prefix="adprune-gpu-bench-"))
    spec = SWEEP_SPEC.format(
        name=name,
        widths=NET1_WIDTHS,
        batch=BATCH,
        num_train=num_train,
        compile=str(compile_model).lower(),
        epochs=epochs,
        seeds=list(range(trials)),
        gpu=gpu,
    )
    launch(spec, folder)
    starts, ends, images = [], [], 0
    for rows in trial_results(folder, name).values():
        for row in rows[1:]:
            starts.append(row["report_time"] - row["epoch_seconds"])
            ends.append(row["report_time"])
            images += num_train
    if not starts:
        raise SystemExit(f"{name}: no timed epochs in {folder}")
    return images / (max(ends) - min(starts))


def gpu_sharing(epochs: int, compile_model: bool) -> None:
    one = sweep_images_per_second(1, 1.0, epochs, compile_model)
    four = sweep_images_per_second(4, 0.25, epochs, compile_model)
    print(
        f"GPU sharing, net1-sized VGG-19 {NET1_WIDTHS[:4]}..., channels_last + bf16, via "
        f"`adprune-sweep launch` (embedded Ray), {epochs} epochs of 50,000 images per trial, "
        f"first epoch of each trial not counted:"
    )
    print(f"  1 trial  at gpu: 1     {one:,.0f} images/s")
    print(f"  4 trials at gpu: 0.25  {four:,.0f} images/s aggregate ({four / one:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true", help="also torch.compile the model")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement")
    parser.add_argument(
        "--skip-sweep", action="store_true", help="skip the 4-trial GPU-sharing sweep"
    )
    args = parser.parse_args()
    reproduce("gpu.py" + (" --compile" if args.compile else ""))
    if not torch.cuda.is_available():
        print("no CUDA device: GPU benchmark not run")
        return
    epoch_time(cifar_shaped(50000), args.epochs, args.compile)
    host_syncs()
    if not args.skip_sweep:
        gpu_sharing(args.epochs + 1, args.compile)


if __name__ == "__main__":
    main()
