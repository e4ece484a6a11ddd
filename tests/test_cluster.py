"""`launch --cluster` on a real two-node Ray cluster (network namespaces, token auth) with a
shared `mlflow server` on the head's address: placement on both nodes, job submission, a
plugin shipped to the workers by Ray's runtime_env, and the loss of the worker node mid-sweep."""

import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from cluster import TwoNodeCluster, can_make_namespaces, kill_session
from conftest import CLI, tiny_spec, trial_results
from plugin_sources import tinynet_cost, write_plugin

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
MLFLOW_PORT = 5000

reason = can_make_namespaces()
pytestmark = pytest.mark.skipif(reason is not None, reason=f"two-node cluster tests: {reason}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    (folder / "head-only").mkdir()
    nodes = TwoNodeCluster(hidden_dir=folder / "head-only")
    server = None
    try:
        nodes.start()
        server = nodes.popen_in(
            nodes.head_ns,
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{folder / 'server.db'}",
                "--artifacts-destination",
                str(folder / "artifacts"),
                "--host",
                nodes.head_ip,
                "--port",
                str(MLFLOW_PORT),
                "--workers",
                "1",
            ],
            env={**nodes.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=subprocess.DEVNULL,
            stderr=(folder / "mlflow.log").open("w"),
            start_new_session=True,
        )
        nodes.wait_for(nodes.head_ns, nodes.head_ip, MLFLOW_PORT)
        nodes.mlflow_uri = f"http://{nodes.head_ip}:{MLFLOW_PORT}"
        nodes.head_only = folder / "head-only"
        yield nodes
    finally:
        if server is not None:
            kill_session(server.pid)
            server.wait(timeout=30)
        nodes.stop()


def launch_on(cluster, folder, spec_text, *args, timeout=400):
    spec = folder / "spec.yaml"
    spec.write_text(spec_text)
    command = [*CLI, "launch", str(spec), "--storage", str(folder / "runs")]
    command += ["--cluster", cluster.address, "--tracking-uri", cluster.mlflow_uri, *args]
    return cluster.run_in(cluster.head_ns, command, cwd=folder, timeout=timeout)


def check_server_store(cluster, folder, name):
    """check_store_matches against the server, run where the server is reachable: the head."""
    script = (
        "import sys, json\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from pathlib import Path\n"
        "from mlflow import MlflowClient\n"
        "from conftest import trial_results\n"
        "from mlflow_store import check_store_matches, hierarchy\n"
        f"client = MlflowClient({cluster.mlflow_uri!r})\n"
        f"sweep, trials = check_store_matches(client, trial_results(Path({str(folder)!r}), "
        f"{name!r}), {name!r})\n"
        "_, children = hierarchy(client)\n"
        "nets = [n for t in trials.values() for n in children[t.info.run_id]]\n"
        "print(json.dumps({'sweep_status': sweep.info.status, "
        "'nodes': sorted({n.data.tags.get('node_ip') for n in nets})}))\n"
    )
    done = cluster.run_in(cluster.head_ns, [sys.executable, "-c", script], timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sweep_runs_on_both_nodes_and_records_to_the_shared_server(cluster, tmp_path):
    proc = launch_on(cluster, tmp_path, tiny_spec("two-nodes"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Ray cluster at {cluster.address}" in proc.stdout
    results = trial_results(tmp_path, "two-nodes")
    assert len(results) == 2 and all(rows[-1]["schedule_done"] for rows in results.values())
    # Trials move between nodes at round boundaries (PAUSE, then restart wherever a CPU is).
    nodes = {row["node_ip"] for rows in results.values() for row in rows}
    assert nodes == {cluster.head_ip, cluster.worker_ip}
    table = proc.stdout.split("trial ", 1)[-1]
    for rows in results.values():
        assert rows[-1]["node_ip"] in table  # the summary says where each trial ended
    store = check_server_store(cluster, tmp_path, "two-nodes")
    assert store["sweep_status"] == "FINISHED"
    assert store["nodes"] == sorted({cluster.head_ip, cluster.worker_ip})


def test_storage_that_a_node_cannot_see_is_refused(cluster, tmp_path):
    storage = cluster.head_only / "runs"
    proc = launch_on(cluster, tmp_path, tiny_spec("unshared"), "--storage", str(storage))
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in proc.stderr
    assert f"--storage {storage}" in error[0] and cluster.worker_ip in error[0]
    assert "Ray 2.7" in error[0]
    assert not (storage / "unshared").exists()  # refused before any trial started


def test_job_submission_with_cluster_auto(cluster, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(tiny_spec("job", grid="[0.05]"))
    submit = [
        str(Path(sys.executable).with_name("ray")),
        "job",
        "submit",
        "--address",
        f"http://{cluster.head_ip}:{cluster.dashboard_port}",
        "--working-dir",
        ".",
        "--",
        "adprune-sweep",
        "launch",
        str(spec),
        "--cluster",
        "auto",
        "--storage",
        str(tmp_path / "runs"),
        "--tracking-uri",
        cluster.mlflow_uri,
    ]
    proc = cluster.run_in(cluster.head_ns, submit, cwd=REPO, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout
    assert "1 trials in" in proc.stdout  # the launch's own summary, from the job's logs
    (rows,) = trial_results(tmp_path, "job").values()
    assert rows[-1]["schedule_done"] is True
    assert check_server_store(cluster, tmp_path, "job")["sweep_status"] == "FINISHED"


def plugin_spec(name, grid="[0.005, 0.05]"):
    """The tiny spec on the plugin package's network and dataset."""
    text = tiny_spec(name, grid=grid).replace(
        "arch: cnn2, widths: [12, 16]", 'arch: "tinyplug.nets:build", widths: [8, 12, 16]'
    )
    return text.replace("dataset: synthetic", 'dataset: "tinyplug.data:load"')


def test_a_plugin_shipped_by_runtime_env_trains_on_both_nodes(cluster, tmp_path):
    src = write_plugin(tmp_path)
    # Not installed anywhere a node looks: only Ray's runtime_env brings it to the workers.
    probe = cluster.run_in(cluster.worker_ns, [sys.executable, "-c", "import tinyplug"])
    assert probe.returncode != 0 and "No module named 'tinyplug'" in probe.stderr
    # Long enough rounds that the second trial starts on the worker (whose first actor sets
    # up the runtime_env) instead of reusing the head's actor after the first trial ends.
    text = plugin_spec("plugin-nodes").replace(
        "min_epochs: 2, max_epochs: 4", "min_epochs: 20, max_epochs: 20"
    )
    proc = launch_on(cluster, tmp_path, text, "--py-module", str(src / "tinyplug"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = trial_results(tmp_path, "plugin-nodes")
    assert len(results) == 2 and all(rows[-1]["schedule_done"] for rows in results.values())
    rows = [row for trial in results.values() for row in trial]
    nodes = {row["node_ip"] for row in rows}
    assert nodes == {cluster.head_ip, cluster.worker_ip}, proc.stdout[-4000:]
    for row in rows:
        assert (row["params"], row["macs"]) == tinynet_cost(row["widths"], 3, 3, 12)
    store = check_server_store(cluster, tmp_path, "plugin-nodes")
    assert store["sweep_status"] == "FINISHED"
    assert store["nodes"] == sorted({cluster.head_ip, cluster.worker_ip})


def test_a_plugin_shipped_by_a_ray_job_runtime_env(cluster, tmp_path):
    src = write_plugin(tmp_path)
    spec = tmp_path / "job.yaml"
    spec.write_text(plugin_spec("plugin-job", grid="[0.05]"))
    submit = [
        *[str(Path(sys.executable).with_name("ray")), "job", "submit"],
        *["--address", f"http://{cluster.head_ip}:{cluster.dashboard_port}"],
        *["--working-dir", "."],
        *["--runtime-env-json", json.dumps({"py_modules": [str(src / "tinyplug")]})],
        *["--", "adprune-sweep", "launch", str(spec), "--cluster", "auto"],
        *["--storage", str(tmp_path / "runs"), "--tracking-uri", cluster.mlflow_uri],
    ]
    proc = cluster.run_in(cluster.head_ns, submit, cwd=REPO, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 trials in" in proc.stdout
    (rows,) = trial_results(tmp_path, "plugin-job").values()
    assert rows[-1]["schedule_done"] is True
    assert all((r["params"], r["macs"]) == tinynet_cost(r["widths"], 3, 3, 12) for r in rows)
    assert check_server_store(cluster, tmp_path, "plugin-job")["sweep_status"] == "FINISHED"


def write_tiny_imagenet(root):
    """A two-class TinyImageNet in its standard folder layout, two 64x64 JPEGs per class."""
    from torchvision.io import write_jpeg

    base = root / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    with warnings.catch_warnings():
        # torchvision >= 0.29 warns on every JPEG encode; the encoder still works.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision.io")
        for label, wnid in enumerate(wnids):
            images = base / "train" / wnid / "images"
            images.mkdir(parents=True)
            image = torch.full((3, 64, 64), 60 + 120 * label, dtype=torch.uint8)
            for k in range(2):
                write_jpeg(image, str(images / f"{wnid}_{k}.JPEG"))
            write_jpeg(image, str(base / "val" / "images" / f"val_{label}.JPEG"))
            lines.append(f"val_{label}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_a_dataset_missing_on_one_node_is_one_line_naming_it_before_training(cluster, tmp_path):
    root = cluster.head_only / "data"  # the worker node sees an empty folder in its place
    write_tiny_imagenet(root)
    text = tiny_spec("data-on-head").replace("dataset: synthetic", "dataset: tinyimagenet")
    proc = launch_on(cluster, tmp_path, text, "--set", f"data.root={root}", timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith(f"error: node {cluster.worker_ip}: tinyimagenet not found under")
    assert cluster.head_ip not in line  # the head has it: only the worker is named
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "runs" / "data-on-head").exists()  # no trial started


SLOW = {
    "num_train: 128": "num_train: 16384, input_size: 16",
    "max_epochs: 4": "max_epochs: 6",
    "flat_band: 0.002": "flat_band: 1.0",
}


def wait_for_worker_trial(folder, name, worker_ip, timeout_s=180):
    """A trial running on the worker node, once it has checkpointed two epochs there."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for trial_id, rows in trial_results(folder, name).items():
            if rows[-1]["node_ip"] == worker_ip and rows[-1]["epoch"] >= 2:
                return trial_id, len(rows)
        time.sleep(0.2)
    raise AssertionError(f"no trial reported epoch 2 on {worker_ip} in {timeout_s}s")


def test_losing_the_worker_node_reschedules_its_trial_on_the_head(cluster, tmp_path):
    """Last in this module: it takes the worker node down."""
    text = tiny_spec("node-loss", grid="[0.0000001, 0.0000002]")
    for old, new in SLOW.items():
        text = text.replace(old, new)
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    # Without sharing, so that the trial on the worker trains (and checkpoints) every epoch
    # itself: with it, the two trials' epochs are one trial's, and a loaded epoch is
    # checkpointed only where it ends a network.
    driver = cluster.popen_in(
        cluster.head_ns,
        [*CLI, "launch", str(spec), "--storage", str(tmp_path / "runs"), "--no-share"]
        + ["--cluster", cluster.address, "--tracking-uri", cluster.mlflow_uri],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        trial_id, reported = wait_for_worker_trial(tmp_path, "node-loss", cluster.worker_ip)
        raylets = cluster.worker.pids("raylet")
        assert raylets, "no raylet in the worker node's session"
        for pid in raylets:
            subprocess.run(["kill", f"-{signal.SIGKILL.value}", str(pid)], check=True)
        output, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, output[-3000:]
    results = trial_results(tmp_path, "node-loss")
    assert all(rows[-1]["schedule_done"] for rows in results.values())
    rows = results[trial_id]
    # A report already on its way when the raylet died may still arrive from the worker.
    last_on_worker = max(i for i, r in enumerate(rows) if r["node_ip"] == cluster.worker_ip)
    assert last_on_worker >= reported - 1
    moved = rows[last_on_worker + 1 :]
    assert moved and {r["node_ip"] for r in moved} == {cluster.head_ip}
    # From its checkpoint: it went on from the epoch it had reached, not from epoch 1.
    assert (moved[0]["round"], moved[0]["epoch"]) > (rows[last_on_worker]["round"], 1)
    assert "failed; Tune retries it from its last checkpoint" in output
    store = check_server_store(cluster, tmp_path, "node-loss")
    assert store["sweep_status"] == "FINISHED"
