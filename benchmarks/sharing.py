"""Train each shared network once: the same sweeps with sharing on and off, side by side.

For the quickstart grid (4 rho thresholds) and a 36-configuration grid on the quickstart's
model and data (rho threshold x patience x delta band), it launches the sweep with sharing
(the default) and with ``--no-share``, and prints:

- net0-epochs trained (an epoch of net[i] counts 1 / its MAC reduction; a count, so exact),
  with and without sharing, and their ratio;
- the wall time of the whole ``launch`` command, both ways, and its ratio;
- whether every trial's row of the trial table (chosen network, widths, accuracy, MAC
  reduction, complexity, stop reason) is the same both ways;
- how cost grows from 4 to 36 configurations, with and without sharing;
- the quickstart's ``launch`` with sharing against its four schedules run as bare
  ``adprune-sweep run`` processes, one per core at a time.

Run from the repository root: ``.venv/bin/python benchmarks/sharing.py`` (about 6 minutes on
2 CPU cores). ``--quick`` runs the quickstart grid only.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from common import CLI, REPO, reproduce

QUICKSTART = REPO / "sweeps" / "quickstart.yaml"
THRESHOLDS = "[0.0005, 0.001, 0.002, 0.004]"
GRID_36 = (
    f"search={{prune.rho.threshold: {{grid: {THRESHOLDS}}}, "
    "prune.rho.patience: {grid: [1, 2, 3]}, "
    "prune.delta.flat_band: {grid: [0.001, 0.002, 0.004]}}"
)
CLOSING = re.compile(r"trained ([\d.]+) of ([\d.]+) net0-epochs")
TRIAL_ROW = re.compile(r"^[0-9a-f]{5}_\d{5}\s+(.*)$")


def launch(folder: Path, extra: list[str]) -> tuple[float, float, float, list[str], int]:
    """Wall seconds, net0-epochs trained and without sharing, the trial table's rows (trial
    id and shared-epoch column left out), and the epoch store's size at the end, of one
    ``launch``."""
    command = [
        *CLI,
        "launch",
        str(QUICKSTART),
        "--storage",
        str(folder / "runs"),
        "--set",
        f"data.root={REPO / 'data'}",
        *extra,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"launch failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr}")
    match = CLOSING.search(done.stdout)
    if match is None:
        raise SystemExit(f"no closing line in:\n{done.stdout[-2000:]}")
    rows = []
    for line in done.stdout.splitlines():
        row = TRIAL_ROW.match(line)
        if row:
            cells = re.split(r"\s{2,}", row.group(1).strip())
            rows.append("  ".join(cells[:9]))  # up to the stop reason
    store = sum(p.stat().st_size for p in (folder / "runs").rglob("shared-epochs/**/*.pt"))
    return seconds, float(match.group(1)), float(match.group(2)), sorted(rows), store


def both_ways(label: str, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="adprune-share-") as root:
        folders = {mode: Path(root) / mode for mode in ("shared", "alone")}
        for folder in folders.values():
            folder.mkdir()
        shared = launch(folders["shared"], extra)
        alone = launch(folders["alone"], [*extra, "--no-share"])
    same = shared[3] == alone[3]
    print(f"\n{label}: {len(shared[3])} trials")
    print(
        f"  net0-epochs trained: {shared[1]:.1f} shared vs {alone[1]:.1f} alone "
        f"= {shared[1] / alone[1]:.3f}x (without sharing the sweep counts {shared[2]:.1f})"
    )
    print(
        f"  launch wall time:    {shared[0]:.1f} s shared vs {alone[0]:.1f} s alone "
        f"= {shared[0] / alone[0]:.2f}x"
    )
    print(f"  every trial's row the same both ways: {same}")
    print(f"  epoch store at the end: {shared[4] / 2**20:.1f} MiB (share.max_gib bounds it)")
    return {"trained": shared[1], "alone": alone[1], "seconds": shared[0]}


def bare_runs_seconds(slots: int) -> float:
    """The quickstart's four schedules as plain ``run`` processes, ``slots`` at a time."""
    thresholds = [t.strip() for t in THRESHOLDS.strip("[]").split(",")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one CPU each, as a trial gets
    start = time.perf_counter()
    running: list[subprocess.Popen] = []
    for threshold in thresholds:
        if len(running) == slots:
            running.pop(0).wait()
        command = [
            *CLI,
            "run",
            str(QUICKSTART),
            "--quiet",
            "--set",
            f"prune.rho.threshold={threshold}",
            "--set",
            f"data.root={REPO / 'data'}",
        ]
        running.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL))
    for process in running:
        process.wait()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quickstart grid only")
    args = parser.parse_args()
    reproduce("sharing.py")
    small = both_ways("quickstart grid (4 rho thresholds)", [])
    print("  targets: net0-epochs <= 0.40x, wall time <= 0.75x")
    slots = os.cpu_count() or 1
    bare = bare_runs_seconds(slots)
    print(
        f"  launch with sharing vs 4 bare `run` processes, {slots} at a time: "
        f"{small['seconds']:.1f} s vs {bare:.1f} s = {small['seconds'] / bare:.2f}x (target < 1.0x)"
    )
    if args.quick:
        return
    large = both_ways(
        "36 configurations (threshold 4 x patience 3 x delta band 3)", ["--set", GRID_36]
    )
    print("  targets: net0-epochs <= 0.08x, wall time <= 0.30x")
    print(
        f"\nhow cost grows from 4 to 36 configurations: without sharing "
        f"{small['alone']:.1f} -> {large['alone']:.1f} net0-epochs "
        f"({large['alone'] / small['alone']:.1f}x); with sharing {small['trained']:.1f} -> "
        f"{large['trained']:.1f} ({large['trained'] / small['trained']:.2f}x, target <= 1.5x)"
    )


if __name__ == "__main__":
    main()
