"""``adprune-sweep launch``: a Ray Tune sweep where every trial runs a whole prune schedule."""

from __future__ import annotations

import copy
import json
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from adprune_core.report import format_table, short_widths
from adprune_core.spec import SpecError, SweepSpec, load_spec, set_dotted, spec_to_dict

# Tune's CSV / TensorBoard loggers cannot take the list-valued fields every report carries
# (widths, per-layer AD); results still land in each trial's result.json.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Checkpointing every epoch is the point (a restart loses at most one epoch); Tune's warning
# about frequent experiment snapshots is expected here and would drown the progress lines.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


class LaunchError(SpecError):
    """A launch option that cannot work (cluster, storage, resume); one line, exit 2."""


@dataclass
class LaunchOptions:
    spec_path: str
    overrides: Sequence[str] = ()
    cluster: str | None = None
    storage: str | None = None
    name: str | None = None
    resume: bool = False
    num_samples: int | None = None
    max_concurrent: int | None = None
    max_failures: int = 3
    tracking_uri: str | None = None


def tune_domain(kind: str, args: Any) -> Any:
    from ray import tune

    if kind == "grid":
        return tune.grid_search(list(args))
    if kind == "choice":
        return tune.choice(list(args))
    if kind == "uniform":
        return tune.uniform(*args)
    if kind == "loguniform":
        return tune.loguniform(*args)
    return tune.randint(*args)  # [low, high), as in Tune


def absolute_data_root(spec_dict: dict[str, Any]) -> None:
    # Tune runs each trial in its own working directory; a relative root would move with it.
    root = spec_dict["data"]["root"]
    if "://" not in root:
        spec_dict["data"]["root"] = str(Path(root).expanduser().resolve())


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune's search space: the spec as a nested dict, with domains at the searched keys."""
    spec_dict = copy.deepcopy(spec_to_dict(spec))
    search = spec_dict.pop("search")
    absolute_data_root(spec_dict)
    for key, domain in search.items():
        ((kind, args),) = domain.items()
        set_dotted(spec_dict, key, tune_domain(kind, args))
    return {"spec": spec_dict}


# ---------------------------------------------------------------------------- Ray


def cluster_address(cluster: str) -> str:
    if cluster in ("", "auto"):
        address = os.environ.get("RAY_ADDRESS", "")
        if not address:
            raise LaunchError(
                "--cluster auto: RAY_ADDRESS is not set; give the head's address (HOST:PORT)"
            )
        return address
    return cluster


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds, naming the address, instead of letting ray.init retry for a minute."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise LaunchError(f"--cluster {address}: expected HOST:PORT (e.g. 10.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        reason = err.strerror or err.__class__.__name__
        raise LaunchError(
            f"--cluster {address}: no Ray cluster reachable there ({reason})"
        ) from None


def start_ray(cluster: str | None) -> str:
    import logging

    import ray

    if cluster is None:
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,  # per-checkpoint worker chatter; progress comes from results
        )
        return "embedded local Ray"
    address = cluster_address(cluster)
    check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = ""
        if os.environ.get("RAY_AUTH_MODE") != "token":
            # Ray >= 2.5x clusters use token auth by default; a client without it is refused.
            hint = "; if the cluster uses token auth, set RAY_AUTH_MODE=token and its token"
        raise LaunchError(f"--cluster {address}: cannot connect ({first_line}){hint}") from None
    return f"Ray cluster at {address}"


def local_resources() -> dict[str, float]:
    """What the embedded Ray will have: every core, every visible CUDA device."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def check_resources(spec: SweepSpec, total: dict[str, float], where: str) -> None:
    """A trial that asks for more than the whole cluster has would wait forever in PENDING."""
    for key, wanted in (("cpu", spec.resources.cpu), ("gpu", spec.resources.gpu)):
        available = float(total.get(key.upper(), 0.0))
        if wanted > available:
            have = f"has {available:g}" if available else f"has no {key.upper()}"
            raise LaunchError(
                f"resources.{key}: each trial asks for {wanted:g} {key.upper()}, "
                f"but the {where} {have}"
            )


def storage_seen(marker: str) -> bool:
    return os.path.exists(marker)


def check_shared_storage(storage: str) -> None:
    """On a multi-node cluster, every node must see the trial folders under ``storage``."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) <= 1 or "://" in storage:
        return
    marker = Path(storage) / f".adprune-visible-{uuid.uuid4().hex}"
    marker.write_text("")
    probe = ray.remote(num_cpus=0)(storage_seen)
    try:
        seen = ray.get(
            [
                probe.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                ).remote(str(marker))
                for n in nodes
            ],
            timeout=120,
        )
    finally:
        marker.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen) if not ok]
    if blind:
        raise LaunchError(
            f"--storage {storage}: not visible from node(s) {', '.join(blind)}; a multi-node "
            "cluster needs storage every node sees (a shared file system path, or s3://...): "
            "since Ray 2.7, Tune no longer syncs trial folders to the head node"
        )


