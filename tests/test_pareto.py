"""The Pareto front: exact against brute force, and exported with pyarrow from real sweeps."""

import json
import math
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import CLI
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow_store import all_runs, client_for

from ray_jobs.results import (
    NetworkRow,
    Objective,
    front_mask,
    non_dominated,
    ordered,
    parse_objectives,
)


def brute_force_front(points):
    """Indices nothing dominates, the definition written out, for larger-is-better columns."""
    front = set()
    for i, p in enumerate(points):
        if any(math.isnan(v) for v in p):
            continue
        dominated = any(
            all(a >= b for a, b in zip(q, p)) and any(a > b for a, b in zip(q, p))
            for j, q in enumerate(points)
            if j != i and not any(math.isnan(v) for v in q)
        )
        if not dominated:
            front.add(i)
    return front


# Small integer grids make ties and exact duplicates common.
def point_lists(dims):
    value = st.one_of(st.integers(0, 4).map(float), st.just(math.nan))
    return st.lists(st.tuples(*[value] * dims), min_size=1, max_size=40)


@pytest.mark.parametrize("dims", [2, 3])
@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_front_is_exactly_the_non_dominated_set(dims, data):
    points = data.draw(point_lists(dims))
    mask = non_dominated(np.array(points), chunk=7)  # several chunks on purpose
    assert {i for i, on in enumerate(mask) if on} == brute_force_front(points)


@given(points=point_lists(2))
@settings(max_examples=100, deadline=None)
def test_duplicates_share_their_fate(points):
    doubled = points + points
    mask = non_dominated(np.array(doubled))
    n = len(points)
    assert all(mask[i] == mask[i + n] for i in range(n))


def network(accuracy, mac_reduction, complexity=1.0, run_id="r"):
    return NetworkRow(
        experiment="e",
        sweep="s",
        sweep_id="id",
        trial="t",
        round=0,
        phase="search",
        arch="cnn2",
        dataset="synthetic",
        widths=[1, 1],
        accuracy=accuracy,
        params=1,
        macs=1,
        param_reduction=1.0,
        mac_reduction=mac_reduction,
        energy_j=0.0,
        training_complexity=complexity,
        epochs=1,
        run_id=run_id,
    )


def test_min_objectives_flip_the_comparison():
    rows = [network(0.9, 1.0, 5.0, "a"), network(0.9, 1.0, 3.0, "b"), network(0.8, 1.0, 1.0, "c")]
    objectives = parse_objectives("accuracy:max,mac_reduction:max,training_complexity:min")
    assert front_mask(rows, objectives) == [False, True, True]
    two = parse_objectives("accuracy:max,training_complexity:max")
    assert front_mask(rows, two) == [True, False, False]


def test_order_is_front_first_best_first():
    rows = [network(0.5, 9.0, run_id="x"), network(0.9, 1.0, run_id="y"), network(0.4, 2.0)]
    objectives = parse_objectives("accuracy:max,mac_reduction:max")
    pairs = ordered(rows, front_mask(rows, objectives), objectives)
    assert [(r.accuracy, on) for r, on in pairs] == [(0.9, True), (0.5, True), (0.4, False)]


@pytest.mark.parametrize(
    "text", ["accuracy", "accuracy:max,colour:max", "accuracy:up,macs", "accuracy,accuracy"]
)
def test_bad_objectives_are_rejected(text):
    from adprune_core.config import SpecError

    with pytest.raises(SpecError, match="--objectives"):
        parse_objectives(text)


def test_objective_str_round_trips():
    assert [str(o) for o in parse_objectives("accuracy,macs:min")] == ["accuracy:max", "macs:min"]
    assert Objective("macs", "min") in parse_objectives("accuracy,macs:min")


# ---------------------------------------------------------------------------- the command


def pareto(folder, *args):
    return subprocess.run(
        [*CLI, "pareto", *args], capture_output=True, text=True, timeout=180, cwd=folder
    )


@pytest.fixture(scope="module")
def exported(two_sweeps):
    folder, alpha, beta = two_sweeps
    assert alpha.returncode == 0 and beta.returncode == 0
    proc = pareto(folder, "-o", "front.parquet", "--csv", "front.csv", "--plot", "front.png")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return folder, proc


def closed_net_runs(folder):
    runs = all_runs(client_for(folder))
    return {r.info.run_id: r for r in runs if "round" in r.data.params}


