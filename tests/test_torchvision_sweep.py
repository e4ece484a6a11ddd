"""A real ``adprune-sweep launch`` on ``torchvision:resnet18``, recorded like a built-in sweep:
sweep -> trial -> net runs with one width per group, a chosen network that loads with
``mlflow.pytorch.load_model`` and reproduces its recorded accuracy, and a ``torch.export``
file that runs with torch alone."""

import json
import subprocess
import sys

import mlflow
import mlflow.pytorch
import pytest
from conftest import CLI, launch_cli, trial_results
from mlflow_store import MODEL_TAG, client_for, hierarchy, networks_with_models

from adprune_core.config import DataSpec
from adprune_core.config.spec import SyntheticSpec
from adprune_core.data import DeviceBatches, load_dataset
from adprune_core.engine import evaluate
from adprune_core.nets import arch_info

ARCH = "torchvision:resnet18"
CLASSES = 4
SIZE = 32  # resnet18 as built (7x7 stride-2 stem, max pool) still leaves 1x1 at layer4
SYNTHETIC = {
    "num_train": 64, "num_test": 32, "input_size": SIZE, "in_channels": 3, "num_classes": CLASSES
}  # fmt: skip

# A large saturation threshold ends each round at min_epochs, so both trials (the grid's two
# values) reach net1 quickly; net1's widths are round(density x width), which ReLU's sparsity
# keeps under net0's.
SPEC = f"""
name: tvsweep
experiment: adprune-torchvision
model: {{arch: "{ARCH}"}}
data:
  dataset: synthetic
  batch_size: 32
  synthetic: {{num_train: 64, num_test: 32, input_size: {SIZE}, in_channels: 3,
               num_classes: {CLASSES}}}
prune:
  rho: {{threshold: 0.5, patience: 1, min_epochs: 1, max_epochs: 2}}
  max_rounds: 2
record:
  models: chosen
  latency: {{enabled: false}}
search:
  prune.rho.threshold: {{grid: [0.4, 0.6]}}
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tvsweep")
    proc = launch_cli(folder, SPEC, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # models:/ URIs resolve through the tracking URI; ``set_tracking_uri`` also exports
    # MLFLOW_TRACKING_URI, which later CLI subprocesses would inherit: unset it after.
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    yield folder
    mlflow.set_tracking_uri(None)


def _nets_by_trial(folder):
    """trial_id -> its net runs, found through the parent tags of the sweep's one root run."""
    roots, children = hierarchy(client_for(folder))
    (root,) = [r for r in roots if r.data.tags.get("sweep") == "tvsweep"]
    trials = children[root.info.run_id]
    return {t.data.tags["trial_id"]: children[t.info.run_id] for t in trials}


def _search_net(nets, round_):
    (net,) = [
        n
        for n in nets
        if n.data.params["phase"] == "search" and int(n.data.params["round"]) == round_
    ]
    return net


def _test_accuracy(model):
    spec = DataSpec(dataset="synthetic", batch_size=32, synthetic=SyntheticSpec(**SYNTHETIC))
    return evaluate(model, DeviceBatches(load_dataset(spec), "cpu", augment=False), 1024)


def test_each_trial_records_one_width_per_group_and_prunes(sweep):
    by_trial = _nets_by_trial(sweep)
    assert len(by_trial) == 2
    groups = len(arch_info(ARCH).default_widths)
    assert groups == 12
    for trial_id, nets in by_trial.items():
        net0 = json.loads(_search_net(nets, 0).data.params["widths"])
        net1 = json.loads(_search_net(nets, 1).data.params["widths"])
        assert net0 == list(arch_info(ARCH).default_widths), trial_id
        assert len(net1) == groups, trial_id
        assert net1 != net0 and all(b <= a for a, b in zip(net0, net1)), trial_id


def _chosen_nets(folder):
    """(trial_id, net run) for every network record.models=chosen logged."""
    by_trial = _nets_by_trial(folder)
    chosen = []
    for trial_id, rows in trial_results(folder, "tvsweep").items():
        modelled = networks_with_models(rows, "chosen")
        assert modelled, trial_id
        for net in by_trial[trial_id]:
            if (net.data.params["phase"], int(net.data.params["round"])) in modelled:
                chosen.append((trial_id, net))
    return chosen


def test_the_chosen_network_reproduces_its_recorded_accuracy(sweep):
    chosen = _chosen_nets(sweep)
    assert len(chosen) >= 2  # at least one per trial
    for trial_id, net in chosen:
        uri = net.data.tags[MODEL_TAG]
        loaded = mlflow.pytorch.load_model(uri, map_location="cpu")
        widths = json.loads(net.data.params["widths"])
        assert loaded.widths == widths, trial_id
        recorded = net.data.metrics["accuracy"]
        assert _test_accuracy(loaded) == pytest.approx(recorded, abs=1e-6), trial_id


# A fresh interpreter that cannot import this package: torch alone runs the program.
RUN_ALONE = """
import sys
sys.modules["adprune_core"] = sys.modules["ray_jobs"] = sys.modules["mlflow"] = None
import torch
program = torch.export.load(sys.argv[1]).module()
with torch.no_grad():
    print(tuple(program(torch.randn(5, 3, {size}, {size})).shape))
"""


def test_the_torch_export_file_runs_with_torch_alone(sweep, tmp_path):
    _, net = _chosen_nets(sweep)[0]
    program = tmp_path / "net.pt2"
    tracking = f"sqlite:///{sweep / 'mlruns' / 'mlflow.db'}"
    export = [*CLI, "export", net.info.run_id, "-o", str(program), "--format", "torch.export"]
    proc = subprocess.run(
        [*export, "--tracking-uri", tracking],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=sweep,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert program.stat().st_size > 0
    run = subprocess.run(
        [sys.executable, "-I", "-c", RUN_ALONE.format(size=SIZE), str(program)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == f"(5, {CLASSES})"