def storage_root(storage: str | None) -> str:
    if storage is not None and "://" in storage:
        return storage
    path = Path(storage or "runs").expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LaunchError(f"--storage {path}: cannot create ({err.strerror})") from None
    if not os.access(path, os.W_OK):
        raise LaunchError(f"--storage {path}: not writable")
    return str(path)


# ---------------------------------------------------------------------------- progress


def make_progress_callback() -> Any:
    from ray.tune import Callback

    class ProgressPrinter(Callback):
        """One line per trial result: round, epoch, AD, accuracy, widths; and each decision."""

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict) -> None:
            name = "final" if result["phase"] == "final" else f"net{result['round']}"
            if result.get("diverged"):
                click.echo(f"[{trial.trial_id}] {name:<6} diverged: {result['diverged']}")
                return
            if result.get("checkpoint_fallback"):
                click.echo(f"[{trial.trial_id}] checkpoint {result['checkpoint_fallback']}")
            line = (
                f"[{trial.trial_id}] {name:<6} epoch {result['epoch']:>3}  "
                f"AD {result['ad_total']:.4f}  acc {100 * result['accuracy']:5.1f}%  "
                f"widths {short_widths(result['widths'])}"
            )
            if result["decision"] != "continue":
                line += f"  -> {result['decision']} ({result['decision_reason']})"
            click.echo(line)

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            click.echo(f"[{trial.trial_id}] failed; Tune retries it from its last checkpoint")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            click.echo(f"[{trial.trial_id}] failed and is out of retries (--max-failures)")

    return ProgressPrinter()


# ---------------------------------------------------------------------------- summary


SUMMARY_HEADERS = (
    "trial",
    "searched",
    "status",
    "rounds",
    "chosen",
    "final widths",
    "accuracy",
    "MACs red.",
    "train. complexity",
    "stop",
    "node",
)


