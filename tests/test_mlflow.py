"""MLflow records of real sweeps, read back with the plain MLflow client."""

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import (
    CLI,
    MlflowServer,
    free_port,
    launch_cli,
    stop_session,
    tiny_spec,
    trial_results,
    wait_for_http,
)
from mlflow import MlflowClient
from mlflow_store import all_runs, check_store_matches, client_for, hierarchy


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def cli(folder, *args, timeout=120):
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=folder
    )


def one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_default_store_is_sqlite_under_mlruns(two_sweeps):
    folder, alpha, beta = two_sweeps
    ok(alpha)
    ok(beta)
    assert (folder / "mlruns" / "mlflow.db").is_file()
    assert any((folder / "mlruns" / "artifacts").rglob("widths.json"))
    assert "adprune-sweep ui" in alpha.stdout  # the launch says where its records went


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_every_network_is_recorded_once_with_its_figures(two_sweeps, name):
    folder, _, _ = two_sweeps
    check_store_matches(client_for(folder), trial_results(folder, name), name)


def test_sweep_run_records_spec_and_best_results(two_sweeps):
    folder, _, _ = two_sweeps
    client = client_for(folder)
    roots, children = hierarchy(client)
    (sweep,) = [r for r in roots if r.data.tags.get("sweep") == "alpha"]
    assert sweep.info.status == "FINISHED"
    assert sweep.data.tags["sweep_id"]
    assert sweep.data.params["model.arch"] == "cnn2"
    assert json.loads(sweep.data.params["search.prune.rho.threshold"]) == {"grid": [0.005, 0.05]}
    nets = [n for t in children[sweep.info.run_id] for n in children[t.info.run_id]]
    assert sweep.data.metrics["trials"] == 2
    assert sweep.data.metrics["best_accuracy"] == max(n.data.metrics["accuracy"] for n in nets)
    assert sweep.data.metrics["best_mac_reduction"] == max(
        n.data.metrics["mac_reduction"] for n in nets
    )
    artifacts = {a.path for a in client.list_artifacts(sweep.info.run_id, "pareto")}
    assert artifacts == {"pareto/pareto.parquet", "pareto/pareto.png"}


def test_trial_runs_hold_config_final_results_and_delta_reason(two_sweeps):
    folder, _, _ = two_sweeps
    client = client_for(folder)
    results = trial_results(folder, "alpha")
    trial_runs = [r for r in all_runs(client) if r.data.tags.get("trial_id") in results]
    trial_runs = [r for r in trial_runs if "round" not in r.data.params]
    assert len(trial_runs) == 2
    for run in trial_runs:
        last = results[run.data.tags["trial_id"]][-1]
        config = last["config"]["spec"]
        assert float(run.data.params["prune.rho.threshold"]) == config["prune"]["rho"]["threshold"]
        assert run.data.params["data.dataset"] == "synthetic"
        assert run.data.metrics["accuracy"] == last["final_accuracy"]
        assert run.data.metrics["mac_reduction"] == last["final_mac_reduction"]
        assert run.data.metrics["param_reduction"] == last["final_param_reduction"]
        assert run.data.metrics["training_complexity"] == last["final_training_complexity"]
        assert run.data.metrics["rounds"] == last["final_rounds"]
        assert run.data.tags["status"] == "done"
        assert run.data.tags["delta_reason"] == last["final_stop_reason"]
        assert json.loads(run.data.tags["final_widths"]) == last["final_widths"]
        assert "ad_all_rounds.png" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_net_runs_hold_profile_summary_and_artifacts(two_sweeps, tmp_path):
    folder, _, _ = two_sweeps
    client = client_for(folder)
    results = trial_results(folder, "beta")
    nets = [r for r in all_runs(client) if "round" in r.data.params]
    beta_nets = [n for n in nets if n.data.tags.get("trial_id") in results]
    assert {n.data.params["phase"] for n in beta_nets} == {"search", "final"}
    # Each run names the node it trained on (the tag rides in the first epoch's batch).
    nodes = {row["node_ip"] for rows in results.values() for row in rows}
    assert {n.data.tags.get("node_ip") for n in beta_nets} == nodes
    beta_trials = [
        r
        for r in all_runs(client)
        if r.data.tags.get("trial_id") in results and "round" not in r.data.params
    ]
    assert len(beta_trials) == len(results)
    assert {t.data.tags.get("node_ip") for t in beta_trials} == nodes
    for net in beta_nets:
        assert net.data.tags["profile"] in ("increasing", "decreasing", "flat")
        for key in ("params", "macs", "energy_j", "param_reduction", "mac_reduction", "epochs"):
            assert key in net.data.metrics
        # The per-layer AD figure (the paper's Fig. 2) is net0's only; MLflow charts the
        # later networks' ad/layer_NN metrics itself.
        net0 = net.data.params["phase"] == "search" and net.data.params["round"] == "0"
        expected = {"ad_vs_epoch.png", "widths.json"} if net0 else {"widths.json"}
        assert {a.path for a in client.list_artifacts(net.info.run_id)} == expected
        local = client.download_artifacts(net.info.run_id, "widths.json", str(tmp_path))
        saved = json.loads(Path(local).read_text())
        assert saved["widths"] == json.loads(net.data.params["widths"])
        assert saved["round"] == int(net.data.params["round"])
        layers = sorted(k for k in net.data.metrics if k.startswith("ad/layer_"))
        assert layers == ["ad/layer_00", "ad/layer_01"]
        steps = [m.step for m in client.get_metric_history(net.info.run_id, "ad/layer_01")]
        assert steps == list(range(1, int(net.data.metrics["epochs"]) + 1))


