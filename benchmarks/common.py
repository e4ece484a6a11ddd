"""Shared helpers for the benchmarks: synthetic CIFAR-shaped data, timing, and printing."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from adprune_core.data import ArrayDataset  # noqa: E402

CLI = [sys.executable, "-m", "ray_jobs.cli"]
# Trials report their process's time and memory only when asked: the benchmarks read them.
os.environ["ADPRUNE_PROCESS_METRICS"] = "1"


def cifar_shaped(num_train: int, num_test: int = 256, seed: int = 0) -> ArrayDataset:
    """uint8-valued 32x32x3 images, 10 classes, stored as float tensors like CIFAR loads."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num_train + num_test, 3, 32, 32), generator=generator)
    labels = torch.randint(0, 10, (num_train + num_test,), generator=generator)
    x = images.float() / 255.0
    return ArrayDataset(
        name="cifar-shaped",
        train_x=x[:num_train],
        train_y=labels[:num_train],
        test_x=x[num_train:],
        test_y=labels[num_train:],
        num_classes=10,
        mean=(0.49, 0.48, 0.45),
        std=(0.25, 0.24, 0.26),
        default_augment=True,
    )


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def reproduce(script: str) -> None:
    print(f"reproduce: .venv/bin/python benchmarks/{script}")
    print(
        f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}"
    )


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    met = value >= target if higher_is_better else value <= target
    sign = ">=" if higher_is_better else "<="
    return f"target {sign} {target:g}: {'met' if met else 'NOT met'}"


def launch(spec_text: str, folder: Path, *args: str, env: dict | None = None) -> str:
    spec = folder / "spec.yaml"
    spec.write_text(spec_text)
    proc = subprocess.run(
        [*CLI, "launch", str(spec), "--storage", str(folder / "runs"), *args],
        capture_output=True,
        text=True,
        cwd=folder,
        env=env,
    )
    if proc.returncode != 0:
        raise SystemExit(f"launch failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def trial_results(folder: Path, name: str) -> dict[str, list[dict]]:
    by_trial = {}
    for path in sorted((folder / "runs" / name).glob("*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            by_trial[rows[0]["trial_id"]] = rows
    return by_trial