def searched_values(config: dict[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for key in keys:
        node: Any = config["spec"]
        for part in key.split("."):
            node = node[part]
        parts.append(
            f"{key.split('.')[-1]}={node:g}" if isinstance(node, float) else f"{key}={node}"
        )
    return " ".join(parts)


def final_or_current(metrics: dict[str, Any], key: str, default: Any) -> Any:
    return metrics.get(f"final_{key}", metrics.get(key, default))


def summary_rows(results: Any, search_keys: Sequence[str]) -> list[list[str]]:
    rows = []
    for result in results:
        metrics = result.metrics or {}
        done = bool(metrics.get("schedule_done"))
        trial_id = metrics.get("trial_id", "?")
        status = "done" if done else ("error" if result.error else "unfinished")
        if metrics.get("diverged"):
            status = "diverged"
        rows.append(
            [
                str(trial_id),
                searched_values(result.config, search_keys),
                status,
                str(metrics.get("final_rounds", metrics.get("round", 0) + 1)),
                f"net{metrics['final_chosen_round']}" if done else "-",
                short_widths(metrics.get("final_widths", metrics.get("widths", [])), 12),
                f"{100 * metrics.get('final_accuracy', metrics.get('accuracy', 0.0)):.1f}%",
                f"{metrics.get('final_mac_reduction', metrics.get('mac_reduction', 1.0)):.1f}x",
                f"{final_or_current(metrics, 'training_complexity', 0.0):.1f}",
                metrics.get("final_stop_reason", metrics.get("diverged", "-")),
                str(metrics.get("node_ip", "-")),
            ]
        )
    return rows


# ---------------------------------------------------------------------------- launch


# ---------------------------------------------------------------------------- MLflow

SWEEP_FILE = "adprune-sweep.json"


def sweep_home(storage: str, name: str) -> Path:
    """A local folder for the sweep's own files (its MLflow identity and write queue)."""
    if "://" in storage:
        return Path.cwd() / ".adprune-sweep" / name
    return Path(storage) / name


def sweep_identity(home: Path, resume: bool, tracking_option: str | None) -> dict[str, Any]:
    """The sweep id and store: new at launch, read back (and held to) at ``--resume``."""
    from ray_jobs.tracking import resolve_tracking_uri

    path = home / SWEEP_FILE
    if resume and path.exists():
        identity = json.loads(path.read_text())
        if tracking_option and resolve_tracking_uri(tracking_option) != identity["tracking_uri"]:
            raise LaunchError(
                f"--tracking-uri {tracking_option}: this sweep records to "
                f"{identity['tracking_uri']}; resume it with that store"
            )
        return identity
    return {"sweep_id": uuid.uuid4().hex, "tracking_uri": resolve_tracking_uri(tracking_option)}


def save_identity(home: Path, identity: dict[str, Any]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / SWEEP_FILE).write_text(json.dumps(identity, indent=2) + "\n")


def sweep_params(spec: SweepSpec) -> dict[str, Any]:
    """The spec as flat MLflow params; each search domain as one JSON value."""
    from adprune_core.spec import flatten

    spec_dict = spec_to_dict(spec)
    search = spec_dict.pop("search")
    params = flatten(spec_dict)
    params.update({f"search.{key}": json.dumps(domain) for key, domain in search.items()})
    return params


def make_mlflow_callback(
    spec: SweepSpec, identity: dict[str, Any], name: str, storage: str, home: Path
) -> Any:
    from ray_jobs.mlflow_callback import MlflowCallback
    from ray_jobs.mlflow_log import Recorder, SweepInfo

    info = SweepInfo(
        sweep_id=identity["sweep_id"],
        name=name,
        experiment=spec.experiment,
        tracking_uri=identity["tracking_uri"],
        params=sweep_params(spec),
        search_keys=list(spec.search),
        arch=spec.model.arch,
        dataset=spec.data.dataset,
        storage=f"{storage}/{name}",
    )
    retry_s = float(os.environ.get("ADPRUNE_MLFLOW_RETRY_S", "15"))
    return MlflowCallback(Recorder(info, home, retry_interval_s=retry_s))


def open_store(uri: str, experiment: str) -> str:
    """Fail before any training if the store cannot be used; the experiment's id."""
    from ray_jobs.tracking import check_store, ensure_experiment

    client = check_store(uri)
    return ensure_experiment(client, experiment, uri)


def mlflow_summary(identity: dict[str, Any], experiment: str) -> str:
    from ray_jobs.mlflow_log import KEY_TAG
    from ray_jobs.tracking import first_line, make_client

    uri = identity["tracking_uri"]
    try:
        client = make_client(uri)
        runs = client.search_runs(
            [client.get_experiment_by_name(experiment).experiment_id],
            filter_string=f"tags.`{KEY_TAG}` = '{identity['sweep_id']}'",
        )
    except Exception as err:  # the store went away during the sweep; the queue says the rest
        return f"MLflow: {uri} not answering at the end ({first_line(err)})"
    run = f"sweep run {runs[0].info.run_id}" if runs else "no sweep run yet"
    return (
        f"MLflow: experiment {experiment!r}, {run}, in {uri} "
        "(browse: adprune-sweep ui; table: adprune-sweep compare)"
    )


def build_tuner(
    spec: SweepSpec, opts: LaunchOptions, storage: str, name: str, callbacks: list[Any]
) -> Any:
    from ray import tune

    from ray_jobs.result_log import KeepLocalJsonLoggerCallback
    from ray_jobs.scheduler import ActivationDensityScheduler, RoundAwareVariantGenerator
    from ray_jobs.trainable import adprune_trainable

    trainable = tune.with_resources(
        adprune_trainable, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    )
    if opts.resume:
        return tune.Tuner.restore(
            str(Path(storage) / name) if "://" not in storage else f"{storage}/{name}",
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
        )
    max_concurrent = opts.max_concurrent if opts.max_concurrent is not None else spec.max_concurrent
    scheduler = ActivationDensityScheduler()
    return tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            # Tune applies max_concurrent_trials only to its own default generator.
            search_alg=RoundAwareVariantGenerator(scheduler, max_concurrent=max_concurrent or 0),
            num_samples=opts.num_samples or spec.num_samples,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[make_progress_callback(), KeepLocalJsonLoggerCallback(), *callbacks],
            failure_config=tune.FailureConfig(max_failures=opts.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )


def check_name(storage: str, name: str, resume: bool) -> None:
    if "://" in storage:
        return
    exists = (Path(storage) / name).exists()
    if resume and not exists:
        raise LaunchError(f"--resume: no sweep named {name!r} under {storage}")
    if not resume and exists:
        raise LaunchError(
            f"--name {name}: a sweep of that name exists under {storage}; "
            "use --resume to continue it or --name to start another"
        )


def launch(opts: LaunchOptions) -> list[list[str]]:
    spec = load_spec(opts.spec_path, opts.overrides)
    if not opts.resume and not spec.search:
        raise LaunchError(
            f"{opts.spec_path}: search: the search space is empty; add e.g. "
            "`search: {prune.rho.threshold: {grid: [0.001, 0.002]}}`, "
            "or run one schedule with `adprune-sweep run`"
        )
    if opts.cluster is None:
        check_resources(spec, local_resources(), "local machine")
    storage = storage_root(opts.storage)
    name = opts.name or spec.name
    check_name(storage, name, opts.resume)
    home = sweep_home(storage, name)
    identity = sweep_identity(home, opts.resume, opts.tracking_uri)
    open_store(identity["tracking_uri"], spec.experiment)
    where = start_ray(opts.cluster)
    if opts.cluster is not None:
        import ray

        check_resources(spec, ray.cluster_resources(), where)
        check_shared_storage(storage)
    click.echo(f"sweep {name!r}: {where}, results under {storage}/{name}")
    click.echo(f"MLflow: {identity['tracking_uri']}, experiment {spec.experiment!r}")
    start = time.perf_counter()
    # A restored Tuner brings back the callbacks it was launched with (and their state).
    callbacks = [] if opts.resume else [make_mlflow_callback(spec, identity, name, storage, home)]
    tuner = build_tuner(spec, opts, storage, name, callbacks)
    save_identity(home, identity)
    results = tuner.fit()
    rows = summary_rows(results, list(spec.search))
    click.echo("")
    click.echo(format_table(SUMMARY_HEADERS, rows))
    click.echo(f"{len(rows)} trials in {time.perf_counter() - start:.1f}s")
    click.echo(mlflow_summary(identity, spec.experiment))
    return rows
