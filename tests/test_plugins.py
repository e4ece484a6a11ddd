"""Networks and datasets from a package outside this repository, named by import path: their
cost, their checks, filter inheritance, and `run`, `launch`, `compare` and `pareto` with them
through the real CLI (the package is on PYTHONPATH only)."""

import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq
import pytest
import torch
from conftest import CLI, trial_results
from mlflow_store import all_runs, check_store_matches, client_for
from plugin_sources import tinynet_cost, write_plugin

from adprune_core.config import ArchError, DataSpec, PluginError
from adprune_core.data import load_dataset
from adprune_core.nets import (
    ARCHS,
    build_model,
    counted_cost,
    counted_params_and_macs,
    default_widths,
    inherit_filters,
    net_cost,
    plugin_arch_info,
)

NET = "tinyplug.nets:build"
DATA = "tinyplug.data:load"
COUNTED_DATA = "tinyplug.data:counted"

PLUGIN_SPEC = """
name: {name}
model: {{arch: "{arch}"{widths}}}
data:
  dataset: "{dataset}"
  batch_size: 32
prune:
  init: {init}
  rho: {{threshold: 0.01, patience: 1, min_epochs: 2, max_epochs: 3}}
  delta: {{flat_band: 0.002}}
  min_width: 2
  max_rounds: 3
search:
  prune.rho.threshold: {{grid: [0.005, 0.05]}}
"""


def plugin_spec(name, arch=NET, dataset=DATA, init="random", widths=None):
    extra = f", widths: {widths}" if widths else ""
    return PLUGIN_SPEC.format(name=name, arch=arch, dataset=dataset, init=init, widths=extra)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """The plugin package on this process's sys.path, for the in-process tests."""
    src = write_plugin(tmp_path_factory.mktemp("plugin"))
    sys.path.insert(0, str(src))
    yield src
    sys.path.remove(str(src))
    for module in [m for m in sys.modules if m.split(".")[0] == "tinyplug"]:
        del sys.modules[module]
    plugin_arch_info.cache_clear()
    counted_cost.cache_clear()


def cli(folder, src, *args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, cwd=folder, env=env, timeout=timeout
    )


def describe(proc):
    out, err = proc.stdout[-3000:], proc.stderr[-3000:]
    return f"rc={proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"


# ---------------------------------------------------------------------------- cost


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_counted_cost_agrees_with_the_analytic_cost_of_builtin_archs(arch):
    rng = random.Random(arch)
    widths = [rng.randint(1, 12) for _ in default_widths(arch)]
    model = build_model(arch, widths, num_classes=7, input_size=16, in_channels=3)
    analytic = net_cost(arch, widths, num_classes=7, input_size=16, in_channels=3)
    assert counted_params_and_macs(model, 16, 3) == (analytic.params, analytic.macs)


@pytest.mark.parametrize(
    ("widths", "classes", "channels", "size"), [([8, 12, 16], 3, 3, 12), ([3, 5, 2], 10, 1, 9)]
)
def test_plugin_cost_is_counted_and_matches_a_hand_count(plugin, widths, classes, channels, size):
    cost = net_cost(NET, widths, num_classes=classes, input_size=size, in_channels=channels)
    assert (cost.params, cost.macs) == tinynet_cost(widths, classes, channels, size)


# ---------------------------------------------------------------------------- model checks


def test_plugin_net_gets_default_widths_and_relus_in_forward_order(plugin):
    assert default_widths(NET) == [8, 12, 16]
    model = build_model(NET, [4, 6, 8], num_classes=3, input_size=12, in_channels=3)
    relus = model.prunable_relus()
    assert relus == [model.net.stem_relu, model.net.mid_relu, model.net.mix_relu]
    assert model(torch.zeros(5, 3, 12, 12)).shape == (5, 3)


def test_entry_points_name_a_network_and_a_dataset(plugin):
    assert default_widths("tiny") == [8, 12, 16]
    data = load_dataset(DataSpec(dataset="tinydata"))
    assert (data.num_classes, data.input_size, data.in_channels) == (3, 12, 3)
    assert (len(data.train_y), len(data.test_y)) == (96, 48)
    assert (
        net_cost("tiny", [4, 6, 8], num_classes=3, input_size=12, in_channels=3).macs
        == tinynet_cost([4, 6, 8], 3, 3, 12)[1]
    )
    with pytest.raises(ArchError, match=r"known: cnn, .*vgg19, tiny, or a factory"):
        default_widths("nope")


