"""The MLflow writer, old and new side by side in one run: records a second sustained, writer
CPU per record, and the worst lag.

Drives the real Tune callback, journal and recorder with a synthetic stream of Tune results:
``--trials`` trials x ``--epochs`` epochs with the quickstart's report fields (a network ends
every ``--net-epochs`` epochs, with net0's figure), round-robin over the trials, at
``--rate`` epoch records a second (0: as fast as the callback takes them). The old writer is
the tracking package as of ``--baseline`` (a git revision), loaded from git under another
name, against the same kind of store, fresh for each writer. Stores (``--stores``):

- ``sqlite``: the local sqlite store (one machine);
- ``server-sqlite``: ``mlflow server`` on sqlite;
- ``server-postgres``: ``mlflow server`` on a PostgreSQL cluster of its own, with MLflow's
  basic-auth app (as the README's cluster recipe), ``--server-workers`` workers.

    .venv/bin/python benchmarks/writer.py                      # all three, unthrottled
    .venv/bin/python benchmarks/writer.py --rate 500 --trials 1000 --epochs 3 \\
        --stores server-postgres                                # 1,000 live runs at 500/s
    .venv/bin/python benchmarks/writer.py --smoke              # a quick check that it runs
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from servers import ADMIN, PostgresCluster, TrackingServer  # noqa: E402

from adprune_core.schedule.report import EpochReport, NetClosing  # noqa: E402
from adprune_core.schedule.summary import ScheduleSummary  # noqa: E402

BASELINE = "ad6d3ae"  # the writer before batching, lanes and dead letters
WIDTHS = [32, 32, 64, 64]  # the quickstart's cnn


@dataclass
class Outcome:
    """Rates are per epoch record (one Tune result): the two writers split the same results
    into different numbers of records (the new one has figure records of its own)."""

    writer: str
    epochs: int  # Tune results fed
    records: int
    written: int
    seconds: float
    cpu_s: float
    worst_lag_records: int
    worst_lag_s: float
    journal_sync_s: float

    @property
    def complete(self) -> bool:
        return self.written >= self.records

    @property
    def per_second(self) -> float:
        """Epoch records a second, from the first result until the last record is written
        (only a writer that drained everything gets a rate)."""
        return self.epochs / self.seconds if self.complete else float("nan")

    @property
    def cpu_ms_per_record(self) -> float:
        return 1000 * self.cpu_s / max(self.epochs, 1)


# Where the baseline's imports of adprune_core live since the core became rooms.
MOVED_MODULES = {
    "adprune_core.network_file": "adprune_core.nets",
    "adprune_core.spec ": "adprune_core.config ",
    "adprune_core.errors": "adprune_core.config",
}


def load_baseline(revision: str, into: Path) -> Any:
    """``ray_jobs.tracking`` at ``revision``, importable as ``legacy_tracking``."""
    package = into / "legacy_tracking"
    package.mkdir(parents=True)
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", revision, "ray_jobs/tracking/"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in names:
        text = subprocess.run(
            ["git", "show", f"{revision}:{name}"], cwd=REPO, capture_output=True, text=True
        ).stdout
        text = text.replace("ray_jobs.tracking", "legacy_tracking")
        for old, new in MOVED_MODULES.items():
            text = text.replace(old, new)
        (package / Path(name).name).write_text(text)
    sys.path.insert(0, str(into))
    return importlib.import_module("legacy_tracking")


def report(net: int, epoch: int, last: bool) -> dict[str, Any]:
    """One Tune result with the quickstart's report fields, as a trial sends them."""
    closing = None
    if last:
        closing = NetClosing(
            layer_ad_history=[[0.4, 0.41, 0.38, 0.37]] * epoch, profile="flat", epochs_to_rho=epoch
        )
    epoch_report = EpochReport(
        phase="search",
        round=net,
        epoch=epoch,
        widths=WIDTHS,
        ad_total=0.4 - 0.001 * epoch,
        layer_ad=[0.4, 0.41, 0.38, 0.37],
        ad_history=[0.4] * epoch,
        accuracy=0.9,
        loss=1.0 / epoch,
        train_accuracy=0.92,
        params=100_000,
        macs=2_000_000,
        energy_j=1.0e-5,
        param_reduction=1.0 + net,
        mac_reduction=1.0 + net,
        training_complexity=float(epoch),
        net0_widths=WIDTHS,
        decision="next_round" if last else "continue",
        decision_reason="saturated" if last else "training",
        profile="flat" if last else "",
        schedule_done=False,
        closing=closing,
        node_ip="127.0.0.1",
        resources_cpu=1.0,
        resources_gpu=0.0,
    )
    return {**epoch_report.to_tune(), "timestamp": time.time()}


