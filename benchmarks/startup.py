"""Start-up of the read-only commands, side by side with an earlier commit's, in one run.

Target: ``compare`` in <= 40% of the earlier commit's time. Both sides read the same store,
in alternating order, ``--repeat`` times; the medians and their ratio are printed. The earlier
side is that commit's source tree (``git worktree``), run with this environment's packages.

    .venv/bin/python benchmarks/startup.py [--baseline REV] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = "1d4987e"  # the last commit before read-only commands stopped loading torch

STORE_SPEC = """
name: startup-bench
model: {arch: cnn2, widths: [8, 8]}
data: {dataset: synthetic, batch_size: 32, synthetic: {num_train: 64, num_test: 32}}
prune: {rho: {threshold: 0.01, patience: 1, min_epochs: 1, max_epochs: 2}, max_rounds: 2}
search: {prune.rho.threshold: {grid: [0.005, 0.05]}}
"""

COMMANDS = {
    "compare": ["compare"],
    "pareto": ["pareto", "-o", "front.parquet"],
    "cost": ["cost", "--arch", "vgg19"],
    "--help": ["--help"],
}


def make_store(folder: Path) -> None:
    (folder / "spec.yaml").write_text(STORE_SPEC)
    cli = [sys.executable, "-m", "ray_jobs.cli"]
    subprocess.run(
        [*cli, "launch", "spec.yaml", "--storage", str(folder / "runs")],
        cwd=folder,
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def checkout(rev: str, where: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), rev],
        check=True,
        capture_output=True,
    )
    return where


def time_command(source: Path, args: list[str], folder: Path) -> float:
    """Wall time of one CLI start, importing ``ray_jobs`` from ``source``."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ray_jobs.cli", *args],
        cwd=folder,
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def imported_from(source: Path, folder: Path) -> str:
    probe = "import ray_jobs.cli as c; print(c.__file__)"
    env = {**os.environ, "PYTHONPATH": str(source)}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=folder, env=env, capture_output=True, text=True
    )
    return result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="earlier commit to compare")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"reproduce: .venv/bin/python benchmarks/startup.py --baseline {args.baseline}")
    print(f"machine: {os.cpu_count()} CPU cores; {args.repeat} alternating starts per side")
    with tempfile.TemporaryDirectory(prefix="adprune-startup-") as tmp:
        folder = Path(tmp)
        print("making a small store (one tiny sweep) ...", flush=True)
        make_store(folder)
        earlier = checkout(args.baseline, folder / "baseline")
        try:
            sides = {"earlier": earlier, "now": REPO}
            for name, source in sides.items():
                print(f"  {name}: ray_jobs from {imported_from(source, folder)}")
            for label, command in COMMANDS.items():
                times: dict[str, list[float]] = {name: [] for name in sides}
                for i in range(args.repeat):
                    order = list(sides) if i % 2 == 0 else list(reversed(sides))
                    for name in order:
                        times[name].append(time_command(sides[name], command, folder))
                before = statistics.median(times["earlier"])
                after = statistics.median(times["now"])
                verdict = ""
                if label == "compare":
                    verdict = "  target <= 0.40: " + ("met" if after / before <= 0.40 else "MISSED")
                print(
                    f"{label:>8}: earlier {before:5.2f} s, now {after:5.2f} s, "
                    f"ratio {after / before:4.2f}{verdict}"
                )
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(earlier)],
                capture_output=True,
            )


if __name__ == "__main__":
    main()