@pytest.mark.parametrize(
    ("factory", "words"),
    [
        ("raises", ("tinyplug.nets:raises", "RuntimeError: widths not supported")),
        ("two_relus", ("tinyplug.nets:two_relus", "2 LayerReLU", "3 widths")),
        ("fixed_widths", ("tinyplug.nets:fixed_widths", "'stem_relu'", "widths[0] = 4")),
        ("wrong_output", ("tinyplug.nets:wrong_output", "(2, 4)", "(N, num_classes)")),
    ],
)
def test_a_bad_network_is_refused_in_one_line(plugin, factory, words):
    with pytest.raises(PluginError) as caught:
        build_model(
            f"tinyplug.nets:{factory}", [4, 6, 8], num_classes=3, input_size=12, in_channels=3
        )
    message = str(caught.value)
    assert message.startswith("model.arch: ") and "\n" not in message
    for word in words:
        assert word in message, message


def test_inherit_copies_a_random_subset_of_the_plugin_parent_filters(plugin):
    torch.manual_seed(0)
    parent = build_model(NET, [8, 12, 16], num_classes=3, input_size=12, in_channels=3)
    child = build_model(NET, [4, 6, 8], num_classes=3, input_size=12, in_channels=3)
    inherit_filters(parent, child, torch.Generator().manual_seed(1))
    p, c = parent.net, child.net

    def rows_of(child_rows, parent_rows):
        return [
            next(i for i, row in enumerate(parent_rows) if torch.equal(row, target))
            for target in child_rows
        ]

    keep0 = rows_of(c.stem.weight, p.stem.weight)
    assert len(set(keep0)) == 4
    keep1 = rows_of(c.mid.weight, p.mid.weight[:, keep0])
    assert len(set(keep1)) == 6
    keep2 = rows_of(c.mix.weight, p.mix.weight[:, keep1])
    assert torch.equal(c.mix.bias, p.mix.bias[keep2])
    assert torch.equal(c.fc.weight, p.fc.weight[:, keep2])


# ---------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A folder with the plugin under src/ (not importable from the folder itself)."""
    folder = tmp_path_factory.mktemp("outside")
    return folder, write_plugin(folder)


def test_cost_of_a_plugin_arch(outside):
    folder, src = outside
    args = ["--widths", "4,6,8", "--num-classes", "3", "--input-size", "12", "--in-channels", "3"]
    proc = cli(folder, src, "cost", "--arch", NET, *args, "--json")
    assert proc.returncode == 0, describe(proc)
    report = json.loads(proc.stdout)
    assert report["arch"] == NET
    assert (report["params"], report["macs"]) == tinynet_cost([4, 6, 8], 3, 3, 12)
    assert report["baseline_macs"] == tinynet_cost([8, 12, 16], 3, 3, 12)[1]


def test_run_trains_a_plugin_network_on_a_plugin_dataset(outside):
    folder, src = outside
    (folder / "run.yaml").write_text(plugin_spec("run-plugin"))
    proc = cli(folder, src, "run", "run.yaml", "-q", "-o", "run.json")
    assert proc.returncode == 0, describe(proc)
    assert f"{NET} on {DATA} (96 train / 48 test, 3 classes)" in proc.stdout
    payload = json.loads((folder / "run.json").read_text())
    assert len(payload["records"]) >= 2  # net0 and at least one pruned network
    for record in payload["records"]:
        assert (record["params"], record["macs"]) == tinynet_cost(record["widths"], 3, 3, 12)
    assert payload["records"][1]["widths"] != [8, 12, 16]


def test_run_with_inherit_on_a_plugin_network(outside):
    folder, src = outside
    (folder / "inherit.yaml").write_text(plugin_spec("inherit", init="inherit"))
    proc = cli(folder, src, "run", "inherit.yaml", "-q")
    assert proc.returncode == 0, describe(proc)
    assert "net1" in proc.stdout