def trial(index: int) -> SimpleNamespace:
    spec = {"train": {"lr": 0.05, "seed": index}, "record": {"models": "none"}}
    summary = ScheduleSummary(
        chosen_round=0,
        widths=WIDTHS,
        accuracy=0.9,
        param_reduction=2.0,
        mac_reduction=2.0,
        training_complexity=3.0,
        baseline_complexity=5.0,
        stop_reason="increasing",
        rounds=3,
    )
    done = {
        **report(0, 3, last=True),
        "schedule_done": True,
        **{f"final_{k}": v for k, v in asdict(summary).items()},
    }
    return SimpleNamespace(
        trial_id=f"t{index:05d}",
        config={"spec": spec},
        status="TERMINATED",
        last_result=done,
        get_error=lambda: "",
    )


class Driver:
    """Feeds one callback the stream and measures what its writer does."""

    def __init__(self, package: Any, name: str, uri: str, folder: Path, args: Any) -> None:
        self.package = package
        self.name = name
        self.args = args
        info = package.SweepInfo("bench", name, f"bench-{name}", uri, {"a": 1}, [], "cnn", "digits")
        self.callback = package.MlflowCallback(
            info, folder, retry_interval_s=5.0, drain_timeout_s=args.drain_s, echo=lambda s: None
        )

    def written(self) -> int:
        writer = self.callback._writer
        if hasattr(writer, "stats"):
            return writer.stats.written
        return self.callback.delivery.writes

    def cpu_s(self) -> float:
        writer = self.callback._writer
        if hasattr(writer, "stats"):
            return writer.stats.cpu_s
        return self.callback.delivery.busy_cpu_s

    def sample_lag(self, put_times: list[float], done: threading.Event) -> None:
        """Records fed but not written, and how long the oldest of them has waited (the
        records are written in the order fed, near enough for a worst case)."""
        while not done.wait(0.1):
            written = self.written()
            behind = len(put_times) - written
            if behind > 0:
                self.worst_records = max(self.worst_records, behind)
                waited = time.perf_counter() - put_times[min(written, len(put_times) - 1)]
                self.worst_s = max(self.worst_s, waited)

    def run(self) -> Outcome:
        args, callback = self.args, self.callback
        trials = [trial(i) for i in range(args.trials)]
        put_times: list[float] = []
        self.worst_records, self.worst_s = 0, 0.0
        done = threading.Event()
        sampler = threading.Thread(target=self.sample_lag, args=(put_times, done), daemon=True)
        started = time.perf_counter()
        callback.setup()
        put_times.append(started)
        sampler.start()
        for t in trials:
            callback.on_trial_start(0, trials, t)
            put_times.append(time.perf_counter())
        interval = 1.0 / args.rate if args.rate else 0.0
        next_at = time.perf_counter()
        for epoch in range(1, args.epochs + 1):
            net, step = divmod(epoch - 1, args.net_epochs)
            last = step + 1 == args.net_epochs or epoch == args.epochs
            for t in trials:
                if interval:
                    next_at += interval
                    time.sleep(max(0.0, next_at - time.perf_counter()))
                callback.on_trial_result(0, trials, t, report(net, step + 1, last))
                now = time.perf_counter()
                # epoch, and at a network's end its close (and, new, its figures record)
                put_times += [now] * (1 + (2 if self.name == "new" else 1) * last)
        for t in trials:
            callback.on_trial_complete(0, trials, t)
        callback.on_experiment_end(trials)
        seconds = time.perf_counter() - started
        done.set()
        journal = getattr(callback, "journal", None)
        ops_per_trial_end = 2 if self.name == "new" else 1  # the end, and its figures
        return Outcome(
            self.name,
            args.epochs * args.trials,
            len(put_times) + ops_per_trial_end * len(trials) + 1,
            self.written(),
            seconds,
            self.cpu_s(),
            self.worst_records,
            self.worst_s,
            getattr(journal, "sync_s", 0.0),
        )


