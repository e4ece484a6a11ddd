"""Trained networks as products, with a real sweep on digits recorded through a real
`mlflow server`: logged models reproduce their recorded accuracy, export runs with torch
alone, the Model Registry round trip, record.models per trial, and bad input."""

import json
import subprocess
import sys

import mlflow
import mlflow.pytorch
import pytest
import torch
from conftest import CLI, MlflowServer, launch_cli, tiny_spec, trial_results
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow_store import MODEL_TAG, all_runs, check_logged_models, networks_with_models

from adprune_core.config import DataSpec
from adprune_core.data import DeviceBatches, load_dataset
from adprune_core.engine import evaluate
from adprune_core.nets import load_network

DIGITS_SPEC = """
name: digits
experiment: adprune-models
model: {arch: cnn2, widths: [8, 12]}
data: {dataset: digits, batch_size: 64}
prune:
  rho: {threshold: 0.01, patience: 1, min_epochs: 2, max_epochs: 3}
  delta: {flat_band: 0.002}
  min_width: 2
  max_rounds: 2
final: {epochs: 1}
search:
  prune.rho.threshold: {grid: [0.005, 0.05]}
"""


@pytest.fixture(scope="module", autouse=True)
def tracking_uri_unset_after_the_module():
    """``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI, which every later CLI
    subprocess of the session would inherit; unset both when this module is done."""
    yield
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A quickstart-like digits sweep (two trials, a final phase) in a real MLflow server,
    registering its chosen network at the end."""
    folder = tmp_path_factory.mktemp("models")
    server = MlflowServer(folder / "server").start()
    try:
        proc = launch_cli(
            folder, DIGITS_SPEC, "--tracking-uri", server.uri, "--register-as", "digits-best"
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        mlflow.set_tracking_uri(server.uri)
        yield folder, server, proc
    finally:
        server.stop()


def cli(folder, server, *args):
    return subprocess.run(
        [*CLI, *args, "--tracking-uri", server.uri],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=folder,
    )


def net_runs(client):
    return [r for r in all_runs(client) if r.data.tags.get("adprune.kind") == "net"]


def digits_accuracy(model):
    batches = DeviceBatches(load_dataset(DataSpec(dataset="digits")), "cpu", augment=False)
    return evaluate(model, batches, DataSpec().eval_batch_size)


def test_every_trials_chosen_and_final_model_reproduces_its_recorded_accuracy(sweep, tmp_path):
    folder, server, _ = sweep
    client = MlflowClient(server.uri)
    results = trial_results(folder, "digits")
    nets = net_runs(client)
    checked = 0
    for trial_id, rows in results.items():
        modelled = networks_with_models(rows, "chosen")
        assert ("final", rows[-1]["final_chosen_round"]) in modelled
        for net in [n for n in nets if n.data.tags["trial_id"] == trial_id]:
            key = (net.data.params["phase"], int(net.data.params["round"]))
            check_logged_models(client, net, key in modelled)
            if key not in modelled:
                continue
            uri = net.data.tags[MODEL_TAG]
            loaded = mlflow.pytorch.load_model(uri, map_location="cpu")
            assert digits_accuracy(loaded) == net.data.metrics["accuracy"]
            # adprune_core's own loader, from the exported state_dict file.
            exported = tmp_path / f"{trial_id}-{net.info.run_id}.pt"
            proc = cli(folder, server, "export", uri, "-o", str(exported))
            assert proc.returncode == 0, proc.stderr
            model, info = load_network(exported)
            assert info.widths == json.loads(net.data.params["widths"])
            assert digits_accuracy(model) == net.data.metrics["accuracy"]
            checked += 1
    assert checked == 2 * len(results)  # each trial's chosen and final-phase network


# The program runs in a fresh interpreter that cannot import this package at all.
RUN_ALONE = """
import sys
sys.modules["adprune_core"] = sys.modules["ray_jobs"] = sys.modules["mlflow"] = None
import torch
fmt, program, inputs, out = sys.argv[1:]
x = torch.load(inputs)
module = torch.jit.load(program) if fmt == "torchscript" else torch.export.load(program).module()
with torch.no_grad():
    torch.save(module(x), out)