BAD_PLUGINS = {
    "module_does_not_import": (
        {"arch": "tinyplug.broken:build"},
        ("model.arch", "tinyplug.broken", "No module named 'a_module_that_is_not_there'"),
    ),
    "missing_attribute": (
        {"arch": "tinyplug.nets:nope"},
        ("model.arch", "tinyplug.nets:nope", "no attribute 'nope'"),
    ),
    "no_default_widths": (
        {"arch": "tinyplug.nets:no_defaults"},
        ("model.arch", "no default widths"),
    ),
    "factory_raises": (
        {"arch": "tinyplug.nets:raises"},
        ("model.arch", "tinyplug.nets:raises", "RuntimeError: widths not supported"),
    ),
    "wrong_relu_count": ({"arch": "tinyplug.nets:two_relus"}, ("2 LayerReLU modules",)),
    "wrong_widths": (
        {"arch": "tinyplug.nets:fixed_widths", "widths": [6, 6, 6]},
        ("tinyplug.nets:fixed_widths", "widths[0] = 6"),
    ),
    "wrong_output_shape": ({"arch": "tinyplug.nets:wrong_output"}, ("(N, num_classes)",)),
    "inherit_without_groups": (
        {"arch": "tinyplug.nets:build_no_groups", "init": "inherit"},
        ("prune.init", "random init is the only choice"),
    ),
    "dataset_module_missing": (
        {"dataset": "nopkg.data:load"},
        ("data.dataset", "No module named 'nopkg'"),
    ),
    "labels_not_int64": (
        {"dataset": "tinyplug.data:int32_labels"},
        ("data.dataset", "train_y must be an int64 tensor", "int32"),
    ),
    "images_not_nchw": (
        {"dataset": "tinyplug.data:flat_images"},
        ("data.dataset", "train_x must be a uint8 or float tensor of shape (N, C, H, W)"),
    ),
    "loader_returns_four_things": (
        {"dataset": "tinyplug.data:four_things"},
        ("data.dataset", "tuple of 4"),
    ),
}


@pytest.fixture(scope="module")
def bad_plugin_runs(outside):
    """Every bad case through `run` and through `launch`, two at a time."""
    folder, src = outside
    cases = {}
    for case, (fields, _) in BAD_PLUGINS.items():
        (folder / f"{case}.yaml").write_text(plugin_spec(case, **fields))
        cases[("run", case)] = ["run", f"{case}.yaml", "-q"]
        cases[("launch", case)] = ["launch", f"{case}.yaml", "--storage", "runs"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(cli, folder, src, *args) for key, args in cases.items()}
        return folder, {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize("command", ["run", "launch"])
@pytest.mark.parametrize("case", sorted(BAD_PLUGINS))
def test_a_bad_plugin_is_one_line_and_exit_2_before_anything_starts(bad_plugin_runs, command, case):
    folder, runs = bad_plugin_runs
    proc = runs[(command, case)]
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), describe(proc)
    for word in BAD_PLUGINS[case][1]:
        assert word in lines[0], lines[0]
    assert not (folder / "runs" / case).exists()  # launch refused it before Ray or Tune
    assert "Ray" not in proc.stdout


@pytest.fixture(scope="module")
def plugin_sweep(outside):
    folder, src = outside
    (folder / "sweep.yaml").write_text(plugin_spec("plugin-sweep", dataset=COUNTED_DATA))
    proc = cli(folder, src, "launch", "sweep.yaml", "--storage", "runs", timeout=400)
    return folder, src, proc


def test_launch_records_a_plugin_sweep_like_a_builtin_one(plugin_sweep):
    folder, _, proc = plugin_sweep
    assert proc.returncode == 0, describe(proc)
    results = trial_results(folder, "plugin-sweep")
    assert len(results) == 2 and all(rows[-1]["schedule_done"] for rows in results.values())
    # The driver loaded the dataset in its checks; the trials' workers got that copy.
    (loader,) = (folder / "data" / "loads.txt").read_text().split()
    assert int(loader) not in {row["pid"] for rows in results.values() for row in rows}
    for rows in results.values():
        for row in rows:
            assert (row["params"], row["macs"]) == tinynet_cost(row["widths"], 3, 3, 12)
    client = client_for(folder)
    sweep, _ = check_store_matches(client, results, "plugin-sweep")
    assert sweep.data.params["model.arch"] == NET
    assert sweep.data.params["data.dataset"] == COUNTED_DATA
    assert {r.data.tags["arch"] for r in all_runs(client)} == {NET}


def test_compare_and_pareto_of_a_plugin_sweep(plugin_sweep):
    folder, src, _ = plugin_sweep
    compare = cli(folder, src, "compare", "--sweep", "plugin-sweep", "--format", "json")
    assert compare.returncode == 0, describe(compare)
    assert len(json.loads(compare.stdout)) == 2
    front = cli(folder, src, "pareto", "--sweep", "plugin-sweep", "-o", "front.parquet")
    assert front.returncode == 0, describe(front)
    table = pq.read_table(folder / "front.parquet").to_pylist()
    assert len(table) >= 4  # two trials, at least two networks each
    assert {row["arch"] for row in table} == {NET}
    assert {row["dataset"] for row in table} == {COUNTED_DATA}
    for row in table:
        assert (row["params"], row["macs"]) == tinynet_cost(row["widths"], 3, 3, 12)
    assert any(row["on_front"] for row in table)
