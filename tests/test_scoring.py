"""Scoring sweeps: the hypervolume against a reference point below net0, one reference shared
by the sweeps scored together, and the MAC reduction at a given accuracy loss; checked by hand
and against the quickstart's own store, read back with pyarrow and the plain MLflow client."""

import json
import re
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import CLI
from mlflow_store import client_for, hierarchy, network_row

from ray_jobs.results import (
    ReferenceSpec,
    parse_losses,
    parse_objectives,
    parse_reference,
    reductions_at_loss,
    resolve_reference,
)
from ray_jobs.results._hypervolume import hypervolume

QUICKSTART = Path(__file__).resolve().parents[1] / "sweeps" / "quickstart.yaml"


def net(accuracy, mac_reduction, round_index=1, trial="t", end_time=0, complexity=1.0, **kw):
    return network_row(
        accuracy,
        mac_reduction,
        round_index,
        trial,
        param_reduction=mac_reduction,
        training_complexity=complexity,
        end_time=end_time,
        **kw,
    )


# ---------------------------------------------------------------------------- by hand


def test_two_objectives_by_hand():
    objectives = parse_objectives("accuracy:max,mac_reduction:max")
    rows = [net(0.99, 1.0, 0), net(0.98, 18.0), net(0.96, 72.0), net(0.93, 100.0)]
    reference = resolve_reference(ReferenceSpec(), objectives, rows)
    assert reference.point == pytest.approx((0.94, 1.0))
    # Staircase beyond (0.94, 1): 0.04 x 17 for the 18x net, plus 0.02 x 54 for the 72x one;
    # the 100x net is below the floor, net0 at 1x encloses nothing.
    assert hypervolume(rows, objectives, reference.point) == pytest.approx(0.04 * 17 + 0.02 * 54)


def test_three_objectives_by_hand():
    objectives = parse_objectives("accuracy:max,mac_reduction:max,training_complexity:min")
    rows = [net(0.9, 3.0, complexity=2.0), net(0.8, 5.0, complexity=4.0)]
    point = (0.5, 1.0, 6.0)
    # Box A: 0.4 x 2 x 4 = 3.2; box B: 0.3 x 4 x 2 = 2.4; overlap 0.3 x 2 x 2 = 1.2.
    assert hypervolume(rows, objectives, point) == pytest.approx(3.2 + 2.4 - 1.2)


def test_the_baseline_is_the_earliest_net0_and_reductions_are_one():
    objectives = parse_objectives("accuracy:max,mac_reduction:max,training_complexity:min")
    rows = [
        net(0.97, 1.0, 0, trial="late", end_time=20, complexity=3.0),
        net(0.95, 1.0, 0, trial="early", end_time=10, complexity=3.0),
        net(0.93, 6.0, complexity=9.0),
    ]
    reference = resolve_reference(parse_reference("accuracy=net0-2"), objectives, rows)
    assert reference.baseline.trial == "early"
    # 2 points below the earliest net0, 1x MACs, the worst training complexity (the nadir).
    assert reference.point == pytest.approx((0.93, 1.0, 9.0))
    absolute = resolve_reference(parse_reference("accuracy=0.9"), objectives, rows)
    assert absolute.point[0] == 0.9 and absolute.loss_points is None


def test_reduction_at_loss_by_hand():
    rows = [
        net(0.990, 1.0, 0, trial="a", end_time=1),
        net(0.985, 4.0, trial="a"),  # 0.5 points below
        net(0.981, 9.0, trial="b"),  # 0.9 points below
        net(0.960, 30.0, trial="b"),  # 3 points below
        net(0.900, 80.0, trial="c"),  # 9 points below: never within 5
    ]
    found = reductions_at_loss(rows, parse_losses("0,0.5,1,2,5"))
    assert [f.loss_points for f in found] == [0, 0.5, 1, 2, 5]
    assert [f.network.mac_reduction for f in found] == [1.0, 4.0, 9.0, 9.0, 30.0]
    assert found[4].floor == pytest.approx(0.94)


@pytest.mark.parametrize(
    "text, words",
    [
        ("accuracy=1.5", ["--reference accuracy=1.5", "0-1"]),
        ("accuracy=-0.2", ["--reference accuracy=-0.2", "0-1"]),
        ("accuracy=net0+2", ["--reference accuracy=net0+2", ">= 0 points"]),
        ("accuracy=net0--2", ["--reference accuracy=net0--2", ">= 0 points"]),
        ("colour=1", ["--reference colour=1", "unknown column"]),
        ("accuracy", ["--reference accuracy", "COLUMN=VALUE"]),
    ],
)
def test_bad_references_are_named(text, words):
    from adprune_core.config import SpecError

    with pytest.raises(SpecError) as err:
        parse_reference(text)
    assert all(word in str(err.value) for word in words), str(err.value)