# ---------------------------------------------------------------------------- compare


def test_compare_sorts_trials_across_sweeps(two_sweeps):
    folder, _, _ = two_sweeps
    proc = cli(folder, "compare", "--sort-by", "threshold", "--desc", "--format", "json")
    ok(proc)
    rows = json.loads(proc.stdout)
    assert {r["sweep"] for r in rows} == {"alpha", "beta"}
    thresholds = [r["prune.rho.threshold"] for r in rows]
    assert thresholds == sorted(thresholds, reverse=True) == [0.05, 0.02, 0.005]
    results = {**trial_results(folder, "alpha"), **trial_results(folder, "beta")}
    for row in rows:
        last = results[row["trial"]][-1]
        assert row["final_widths"] == last["final_widths"]
        assert row["accuracy"] == last["final_accuracy"]
        assert row["rounds"] == last["final_rounds"]
        assert row["training_complexity"] == last["final_training_complexity"]


def test_compare_table_selects_sweeps_and_experiments(two_sweeps):
    folder, _, _ = two_sweeps
    proc = cli(folder, "compare", "--experiment", "adprune-sweep", "--sort-by", "accuracy")
    ok(proc)
    assert "threshold" in proc.stdout.splitlines()[0]
    lines = proc.stdout.splitlines()
    # The trial table, up to its count line; the per-sweep rows follow it.
    count_at = lines.index("2 trials")
    body = lines[2:count_at]
    assert len(body) == 2 and all(line.startswith("alpha") for line in body)
    assert [line.split()[0] for line in lines[count_at + 4 : count_at + 5]] == ["alpha"]
    proc = cli(folder, "compare", "--sweep", "beta", "--format", "csv")
    ok(proc)
    assert len(proc.stdout.splitlines()) == 2 and "beta" in proc.stdout.splitlines()[1]


@pytest.mark.parametrize(
    "args, words",
    [
        (["compare", "--sweep", "nope"], ["--sweep nope"]),
        (["compare", "--experiment", "nope"], ["--experiment nope"]),
        (["compare", "--sort-by", "colour"], ["--sort-by colour"]),
    ],
)
def test_compare_bad_selection_is_one_line(two_sweeps, args, words):
    folder, _, _ = two_sweeps
    one_line_error(cli(folder, *args), *words)


def test_commands_without_a_store_say_so(tmp_path):
    for command in ("compare", "pareto", "ui"):
        one_line_error(cli(tmp_path, command), "mlflow.db")
    assert not (tmp_path / "mlruns").exists()  # reading never creates an empty store


# ---------------------------------------------------------------------------- ui