def test_parquet_holds_every_network_of_both_sweeps(exported):
    folder, proc = exported
    table = pq.read_table(folder / "front.parquet")
    nets = closed_net_runs(folder)
    assert sorted(table.column("run_id").to_pylist()) == sorted(nets)
    assert set(table.column("sweep").to_pylist()) == {"alpha", "beta"}
    assert set(table.column("experiment").to_pylist()) == {"adprune-sweep", "adprune-beta"}
    assert set(table.column("phase").to_pylist()) == {"search", "final"}
    for row in table.to_pylist():
        run = nets[row["run_id"]]
        assert row["widths"] == json.loads(run.data.params["widths"])
        assert row["accuracy"] == run.data.metrics["accuracy"]
        assert row["mac_reduction"] == run.data.metrics["mac_reduction"]
        assert row["round"] == int(run.data.params["round"])
        assert row["model_uri"] == run.data.tags.get("adprune.model_uri")
    # record.models' default (chosen) logs some networks and leaves the others out.
    uris = table.column("model_uri").to_pylist()
    assert None in uris and all(u is None or u.startswith("models:/m-") for u in uris)
    assert any(uris)
    assert f"{table.num_rows} networks from 2 sweep(s)" in proc.stdout


def test_on_front_is_exactly_the_non_dominated_rows(exported):
    folder, _ = exported
    rows = pq.read_table(folder / "front.parquet").to_pylist()
    points = [(r["accuracy"], r["mac_reduction"]) for r in rows]
    expected = brute_force_front(points)
    assert {i for i, r in enumerate(rows) if r["on_front"]} == expected
    # Front first, ordered by the first objective (accuracy, best first).
    flags = [r["on_front"] for r in rows]
    assert flags == sorted(flags, reverse=True)
    front_acc = [r["accuracy"] for r in rows if r["on_front"]]
    assert front_acc == sorted(front_acc, reverse=True)


def test_parquet_schema_is_typed_and_says_where_it_came_from(exported):
    folder, _ = exported
    schema = pq.read_schema(folder / "front.parquet")
    expected = {
        "experiment": pa.string(),
        "sweep": pa.string(),
        "trial": pa.string(),
        "round": pa.int32(),
        "phase": pa.string(),
        "arch": pa.string(),
        "dataset": pa.string(),
        "widths": pa.list_(pa.int32()),
        "accuracy": pa.float64(),
        "params": pa.int64(),
        "macs": pa.int64(),
        "param_reduction": pa.float64(),
        "mac_reduction": pa.float64(),
        "energy_j": pa.float64(),
        "training_complexity": pa.float64(),
        "epochs": pa.int32(),
        "prune.rho.threshold": pa.float64(),
        "run_id": pa.string(),
        "model_uri": pa.string(),
        "on_front": pa.bool_(),
    }
    for name, type_ in expected.items():
        assert schema.field(name).type == type_, name
    metadata = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    assert metadata["adprune.objectives"] == "accuracy:max,mac_reduction:max"
    assert "sqlite:///" in json.loads(metadata["adprune.source"])["tracking_uri"]


def test_csv_has_the_same_rows(exported):
    folder, _ = exported
    table = pq.read_table(folder / "front.parquet")
    csv = pacsv.read_csv(folder / "front.csv")
    assert csv.column_names == table.column_names
    assert csv.column("run_id").to_pylist() == table.column("run_id").to_pylist()
    assert [json.loads(w) for w in csv.column("widths").to_pylist()] == table.column(
        "widths"
    ).to_pylist()
    assert csv.column("on_front").to_pylist() == table.column("on_front").to_pylist()


def test_plot_is_a_png_with_the_front_drawn(exported):
    import matplotlib.image

    folder, _ = exported
    assert (folder / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(folder / "front.png")
    height, width = image.shape[:2]
    assert width >= 600 and height >= 400
    # The front's step line is the only black drawing inside the axes.
    inner = image[height // 10 : -height // 10, width // 8 : -width // 20, :3]
    assert (inner.max(axis=2) < 0.15).sum() > 200


def test_three_objectives_and_selection(exported):
    folder, _ = exported
    proc = pareto(
        folder,
        "--sweep",
        "beta",
        "-o",
        "beta.parquet",
        "--objectives",
        "accuracy:max,mac_reduction:max,training_complexity:min",
    )
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(folder / "beta.parquet")
    rows = table.to_pylist()
    assert {r["sweep"] for r in rows} == {"beta"}
    points = [(r["accuracy"], r["mac_reduction"], -r["training_complexity"]) for r in rows]
    assert {i for i, r in enumerate(rows) if r["on_front"]} == brute_force_front(points)
    metadata = table.schema.metadata[b"adprune.objectives"].decode()
    assert metadata == "accuracy:max,mac_reduction:max,training_complexity:min"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--objectives", "accuracy:max,colour:max"], ["--objectives", "colour"]),
        (["-o", "front.csv"], ["-o front.csv", ".parquet"]),
        (["--plot", "missing/dir/x.png"], ["--plot"]),
        (["--sweep", "gamma"], ["--sweep gamma"]),
    ],
)
def test_bad_pareto_input_is_one_line(exported, args, words):
    folder, _ = exported
    proc = pareto(folder, *args)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert all(word in lines[0] for word in words), lines[0]