"""


@pytest.mark.parametrize(("fmt", "suffix"), [("torchscript", ".ts"), ("torch.export", ".pt2")])
def test_exported_program_runs_with_torch_alone_and_gives_the_same_logits(
    sweep, tmp_path, fmt, suffix
):
    folder, server, _ = sweep
    net = next(n for n in net_runs(MlflowClient(server.uri)) if n.data.tags.get(MODEL_TAG))
    program = tmp_path / f"net{suffix}"
    proc = cli(folder, server, "export", net.info.run_id, "-o", str(program), "--format", fmt)
    assert proc.returncode == 0, proc.stderr
    inputs = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.save(inputs, tmp_path / "x.pt")
    run = subprocess.run(
        [sys.executable, "-I", "-c", RUN_ALONE, fmt, str(program), "x.pt", "logits.pt"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    loaded = mlflow.pytorch.load_model(net.data.tags[MODEL_TAG], map_location="cpu").eval()
    with torch.no_grad():
        expected = loaded(inputs)
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected)


def test_launch_registered_the_sweeps_chosen_network(sweep):
    _, server, proc = sweep
    client = MlflowClient(server.uri)
    (version,) = client.search_model_versions("name = 'digits-best'")
    front_nets = [n for n in net_runs(client) if n.data.tags.get(MODEL_TAG)]
    best = max(front_nets, key=lambda n: n.data.metrics["accuracy"])
    registered = next(n for n in front_nets if n.info.run_id == version.run_id)
    assert registered.data.metrics["accuracy"] == best.data.metrics["accuracy"]
    assert version.source == registered.data.tags[MODEL_TAG]
    assert version.tags["widths"] == registered.data.params["widths"]
    assert float(version.tags["mac_reduction"]) == pytest.approx(
        registered.data.metrics["mac_reduction"], rel=1e-5
    )
    assert "registered 'digits-best' version 1" in proc.stdout


def test_register_by_front_rule_round_trips_through_the_registry(sweep):
    folder, server, _ = sweep
    client = MlflowClient(server.uri)
    nets = [n for n in net_runs(client) if n.data.tags.get(MODEL_TAG)]
    floor = sorted(n.data.metrics["mac_reduction"] for n in nets)[len(nets) // 2]
    proc = cli(
        folder, server, "register", "--name", "digits-rule", "--best", "accuracy",
        "--min-mac-reduction", str(floor),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    eligible = [n for n in nets if n.data.metrics["mac_reduction"] >= floor]
    best = max(n.data.metrics["accuracy"] for n in eligible)
    (version,) = client.search_model_versions("name = 'digits-rule'")
    run = client.get_run(version.run_id)
    assert run.data.metrics["mac_reduction"] >= floor
    assert run.data.metrics["accuracy"] == best
    # Loaded back through the registry, it is the network its run logged.
    registered = mlflow.pytorch.load_model("models:/digits-rule/1", map_location="cpu").eval()
    logged = mlflow.pytorch.load_model(run.data.tags[MODEL_TAG], map_location="cpu").eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(registered(x), logged(x))


def one_line_exit_2(proc, *words):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(word in lines[0] for word in words), lines[0]


def test_bad_export_and_register_input_is_one_line_and_writes_nothing(sweep, tmp_path):
    folder, server, _ = sweep
    client = MlflowClient(server.uri)
    without = next(n for n in net_runs(client) if not n.data.tags.get(MODEL_TAG))
    with_model = next(n for n in net_runs(client) if n.data.tags.get(MODEL_TAG))
    out = tmp_path / "net.pt"
    unknown = "0123456789abcdef0123456789abcdef"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cases = [
        (("export", without.info.run_id, "-o", str(out)), [without.info.run_id, "no logged model"]),
        (("export", unknown, "-o", str(out)), [unknown, "not found"]),
        (("export", with_model.info.run_id, "-o", str(blocker / "x.pt")), ["-o", "not exist"]),
        (("export", with_model.info.run_id, "-o", str(tmp_path)), ["-o", "is a folder"]),
        (("register", without.info.run_id, "--name", "nope"), ["no logged model"]),
        (("register", unknown, "--name", "nope"), [unknown, "not found"]),
        (
            ("register", "--name", "nope", "--best", "accuracy", "--min-mac-reduction", "1e9"),
            ["--min-mac-reduction", "matches"],
        ),
    ]
    for args, words in cases:
        one_line_exit_2(cli(folder, server, *args), *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    assert blocker.read_text() == "not a folder"
    assert not client.search_registered_models("name = 'nope'")


def test_record_models_is_per_trial_all_or_none(tmp_path):
    spec = tiny_spec("modes", grid="[0.05]").replace(
        "search:\n", "search:\n  record.models: {grid: [all, none]}\n"
    )
    # Its own store, named: the module's server URI is in MLFLOW_TRACKING_URI by now.
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    proc = launch_cli(tmp_path, spec, "--tracking-uri", store)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(store)
    results = trial_results(tmp_path, "modes")
    nets = net_runs(client)
    assert {n.data.tags["trial_id"] for n in nets} == set(results)
    modes = set()
    for trial_id, rows in results.items():
        mode = rows[0]["config"]["spec"]["record"]["models"]
        modes.add(mode)
        modelled = networks_with_models(rows, mode)
        assert bool(modelled) == (mode == "all")
        for net in [n for n in nets if n.data.tags["trial_id"] == trial_id]:
            key = (net.data.params["phase"], int(net.data.params["round"]))
            check_logged_models(client, net, key in modelled)
    assert modes == {"all", "none"}
    # Logged networks leave no staged copy behind in the sweep's folder.
    assert not list((tmp_path / "runs" / "modes" / "models").rglob("*.pt"))
    # A front rule picks among the networks that can be fetched: an unlogged network that
    # dominates every other one (made so here) does not hide the logged ones.
    logged = [n for n in nets if n.data.tags.get(MODEL_TAG)]
    unlogged = next(n for n in nets if not n.data.tags.get(MODEL_TAG))
    client.log_batch(
        unlogged.info.run_id,
        metrics=[Metric("accuracy", 1.0, 0, 10**6), Metric("mac_reduction", 1e6, 0, 10**6)],
    )
    proc = subprocess.run(
        [*CLI, "register", "--best", "accuracy", "--name", "modes-best"]
        + ["--tracking-uri", store],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (version,) = client.search_model_versions("name = 'modes-best'")
    registered = client.get_run(version.run_id)
    assert registered.data.tags[MODEL_TAG] == version.source
    assert registered.data.metrics["accuracy"] == max(n.data.metrics["accuracy"] for n in logged)


def test_a_replayed_model_record_logs_once_and_replaces_an_unfinished_one(tmp_path):
    """The same net_model record applied by one driver twice, then by a fresh driver (as a
    replayed journal after a kill), with a model a killed write left PENDING in between."""
    from adprune_core.nets import NetworkInfo, build_model, save_network
    from ray_jobs.tracking import Recorder, RunResolver, SweepInfo

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    info = SweepInfo("s1", "replay", "adprune-replay", uri, {}, [], "cnn2", "synthetic")
    fields = {"trial": "t0", "net": "net0", "phase": "search", "round": 0, "widths": [4, 4]}
    network = NetworkInfo("cnn2", [4, 4], [1, 8, 8], 3, metrics={"accuracy": 0.5})
    staged = tmp_path / "net0.pt"
    save_network(
        staged,
        build_model("cnn2", [4, 4], num_classes=3, input_size=8, in_channels=1).state_dict(),
        network,
    )
    metrics = {"ad_total": 0.5, "accuracy": 0.5, "loss": 1.0, "train_accuracy": 0.5}
    first = Recorder(RunResolver(info))
    first.apply({"op": "sweep_start"})
    first.apply({"op": "epoch", **fields, "epoch": 1, "metrics": metrics})
    model_op = {"op": "net_model", **fields, "path": str(staged)}
    client = MlflowClient(uri)
    run_id = first.runs.state.run_ids["s1/t0/net0"]
    experiment = client.get_run(run_id).info.experiment_id
    leftover = client.create_logged_model(experiment, "net0", run_id, {"adprune.key": "s1/t0/net0"})
    first.apply(model_op)
    assert not staged.exists()  # logged: the staged copy is gone
    first.apply(model_op)
    Recorder(RunResolver(info)).apply(model_op)  # a fresh driver, its state lost
    models = client.search_logged_models([experiment])
    assert len(models) == 1 and str(models[0].status) == "READY"
    assert models[0].model_id != leftover.model_id
    assert client.get_run(run_id).data.tags[MODEL_TAG] == f"models:/{models[0].model_id}"
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pytorch.load_model(f"models:/{models[0].model_id}", map_location="cpu")
    assert [m.out_channels for m in loaded.modules() if isinstance(m, torch.nn.Conv2d)] == [4, 4]


def test_model_requirements_are_checked_by_name_and_mlflows_module_map_left_unbuilt(caplog):
    """Logging a network checks its pinned requirements against the installed versions (a
    mismatch still warns) without building MLflow's map of every installed distribution,
    which stays unbuilt for requirement inference elsewhere in the process."""
    from importlib.metadata import version

    from mlflow.utils import requirements_utils

    from ray_jobs.tracking._models import _requirements_checked_by_name

    requirements_utils._MODULES_TO_PACKAGES = None
    wanted = ["torch==0.0.1", f"cloudpickle=={version('cloudpickle')}"]
    with caplog.at_level("WARNING", logger="mlflow"), _requirements_checked_by_name():
        requirements_utils.warn_dependency_requirement_mismatches(wanted)
        assert requirements_utils._MODULES_TO_PACKAGES == {}
    assert f"torch (current: {version('torch')}, required: torch==0.0.1)" in caplog.text
    assert "cloudpickle" not in caplog.text
    assert requirements_utils._MODULES_TO_PACKAGES is None
