"""End-to-end tests of the ``adprune-sweep`` command line, run as real subprocesses.

Each subprocess pays for importing torch (about 2 s), so the invocations of a group are
started together from a module fixture and run two at a time; the tests then read their
results. Expected numbers come from the paper (Table I) or from arithmetic done here.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "sweeps" / "quickstart.yaml"
CLI = [sys.executable, "-m", "ray_jobs.cli"]
ENERGY_PER_MAC_J = 4.6e-12  # the paper's E_MAC, 45 nm CMOS
WORKERS = max(2, os.cpu_count() or 2)

Case = tuple[Sequence[str], Path | None]


# Two CLI processes run at once on a 2-core machine; torch's default of one intra-op thread
# per core would oversubscribe it (and spin), more than doubling the training runs' time.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(args: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300, check=False
    )


def cli_many(cases: dict[str, Case]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run every case, ``WORKERS`` at a time; the first cases listed start first."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {name: pool.submit(cli, args, cwd) for name, (args, cwd) in cases.items()}
        return {name: future.result() for name, future in futures.items()}


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def reductions(stdout: str) -> tuple[str, str]:
    params = re.search(r"^params red\.\s+(\S+)$", stdout, re.M)
    macs = re.search(r"^MACs red\.\s+(\S+)$", stdout, re.M)
    assert params and macs, stdout
    return params.group(1), macs.group(1)


# ---------------------------------------------------------------------------- cost

# The paper's Table I configurations.
VGG19_C10_NET1 = "18,23,47,25,54,51,62,61,197,258,378,322,402,383,259,134"
VGG19_C10_NET3 = "10,9,30,11,21,31,22,21,62,70,113,141,256,299,194,71"
VGG19_C100_NET1 = "34,23,51,30,63,63,73,82,210,285,333,357,317,259,181,106"
RESNET18_C10_NET1 = "34,29,41,25,33,58,78,27,65,71,83,46,69,120,191,219,288"

TINY = ["--num-classes", "4", "--input-size", "8", "--in-channels", "1"]

COST_CASES: dict[str, Case] = {
    "vgg19_c10_net1": (["cost", "--arch", "vgg19", "--widths", VGG19_C10_NET1], None),
    "vgg19_c10_net3": (["cost", "--arch", "vgg19", "--widths", VGG19_C10_NET3], None),
    "vgg19_c100_net1": (
        ["cost", "--arch", "vgg19", "--dataset", "cifar100", "--widths", VGG19_C100_NET1],
        None,
    ),
    "cnn2_json": (["cost", "--arch", "cnn2", "--widths", "3,5", *TINY, "--json"], None),
    "cnn_json": (
        [
            "cost",
            "--arch",
            "cnn",
            "--widths",
            "2,3,4,5",
            "--num-classes",
            "3",
            "--input-size",
            "8",
            "--in-channels",
            "2",
            "--json",
        ],
        None,
    ),
    "resnet18_no_sc": (
        ["cost", "--arch", "resnet18", "--widths", RESNET18_C10_NET1, "--no-shortcuts", "--json"],
        None,
    ),
    "resnet18_sc": (["cost", "--arch", "resnet18", "--widths", RESNET18_C10_NET1, "--json"], None),
}

# (arguments, strings the error must mention: the offending option and/or value)
BAD_COST: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "too_many_widths": (["--arch", "cnn2", "--widths", "1,2,3"], ("--widths",)),
    "zero_width": (["--arch", "cnn2", "--widths", "0,5"], ("--widths",)),
    "non_integer_widths": (["--arch", "cnn2", "--widths", "a,b"], ("a,b",)),
    "unknown_arch": (["--arch", "nope"], ("--arch", "nope")),
    "dataset_and_classes": (
        ["--arch", "cnn2", "--dataset", "cifar10", "--num-classes", "5"],
        ("--dataset", "--num-classes"),
    ),
}

HUGE = "1" + "0" * 200  # a width of 10**200: valid int, absurd network
BUG_COST: dict[str, list[str]] = {"huge_widths": ["--arch", "cnn2", "--widths", f"{HUGE},{HUGE}"]}


@pytest.fixture(scope="module")
def cost_results() -> dict[str, subprocess.CompletedProcess[str]]:
    cases = dict(COST_CASES)
    cases.update({f"bad_{k}": (["cost", *args], None) for k, (args, _) in BAD_COST.items()})
    cases.update({f"bug_{k}": (["cost", *args], None) for k, args in BUG_COST.items()})
    return cli_many(cases)


@pytest.mark.parametrize(
    ("case", "params", "macs"),
    [
        ("vgg19_c10_net1", "3.1x", "5.6x"),
        ("vgg19_c10_net3", "10.3x", "27.4x"),
        ("vgg19_c100_net1", "3.9x", "5.3x"),
    ],
)
def test_cost_matches_paper_table_1(cost_results, case, params, macs):
    proc = cost_results[case]
    assert proc.returncode == 0, describe(proc)
    assert reductions(proc.stdout) == (params, macs)


def test_cost_text_names_input_shape(cost_results):
    proc = cost_results["vgg19_c100_net1"]
    assert "100 classes" in proc.stdout
    assert "32x32x3" in proc.stdout


def test_cost_json_tiny_cnn2_by_hand(cost_results):
    proc = cost_results["cnn2_json"]
    assert proc.returncode == 0, describe(proc)
    report = json.loads(proc.stdout)
    # cnn2, widths (3, 5), 8x8x1 input, 4 classes. #MAC = O^2 * N * k^2 * M, 3x3 same-padding.
    conv0 = 8 * 8 * 1 * 3 * 3 * 3  # 8x8 out, 1 in, 3 out
    conv1 = 8 * 8 * 3 * 3 * 3 * 5  # still 8x8: the max-pool comes after this conv
    head = 5 * 4  # global average pool, then Linear(5, 4)
    assert report["macs"] == conv0 + conv1 + head == 10388
    params = (1 * 9 * 3) + (3 * 9 * 5) + 2 * (3 + 5) + (5 * 4 + 4)
    assert report["params"] == params == 202
    assert report["energy_j"] == pytest.approx(10388 * ENERGY_PER_MAC_J, rel=1e-12)
    # net0 of cnn2 is (16, 32).
    base_macs = 8 * 8 * 1 * 9 * 16 + 8 * 8 * 16 * 9 * 32 + 32 * 4
    base_params = 1 * 9 * 16 + 16 * 9 * 32 + 2 * (16 + 32) + 32 * 4 + 4
    assert report["baseline_macs"] == base_macs
    assert report["baseline_params"] == base_params
    assert report["mac_reduction"] == pytest.approx(base_macs / 10388, rel=1e-12)
    assert report["param_reduction"] == pytest.approx(base_params / 202, rel=1e-12)
    assert report["widths"] == [3, 5]
    assert (report["num_classes"], report["input_size"], report["in_channels"]) == (4, 8, 1)


def test_cost_json_cnn_pools_after_every_second_conv(cost_results):
    proc = cost_results["cnn_json"]
    assert proc.returncode == 0, describe(proc)
    report = json.loads(proc.stdout)
    # cnn, widths (2, 3, 4, 5), 8x8x2 input, 3 classes; pool 8 -> 4 after conv1, 4 -> 2 after conv3.
    macs = (
        8 * 8 * 2 * 9 * 2  # conv0 at 8x8
        + 8 * 8 * 2 * 9 * 3  # conv1 at 8x8
        + 4 * 4 * 3 * 9 * 4  # conv2 at 4x4
        + 4 * 4 * 4 * 9 * 5  # conv3 at 4x4
        + 5 * 3  # head
    )
    params = 9 * (2 * 2 + 2 * 3 + 3 * 4 + 4 * 5) + 2 * (2 + 3 + 4 + 5) + 5 * 3 + 3
    assert report["macs"] == macs == 10383
    assert report["params"] == params == 424
    assert report["energy_j"] == pytest.approx(macs * ENERGY_PER_MAC_J, rel=1e-12)


def test_cost_resnet18_no_shortcuts_matches_paper(cost_results):
    proc = cost_results["resnet18_no_sc"]
    assert proc.returncode == 0, describe(proc)
    no_sc = json.loads(proc.stdout)
    assert f"{no_sc['mac_reduction']:.1f}" == "6.0"
    assert no_sc["include_shortcuts"] is False


def test_cost_resnet18_shortcuts_lower_the_reduction(cost_results):
    no_sc = json.loads(cost_results["resnet18_no_sc"].stdout)
    proc = cost_results["resnet18_sc"]
    assert proc.returncode == 0, describe(proc)
    with_sc = json.loads(proc.stdout)
    assert with_sc["include_shortcuts"] is True
    assert with_sc["mac_reduction"] < no_sc["mac_reduction"]
    # Leaving projections out of both sides removes MACs from both.
    assert with_sc["macs"] > no_sc["macs"]
    assert with_sc["baseline_macs"] > no_sc["baseline_macs"]


@pytest.mark.parametrize("case", sorted(BAD_COST))
def test_cost_bad_input_is_a_usage_error(cost_results, case):
    proc = cost_results[f"bad_{case}"]
    _, mentions = BAD_COST[case]
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    for text in mentions:
        assert text in proc.stderr, describe(proc)


def test_cost_huge_widths_is_a_usage_error(cost_results):
    proc = cost_results["bug_huge_widths"]
    assert "Traceback" not in proc.stderr, describe(proc)
    assert proc.returncode == 2, describe(proc)


# ---------------------------------------------------------------------------- run

MIN_WIDTH = 10  # above half of net0 (16, 32): the clamp acts from the first shrink on
NUM_CLASSES = 4
SMALL_SPEC = f"""\
name: tiny
model:
  arch: cnn2
