"""Reading a sweep's MLflow store with the plain MLflow client, as a user would, and checking
it against the trials' own results (Tune's result.json files)."""

import json
from collections import Counter, defaultdict

from mlflow import MlflowClient

PARENT = "mlflow.parentRunId"
MODEL_TAG = "adprune.model_uri"


def client_for(tmp_path):
    return MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def all_runs(client):
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, max_results=5000)


def hierarchy(client):
    """sweep runs (no parent) -> their trial runs -> their net runs, by parent tags only."""
    runs = all_runs(client)
    children = defaultdict(list)
    roots = []
    for run in runs:
        parent = run.data.tags.get(PARENT)
        if parent:
            children[parent].append(run)
        else:
            roots.append(run)
    return roots, children


def reported_networks(rows):
    """(phase, round) -> the epochs a trial reported for that network, in report order."""
    networks = defaultdict(list)
    for row in rows:
        networks[(row["phase"], row["round"])].append(row)
    return networks


def networks_with_models(rows, models):
    """The (phase, round) of every network of a finished trial that record.models logs."""
    last = rows[-1]
    closed = {(r["phase"], r["round"]) for r in rows if r["decision"] != "continue"}
    if models == "none" or not last.get("schedule_done"):
        return set()
    if models == "all":
        return closed
    chosen = last["final_chosen_round"]
    return {key for key in closed if key in {("search", chosen), ("final", chosen)}}


def check_logged_models(client, net, expected):
    """The net run has exactly one READY logged model if ``expected``, else none; its tag
    names that model."""
    models = client.search_logged_models(
        [net.info.experiment_id], filter_string=f"source_run_id = '{net.info.run_id}'"
    )
    ready = [m for m in models if str(m.status) == "READY"]
    label = f"{net.data.params['phase']} round {net.data.params['round']}"
    assert len(ready) == len(models) == (1 if expected else 0), f"{label}: models {models}"
    if expected:
        assert net.data.tags[MODEL_TAG] == f"models:/{ready[0].model_id}"
        assert json.loads(ready[0].params["widths"]) == json.loads(net.data.params["widths"])


def check_store_matches(client, results_by_trial, sweep_name, models="chosen"):
    """One sweep run; one trial run per trial; exactly one net run per trained network, with
    its widths, accuracy, MACs, training complexity and one AD point per epoch; and exactly
    one logged model per network that ``models`` (record.models) logs, none for the others."""
    roots, children = hierarchy(client)
    (sweep,) = [r for r in roots if r.data.tags.get("sweep") == sweep_name]
    trials = {t.data.tags["trial_id"]: t for t in children[sweep.info.run_id]}
    assert set(trials) == set(results_by_trial)
    for trial_id, rows in results_by_trial.items():
        nets = children[trials[trial_id].info.run_id]
        keys = Counter((n.data.params["phase"], int(n.data.params["round"])) for n in nets)
        assert all(count == 1 for count in keys.values()), f"duplicated net runs: {keys}"
        networks = reported_networks(rows)
        assert set(keys) == set(networks)
        modelled = networks_with_models(rows, models)
        for net in nets:
            key = (net.data.params["phase"], int(net.data.params["round"]))
            reports = networks[key]
            last = reports[-1]
            assert json.loads(net.data.params["widths"]) == last["widths"]
            # The share the network trained on (per network with resources.per_round).
            for kind in ("cpu", "gpu"):
                recorded = float(net.data.params[f"resources.{kind}"])
                assert {r[f"resources_{kind}"] for r in reports} == {recorded}
            history = client.get_metric_history(net.info.run_id, "ad_total")
            steps = [m.step for m in history]
            assert len(steps) == len(set(steps)), f"duplicated epochs in {key}: {steps}"
            epochs = sorted({r["epoch"] for r in reports})
            # Every reported epoch, once, and no gaps. (Tune's result.json can miss a row
            # after a trial restore, so MLflow may hold one more epoch than it does.)
            assert set(epochs) <= set(steps), f"{key}: MLflow steps {steps}, reported {epochs}"
            assert sorted(steps) == list(range(1, max(steps) + 1)), f"{key}: gaps in {steps}"
            if net.info.status == "FINISHED":
                assert net.data.metrics["epochs"] == max(steps)
            by_step = {m.step: m.value for m in history}
            for report in reports:
                assert by_step[report["epoch"]] == report["ad_total"]
            check_logged_models(client, net, key in modelled)
            if last["decision"] != "continue":  # the network finished
                assert net.info.status == "FINISHED"
                assert net.data.metrics["accuracy"] == last["accuracy"]
                assert net.data.metrics["macs"] == last["macs"]
                assert net.data.metrics["training_complexity"] == last["training_complexity"]
                layers = [k for k in net.data.metrics if k.startswith("ad/layer_")]
                assert len(layers) == len(last["widths"])
    return sweep, trials


def network_row(accuracy, mac_reduction, round_index=1, trial="t", **fields):
    """One network as the reading side loads it, at an (accuracy, MAC reduction) point; the
    fields a test does not care about get neutral values."""
    from ray_jobs.results import NetworkRow

    values = {
        "experiment": "e",
        "sweep": "s",
        "sweep_id": "id",
        "phase": "search",
        "arch": "cnn",
        "dataset": "digits",
        "widths": [1],
        "params": 1,
        "macs": 1,
        "param_reduction": 1.0,
        "energy_j": 0.0,
        "training_complexity": 1.0,
        "epochs": 1,
        "run_id": f"{trial}-{round_index}-{accuracy}-{mac_reduction}",
        **fields,
    }
    return NetworkRow(
        trial=trial, round=round_index, accuracy=accuracy, mac_reduction=mac_reduction, **values
    )