def listening_addresses(port):
    """Local addresses bound to ``port`` in LISTEN state, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":
                found.add(address)
    return found


def test_ui_serves_the_store_on_loopback_only(two_sweeps):
    folder, _, _ = two_sweeps
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "ui", "--port", str(port)],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout_s=90)
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, and nothing else
        served = MlflowClient(f"http://127.0.0.1:{port}")
        experiments = {e.name for e in served.search_experiments()}
        assert {"adprune-sweep", "adprune-beta"} <= experiments
        assert len(all_runs(served)) == len(all_runs(client_for(folder)))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200
    finally:
        stop_session(proc)


def test_ui_port_in_use_is_one_line(two_sweeps):
    folder, _, _ = two_sweeps
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line_error(cli(folder, "ui", "--port", str(port)), f"--port {port}")


# ---------------------------------------------------------------------------- a real server


def test_sweep_records_to_a_real_mlflow_server(tmp_path, mlflow_server):
    # The store comes from MLFLOW_TRACKING_URI here, and from --tracking-uri when read back.
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.uri}
    proc = launch_cli(tmp_path, tiny_spec("served", grid="[0.05]"), env=env)
    ok(proc)
    assert not (tmp_path / "mlruns").exists()  # nothing went to the default local store
    client = MlflowClient(mlflow_server.uri)
    _, trials = check_store_matches(client, trial_results(tmp_path, "served"), "served")
    (trial,) = trials.values()
    _, children = hierarchy(client)
    (net0,) = [
        n
        for n in children[trial.info.run_id]
        if n.data.params["round"] == "0" and n.data.params["phase"] == "search"
    ]
    assert {a.path for a in client.list_artifacts(net0.info.run_id)} == {
        "ad_vs_epoch.png",
        "widths.json",
    }
    assert any((mlflow_server.folder / "artifacts").rglob("ad_vs_epoch.png"))
    proc = cli(tmp_path, "compare", "--tracking-uri", mlflow_server.uri, "--format", "json")
    ok(proc)
    (row,) = json.loads(proc.stdout)
    assert row["sweep"] == "served" and row["run_id"] == trial.info.run_id


def test_unreachable_tracking_server_fails_before_training(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    proc = launch_cli(tmp_path, tiny_spec("nowhere"), "--tracking-uri", uri, timeout=120)
    one_line_error(proc, uri)
    assert not (tmp_path / "runs" / "nowhere").exists()


def test_server_down_then_up_queues_records_and_writes_them(tmp_path):
    """A writer whose server is not up yet keeps its journal, then writes everything once."""
    from ray_jobs.tracking import (
        QUEUE_FILE,
        BackgroundWriter,
        DeadLetters,
        Journal,
        Recorder,
        RunResolver,
        SweepInfo,
        WriterConfig,
    )

    server = MlflowServer(tmp_path / "late-server")
    info = SweepInfo("s1", "late", "adprune-late", server.uri, {"a": 1}, [], "cnn2", "synthetic")
    messages = []
    journal = Journal(tmp_path)
    recorder = Recorder(RunResolver(info))
    config = WriterConfig(retry_interval_s=0.2)
    writer = BackgroundWriter(
        recorder, journal, DeadLetters(tmp_path), server.uri, messages.append, config
    )
    epoch = {
        "op": "epoch",
        "trial": "t0",
        "net": "net0",
        "phase": "search",
        "round": 0,
        "widths": [4, 4],
        "metrics": {"ad_total": 0.5},
    }
    writer.start()
    writer.put([{"op": "sweep_start"}])
    writer.put([{**epoch, "epoch": 1}])
    deadline = time.monotonic() + 60
    while not messages and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "queued" in messages[0]
    assert (tmp_path / QUEUE_FILE).exists()
    assert len((tmp_path / QUEUE_FILE).read_text().splitlines()) == 2
    server.start()
    try:
        writer.put([{**epoch, "epoch": 2}])
        writer.put([{**epoch, "epoch": 2}])  # a re-reported epoch is written once
        assert writer.stop(timeout_s=60)
        assert not (tmp_path / QUEUE_FILE).exists()
        assert "answering again" in messages[-1]
        client = MlflowClient(server.uri)
        runs = all_runs(client)
        assert sorted(r.info.run_name for r in runs) == ["late", "net0", "t0"]
        (net,) = [r for r in runs if r.info.run_name == "net0"]
        assert [m.step for m in client.get_metric_history(net.info.run_id, "ad_total")] == [1, 2]
    finally:
        server.stop()