data:
  dataset: synthetic
  batch_size: 32
  synthetic:
    num_train: 128
    num_test: 32
    num_classes: {NUM_CLASSES}
    input_size: 8
    in_channels: 1
train:
  seed: 0
prune:
  rho:
    min_epochs: 2
    max_epochs: 3
  min_width: {MIN_WIDTH}
  max_rounds: 3
final:
  epochs: 0
"""


# (run arguments, strings the one-line error must contain); run in the folder of small.yaml.
RUN_ERRORS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "missing_file": (["run", "missing.yaml"], ("missing.yaml",)),
    "malformed_yaml": (["run", "bad.yaml"], ("bad.yaml:3:1",)),
    "unknown_key": (["run", "unknown.yaml"], ("unknown.yaml", "model.foo")),
    "negative_threshold": (
        ["run", "small.yaml", "--set", "prune.rho.threshold=-1"],
        ("small.yaml", "prune.rho.threshold"),
    ),
    "unknown_arch": (["run", "small.yaml", "--set", "model.arch=nope"], ("model.arch",)),
    "output_folder_missing": (
        ["run", "small.yaml", "-o", "nodir/out.json"],
        ("nodir",),
    ),
}


RUN_BUGS: dict[str, list[str]] = {
    "cuda_unavailable": ["run", "small.yaml", "-q", "--device", "cuda"],
}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    (folder / "small.yaml").write_text(SMALL_SPEC)
    (folder / "bad.yaml").write_text("name: x\nmodel:\n\tarch: cnn2\n")  # tab: line 3, col 1
    (folder / "unknown.yaml").write_text(
        SMALL_SPEC.replace("  arch: cnn2\n", "  arch: cnn2\n  foo: 1\n")
    )
    return folder


@pytest.fixture(scope="module")
def run_results(run_folder) -> dict[str, subprocess.CompletedProcess[str]]:
    quick_out = run_folder / "quickstart.json"
    cases: dict[str, Case] = {
        # The two training runs first, so they overlap the short error cases.
        "quickstart": (["run", str(QUICKSTART), "-q", "-o", str(quick_out)], run_folder),
        "small": (["run", "small.yaml", "-o", "out.json"], run_folder),
        "debug": (["--debug", "run", "missing.yaml"], run_folder),
    }
    for name, (args, _) in RUN_ERRORS.items():
        cases[f"error_{name}"] = (args, run_folder)
    for name, args in RUN_BUGS.items():
        cases[f"bug_{name}"] = (args, run_folder)
    return cli_many(cases)


@pytest.fixture(scope="module")
def small_run(run_results, run_folder) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = run_results["small"]
    assert proc.returncode == 0, describe(proc)
    return proc, json.loads((run_folder / "out.json").read_text())


def cnn2_macs(widths: Sequence[int]) -> int:
    """cnn2 on the spec's 8x8x1 synthetic images: two 3x3 convs at 8x8, then pool, GAP, head."""
    w0, w1 = widths
    return 8 * 8 * 1 * 9 * w0 + 8 * 8 * w0 * 9 * w1 + w1 * NUM_CLASSES