class Store:
    """A fresh store of one kind per writer."""

    def __init__(self, kind: str, folder: Path, args: Any) -> None:
        self.kind, self.folder, self.args = kind, folder, args
        self.cluster: PostgresCluster | None = None
        self.server: TrackingServer | None = None

    def open(self, name: str) -> str:
        from ray_jobs.tracking.store import check_store

        place = self.folder / name
        place.mkdir(parents=True)
        if self.kind == "sqlite":
            uri = f"sqlite:///{place / 'mlflow.db'}"
        elif self.kind == "server-sqlite":
            backend = f"sqlite:///{place / 'server.db'}"
            self.server = TrackingServer(place, backend, workers=self.args.server_workers)
            self.server.start()  # assigned first: close() stops it even if start is cut short
            uri = self.server.uri
        else:
            self.cluster = PostgresCluster()
            self.cluster.start()
            backend = self.cluster.create_database("mlflow")
            workers = self.args.server_workers
            self.server = TrackingServer(place, backend, auth=True, workers=workers)
            self.server.start()
            os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN
            uri = self.server.uri
        check_store(uri)  # schema made before the clock starts, as launch does
        return uri

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.cluster is not None:
            self.cluster.stop()
        self.server = self.cluster = None


def measure(kind: str, package: Any, name: str, folder: Path, args: Any) -> Outcome:
    store = Store(kind, folder, args)
    try:
        uri = store.open(name)
        return Driver(package, name, uri, folder / name / "sweep", args).run()
    finally:
        store.close()


def print_side_by_side(kind: str, outcomes: list[Outcome], rate: float) -> None:
    """One column per writer, and new/old where both ran."""
    both = len(outcomes) == 2

    def row(label: str, values: list[str], ratio: str = "") -> None:
        print(f"  {label:<30}" + "".join(f"{v:>12}" for v in values) + f"{ratio:>10}")

    def ratio(values: list[float], fmt: str) -> str:
        return format(values[1] / max(values[0], 1e-9), fmt) + "x" if both else ""

    pace = "unthrottled" if not rate else f"fed at {rate:g}/s"
    print(f"{kind}: {outcomes[0].epochs} epoch records, {pace}")
    row("", [o.writer for o in outcomes], "new/old" if both else "")
    rates = [o.per_second for o in outcomes]
    row("epoch records/s sustained", [f"{r:.1f}" for r in rates], ratio(rates, ".1f"))
    cpu = [o.cpu_ms_per_record for o in outcomes]
    row("writer CPU ms/epoch record", [f"{c:.2f}" for c in cpu], ratio(cpu, ".2f"))
    row("worst lag, records", [str(o.worst_lag_records) for o in outcomes])
    row("worst lag, seconds", [f"{o.worst_lag_s:.1f}" for o in outcomes])
    row("written / records", [f"{o.written}/{o.records}" for o in outcomes])
    new = outcomes[-1]
    per_append = 1e6 * new.journal_sync_s / max(new.epochs, 1)
    print(f"  journal: fsynced appends cost {per_append:.0f} us a result on the caller's thread")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--net-epochs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--stores", default="sqlite,server-sqlite,server-postgres")
    parser.add_argument("--server-workers", type=int, default=4)
    parser.add_argument("--drain-s", type=float, default=300.0, help="most a writer may drain")
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument(
        "--writers", default="old,new", help="old,new side by side (default), or one of them"
    )
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.epochs, args.stores = 8, 3, "sqlite"
    from ray_jobs import tracking as new_package

    folder = Path(tempfile.mkdtemp(prefix="adprune-writer-bench-"))
    try:
        writers = args.writers.split(",")
        packages = {"new": new_package}
        if "old" in writers:
            packages["old"] = load_baseline(args.baseline, folder / "baseline")
        for kind in args.stores.split(","):
            outcomes = [
                measure(kind, packages[name], name, folder / kind, args)
                for name in ("old", "new")
                if name in writers
            ]
            print_side_by_side(kind, outcomes, args.rate)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