def test_a_reference_on_an_objective_not_asked_for_is_refused():
    from adprune_core.config import SpecError

    objectives = parse_objectives("accuracy:max,mac_reduction:max")
    with pytest.raises(SpecError, match="training_complexity is not one of the objectives"):
        resolve_reference(parse_reference("training_complexity=20"), objectives, [])


# ---------------------------------------------------------------------------- the quickstart


def run_cli(folder, *args, timeout=600):
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=folder
    )


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """The README's quickstart, launched as a user would, its sweep run scored 4 points below
    net0 through the spec's pareto.reference (the pareto command's default is 5)."""
    folder = tmp_path_factory.mktemp("quickstart")
    proc = run_cli(
        folder,
        "launch",
        str(QUICKSTART),
        "--storage",
        str(folder / "runs"),
        "--set",
        "pareto.reference=accuracy=net0-4",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pareto = run_cli(folder, "pareto", "-o", "front.parquet", "--plot", "front.png")
    assert pareto.returncode == 0, pareto.stderr[-2000:]
    return folder, pareto.stdout


def first_net0(folder):
    """The earliest closed net0 run, read with the plain MLflow client."""
    client = client_for(folder)
    roots, children = hierarchy(client)
    nets = [n for t in children[roots[0].info.run_id] for n in children[t.info.run_id]]
    net0 = [n for n in nets if n.data.params["round"] == "0" and n.data.params["phase"] == "search"]
    return min(net0, key=lambda n: (n.info.end_time, n.info.run_id)), roots[0]


def staircase(points, floor):
    """The 2-D hypervolume written out: strips between successive front points."""
    above = sorted((p for p in points if p[0] > floor and p[1] > 1.0), key=lambda p: -p[0])
    total, best_x = 0.0, 1.0
    for accuracy, reduction in above:
        if reduction > best_x:
            total += (accuracy - floor) * (reduction - best_x)
            best_x = reduction
    return total


@pytest.mark.slow
def test_quickstart_hypervolume_and_reference_by_hand(quickstart):
    folder, out = quickstart
    base, _ = first_net0(folder)
    floor = base.data.metrics["accuracy"] - 0.05
    rows = pq.read_table(folder / "front.parquet").to_pylist()
    expected = staircase([(r["accuracy"], r["mac_reduction"]) for r in rows], floor)
    assert expected > 0.5  # the quickstart's 18x and 72x networks lie above the floor
    (line,) = [x for x in out.splitlines() if ": hypervolume " in x]
    assert line.endswith(f"hypervolume {expected:.4g}"), line
    (ref,) = [x for x in out.splitlines() if x.startswith("hypervolume reference (of 1 sweep)")]
    trial = base.data.tags["trial_id"]
    assert f"accuracy {floor:.4f}, mac_reduction 1x" in ref
    assert f"net0 {100 * base.data.metrics['accuracy']:.2f}% of sweep quickstart" in ref
    assert f"trial {trial} - 5 pts" in ref
    metadata = pq.read_schema(folder / "front.parquet").metadata
    assert json.loads(metadata[b"adprune.reference"]) == pytest.approx(
        {"accuracy": floor, "mac_reduction": 1.0}
    )


def printed_loss_rows(out):
    rows = {}
    for line in out.splitlines():
        match = re.match(r"^(\d+(?:\.\d+)?) pt\s+(\S+)\s+(\S+)x\s+(\S+)\s+(\S+)\s+(\S+)", line)
        if match:
            loss, _, reduction, trial, net_name, widths = match.groups()
            rows[float(loss)] = (float(reduction), trial, net_name, widths)
    return rows


@pytest.mark.slow
def test_quickstart_reduction_at_loss_names_the_right_networks(quickstart):
    folder, out = quickstart
    base, _ = first_net0(folder)
    rows = pq.read_table(folder / "front.parquet").to_pylist()
    printed = printed_loss_rows(out)
    assert sorted(printed) == [0.5, 1.0, 2.0, 5.0]
    for loss, (reduction, trial, net_name, widths) in printed.items():
        floor = base.data.metrics["accuracy"] - loss / 100
        within = [r for r in rows if r["accuracy"] >= floor - 1e-9]
        best = max(r["mac_reduction"] for r in within)
        winners = [r for r in within if r["mac_reduction"] == best]
        top = max(winners, key=lambda r: r["accuracy"])
        assert reduction == pytest.approx(best, abs=0.05)
        assert (trial, net_name) in {(r["trial"], f"net{r['round']}") for r in winners}
        assert widths == "[" + ",".join(str(w) for w in top["widths"]) + "]"
    # Pruning pays: within 5 points the quickstart keeps a network with far fewer MACs.
    assert printed[5.0][0] > 10


@pytest.mark.slow
def test_quickstart_sweep_run_logs_scores_as_trials_complete(quickstart):
    folder, out = quickstart
    base, sweep = first_net0(folder)
    client = client_for(folder)
    history = sorted(
        client.get_metric_history(sweep.info.run_id, "hypervolume"), key=lambda m: m.step
    )
    values = [m.value for m in history]
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert values[0] > 0 and all(b >= a for a, b in zip(values, values[1:]))
    # The spec's pareto.reference (4 points) is what the sweep run was scored against.
    floor = base.data.metrics["accuracy"] - 0.04
    assert sweep.data.metrics["hypervolume_ref_accuracy"] == pytest.approx(floor)
    rows = pq.read_table(folder / "front.parquet").to_pylist()
    points = [(r["accuracy"], r["mac_reduction"]) for r in rows]
    assert values[-1] == pytest.approx(staircase(points, floor))
    printed = printed_loss_rows(out)
    for loss in (0.5, 1, 2, 5):
        key = f"mac_reduction_at_{loss:g}pt"
        assert sweep.data.metrics[key] == pytest.approx(printed[loss][0], abs=0.05), key


@pytest.mark.slow
def test_quickstart_front_is_on_a_log_axis_with_the_floor(quickstart):
    import matplotlib.image

    folder, _ = quickstart
    image = matplotlib.image.imread(folder / "front.png")[:, :, :3]
    # The floor is the only red line: a long horizontal run of red pixels.
    red = (image[:, :, 0] > 0.75) & (image[:, :, 1] < 0.35) & (image[:, :, 2] < 0.35)
    assert red.sum(axis=1).max() > image.shape[1] // 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, words",
    [
        (["pareto", "--reference", "accuracy=97"], ["--reference accuracy=97", "0-1"]),
        (["pareto", "--reference", "accuracy=net0+1"], ["--reference", ">= 0 points"]),
        (["pareto", "--losses", "1,-2"], ["--losses -2", ">= 0"]),
        (
            ["pareto", "--reference", "training_complexity=30"],
            ["--reference training_complexity=30", "not one of the objectives"],
        ),
        (["compare", "--sweep", "nope"], ["--sweep nope", "no sweep"]),
        (["compare", "--by", "sweep", "--sweep", "nope"], ["--sweep nope"]),
        (
            ["launch", str(QUICKSTART), "--set", "pareto.reference=accuracy=2"],
            ["quickstart.yaml", "pareto.reference accuracy=2", "0-1"],
        ),
        (
            ["launch", str(QUICKSTART), "--set", "pareto.colour=1"],
            ["pareto.colour", "unknown key"],
        ),
    ],
)
def test_bad_input_is_one_line_and_status_2(quickstart, args, words):
    folder, _ = quickstart
    proc = run_cli(folder, *args, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-1000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(word in lines[0] for word in words), lines[0]


# ---------------------------------------------------------------------------- several sweeps


@pytest.mark.slow
def test_two_sweeps_share_one_reference(two_sweeps):
    folder, alpha, beta = two_sweeps
    assert alpha.returncode == 0 and beta.returncode == 0
    proc = run_cli(folder, "pareto", "-o", "both.parquet", "--reference", "accuracy=net0-10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = pq.read_table(folder / "both.parquet").to_pylist()
    net0 = [r for r in rows if r["round"] == 0 and r["phase"] == "search"]
    client = client_for(folder)
    ends = {r["run_id"]: client.get_run(r["run_id"]).info.end_time for r in net0}
    base = min(net0, key=lambda r: (ends[r["run_id"]], r["run_id"]))
    floor = base["accuracy"] - 0.10
    (ref,) = [x for x in proc.stdout.splitlines() if x.startswith("hypervolume reference")]
    assert ref.startswith("hypervolume reference (shared by 2 sweeps)")
    assert f"accuracy {floor:.4f}, mac_reduction 1x" in ref
    found = {}
    for line in proc.stdout.splitlines():
        match = re.match(r"^sweep (\w+) \(\w+\): hypervolume (\S+)$", line)
        if match:
            found[match[1]] = float(match[2])
    assert set(found) == {"alpha", "beta"}
    for name, value in found.items():
        points = [(r["accuracy"], r["mac_reduction"]) for r in rows if r["sweep"] == name]
        assert value == pytest.approx(staircase(points, floor), rel=1e-3, abs=1e-4), name

    compare = run_cli(
        folder, "compare", "--sweep", "alpha", "--sweep", "beta", "--by", "sweep",
        "--format", "json", "--reference", "accuracy=net0-10",
    )  # fmt: skip
    assert compare.returncode == 0, compare.stderr[-2000:]
    records = json.loads(compare.stdout)
    assert [r["sweep"] for r in records] == ["alpha", "beta"]  # one row per sweep
    for record in records:
        assert record["hypervolume"] == pytest.approx(found[record["sweep"]], rel=1e-3, abs=1e-4)
        assert record["mac_reduction_at_1pt"] >= 1.0