def width_rule(widths: Sequence[int], densities: Sequence[float]) -> list[int]:
    """clamp(round_half_up(AD * w), min_width, w), written out independently here."""
    out = []
    for w, ad in zip(widths, densities):
        rounded = math.floor(ad * w + 0.5)
        out.append(min(max(rounded, MIN_WIDTH), w))
    return out


def test_run_small_spec_exits_zero_and_writes_json(small_run):
    proc, payload = small_run
    assert "Traceback" not in proc.stderr
    assert set(payload) >= {"spec", "summary", "records"}
    records = payload["records"]
    assert len(records) >= 2, "the tiny spec should get past net0; nothing else is tested"
    assert records[0]["widths"] == [16, 32]  # cnn2's net0
    assert payload["spec"]["prune"]["min_width"] == MIN_WIDTH


def test_run_prints_epoch_lines_and_a_table_row_per_net(small_run):
    proc, payload = small_run
    records = payload["records"]
    lines = proc.stdout.splitlines()
    epoch_lines = [m for m in (re.match(r"^net(\d+)\s+epoch\s+(\d+)\s", ln) for ln in lines) if m]
    assert len(epoch_lines) == sum(len(r["ad_history"]) for r in records)
    for record in records:
        epochs = [int(m.group(2)) for m in epoch_lines if int(m.group(1)) == record["round"]]
        assert epochs == list(range(1, len(record["ad_history"]) + 1))
        cells = ", ".join(map(str, record["widths"]))
        row = re.compile(rf"^net{record['round']}\*?\s+\[{cells}\]\s")
        assert sum(1 for ln in lines if row.match(ln)) == 1, (record["widths"], proc.stdout)


def test_run_width_rule_between_rounds(small_run):
    _, payload = small_run
    records = payload["records"]
    for prev, nxt in zip(records, records[1:]):
        densities = prev["layer_ad_history"][-1]
        assert nxt["widths"] == width_rule(prev["widths"], densities)
    # The clamp at min_width must have had something to do at least once, or it is untested.
    raw = [
        math.floor(ad * w + 0.5)
        for prev in records[:-1]
        for w, ad in zip(prev["widths"], prev["layer_ad_history"][-1])
    ]
    assert any(r < MIN_WIDTH for r in raw)


def test_run_records_epochs_and_densities(small_run):
    _, payload = small_run
    for record in payload["records"]:
        assert record["epochs"] == len(record["ad_history"]) == len(record["layer_ad_history"])
        assert 2 <= record["epochs"] <= 3  # prune.rho.min_epochs .. max_epochs
        assert all(0 < ad <= 1 for ad in record["ad_history"])
        for layer in record["layer_ad_history"]:
            assert len(layer) == 2
            assert all(0 < ad <= 1 for ad in layer)


def test_run_macs_and_training_complexity_by_hand(small_run):
    _, payload = small_run
    records = payload["records"]
    net0 = cnn2_macs([16, 32])
    total = 0.0
    for record in records:
        assert record["macs"] == cnn2_macs(record["widths"])
        reduction = net0 / cnn2_macs(record["widths"])
        assert record["mac_reduction"] == pytest.approx(reduction, rel=1e-9)
        total += record["epochs"] / reduction  # Eq. 1
        assert record["training_complexity"] == pytest.approx(total, rel=1e-9)
    assert payload["summary"]["training_complexity"] == pytest.approx(total, rel=1e-9)


def test_run_summary_counts_search_rounds(small_run):
    _, payload = small_run
    records = payload["records"]
    summary = payload["summary"]
    assert summary["rounds"] == sum(1 for r in records if r["phase"] == "search")
    assert summary["rounds"] <= 3  # prune.max_rounds
    assert summary["widths"] == records[summary["chosen_round"]]["widths"]
    assert summary["baseline_complexity"] == sum(r["epochs"] for r in records)


@pytest.mark.parametrize("case", sorted(RUN_ERRORS))
def test_run_bad_input_one_line_exit_2(run_results, case):
    proc = run_results[f"error_{case}"]
    _, mentions = RUN_ERRORS[case]
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, describe(proc)
    for text in mentions:
        assert text in lines[0], describe(proc)
    # Nothing was trained before the error.
    assert "epoch" not in proc.stdout


def test_run_debug_shows_traceback(run_results):
    proc = run_results["debug"]
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "missing.yaml" in proc.stderr


def test_run_cuda_without_cuda_is_a_one_line_error(run_results):
    proc = run_results["bug_cuda_unavailable"]
    if proc.returncode == 0 and " on cuda" in proc.stdout:
        pytest.skip("this machine has CUDA")
    assert "Traceback" not in proc.stderr, describe(proc)
    assert proc.returncode == 2, describe(proc)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, describe(proc)
    assert "cuda" in lines[0]


def test_quickstart_prunes(run_results, run_folder):
    proc = run_results["quickstart"]
    assert proc.returncode == 0, describe(proc)
    assert not re.search(r"^net\d+\s+epoch\s", proc.stdout, re.M), "-q still printed epochs"
    payload = json.loads((run_folder / "quickstart.json").read_text())
    records = payload["records"]
    assert len(records) >= 2
    net0, net1 = records[0]["widths"], records[1]["widths"]
    assert len(net1) == len(net0) > 0
    assert all(b <= a for a, b in zip(net0, net1))
    assert any(b < a for a, b in zip(net0, net1))
