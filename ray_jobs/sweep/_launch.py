"""``launch``: a Ray Tune sweep where every trial runs a whole prune schedule."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import click

from adprune_core.schedule import check_plugins, format_table
from ray_jobs.sweep._errors import LaunchError
from ray_jobs.sweep._folders import (
    SweepClaim,
    check_sweep_name,
    claim_sweep,
    storage_root,
    sweep_home,
)
from ray_jobs.sweep._identity import save_identity, stored_spec, sweep_identity
from ray_jobs.sweep._interrupts import StopSignals, SweepInterrupted, quiet_tune_interruptions
from ray_jobs.sweep._options import LaunchOptions
from ray_jobs.sweep._preflight import check_local, check_nodes
from ray_jobs.sweep._progress import (
    SUMMARY_HEADERS,
    FailedTrial,
    failed_trials,
    failure_line,
    sharing_line,
    summary_rows,
)
from ray_jobs.sweep._ray_runtime import (
    check_resources,
    check_shared_storage,
    local_resources,
    shipped_code,
)
from ray_jobs.sweep._recording import make_mlflow_callback, mlflow_summary, open_store
from ray_jobs.sweep._spec import SweepSpec
from ray_jobs.sweep._spec_checks import searched_values
from ray_jobs.sweep._startup import (
    build_tuner,
    shut_down_ray,
    start_ray_beside,
)

if TYPE_CHECKING:
    from adprune_core.data import ArrayDataset
    from ray_jobs.tracking import SweepEndReport, TrialEndReport

# Tune's CSV / TensorBoard loggers cannot take the list-valued fields every report carries
# (widths, per-layer AD); results still land in each trial's result.json.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Checkpointing every epoch is the point (a restart loses at most one epoch); Tune's warning
# about frequent experiment snapshots is expected here and would drown the progress lines.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# A failed trial is one progress line; its traceback is in its error.txt, not on the console.
os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")


@dataclass
class SweepResult:
    """What a finished (or interrupted) sweep leaves: where it is, and a row per trial."""

    name: str
    sweep_id: str
    experiment: str
    tracking_uri: str
    path: str
    rows: list[list[str]] = field(default_factory=list)
    grid: Any = None  # Tune's ResultGrid
    failed: list[FailedTrial] = field(default_factory=list)  # not done: errors, divergence

    @property
    def table(self) -> str:
        return format_table(SUMMARY_HEADERS, self.rows)


def check_searches(spec: SweepSpec, opts: LaunchOptions) -> None:
    if not opts.resume and not spec.search:
        raise LaunchError(
            f"{opts.spec_label or 'spec'}: search: the search space is empty; add e.g. "
            "`search: {prune.rho.threshold: {grid: [0.001, 0.002]}}`, "
            "or run one schedule with `adprune-sweep run`"
        )


def resolve_spec(spec: SweepSpec | None, storage: str, opts: LaunchOptions) -> SweepSpec:
    """The spec given, else (``--resume`` without one) the one the sweep was launched with."""
    if spec is not None:
        return spec
    if not opts.resume or opts.name is None:
        raise LaunchError("SPEC.yaml: required, except with --resume --name NAME")
    return stored_spec(sweep_home(storage, opts.name), opts.name)


def launch(
    spec: SweepSpec | None,
    opts: LaunchOptions | None = None,
    sweep_end_report: SweepEndReport | None = None,
    trial_end_report: TrialEndReport | None = None,
) -> SweepResult:
    """Run (or with ``opts.resume``, continue) a sweep of ``spec``, recording it in MLflow.

    ``spec`` may be None with ``opts.resume`` and ``opts.name``: the sweep goes on with the
    spec it was launched with. ``sweep_end_report`` gives the sweep run its end-of-sweep
    figures and files; see :data:`ray_jobs.tracking.SweepEndReport`; ``trial_end_report``
    its metrics after each completed trial (:data:`ray_jobs.tracking.TrialEndReport`). Raises
    :class:`SweepInterrupted` when SIGINT or SIGTERM stopped it.
    """
    opts = opts or LaunchOptions()
    if opts.name is not None:
        check_sweep_name(opts.name)
    elif spec is not None:
        check_sweep_name(spec.name, f"{opts.spec_label or 'spec'}: name")
    storage = storage_root(opts.storage)
    spec = resolve_spec(spec, storage, opts)
    check_searches(spec, opts)
    runtime_env = shipped_code(opts.py_modules, opts.working_dir)
    # A plugin's error is one line here, before Ray starts, for every value the search gives.
    plugin_data = check_plugins(
        spec,
        archs=searched_values(spec, "model.arch", spec.model.arch),
        inits=searched_values(spec, "prune.init", spec.prune.init),
    )
    name = spec.name if opts.name is None else opts.name
    loaded = None
    if opts.cluster is None:
        check_resources(spec, local_resources(), "local machine")
        # Trials run here: what would fail in each fails now, before Ray starts.
        loaded = check_local(spec, plugin_data)
    del plugin_data
    quiet_tune_interruptions()
    claim = claim_sweep(storage, name, opts.resume)
    with StopSignals() as stop:
        try:
            tuner, identity = prepare(
                spec,
                opts,
                (storage, name),
                claim,
                (sweep_end_report, trial_end_report),
                runtime_env,
                loaded,
            )
            del loaded  # the trials have it through Ray's object store
        except BaseException as err:
            claim.abandon()
            if isinstance(err, KeyboardInterrupt):
                raise SweepInterrupted(
                    stop.received or signal.SIGINT,
                    f"interrupted before sweep {name!r} started; nothing was saved",
                ) from None
            raise
        stop.reinstall()
        start = time.perf_counter()
        try:
            grid = tuner.fit()
        except KeyboardInterrupt:
            grid = None  # a second signal: end now; the journal keeps unwritten records
        if stop.received is not None or grid is None:
            claim.lock.close()
            if grid is not None:
                shut_down_ray()
            raise SweepInterrupted(
                stop.received or signal.SIGINT,
                f"interrupted: state saved under {storage}/{name}; "
                f"go on with: {opts.resume_command(name)}",
            )
    try:
        return finish(spec, name, storage, identity, grid, start)
    finally:
        claim.lock.close()


def prepare(
    spec: SweepSpec,
    opts: LaunchOptions,
    where_to: tuple[str, str],
    claim: SweepClaim,
    reports: tuple[SweepEndReport | None, TrialEndReport | None],
    runtime_env: dict[str, Any] | None = None,
    loaded: ArrayDataset | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Everything before training: no training starts unless every check passed."""
    storage, name = where_to
    identity = sweep_identity(claim.home, opts.resume, opts.tracking_uri, spec)
    where = start_ray_beside(
        partial(open_store, identity["tracking_uri"], spec.experiment), opts, runtime_env
    )
    if opts.cluster is not None:
        import ray

        check_resources(spec, ray.cluster_resources(), where)
        check_shared_storage(storage)
        check_nodes(spec)
    click.echo(f"sweep {name!r}: {where}, results under {storage}/{name}")
    click.echo(f"MLflow: {identity['tracking_uri']}, experiment {spec.experiment!r}")
    # A restored Tuner brings back the callbacks it was launched with (and their state).
    callbacks = (
        []
        if opts.resume
        else [make_mlflow_callback(spec, identity, name, storage, claim.home, *reports)]
    )
    tuner = build_tuner(spec, opts, storage, name, callbacks, loaded)
    save_identity(claim.home, identity)
    return tuner, identity


def finish(
    spec: SweepSpec,
    name: str,
    storage: str,
    identity: dict[str, Any],
    grid: Any,
    start: float,
) -> SweepResult:
    result = SweepResult(
        name,
        identity["sweep_id"],
        spec.experiment,
        identity["tracking_uri"],
        f"{storage}/{name}",
        summary_rows(grid, list(spec.search)),
        grid,
        failed_trials(grid),
    )
    click.echo("")
    click.echo(result.table)
    click.echo(f"{len(result.rows)} trials in {time.perf_counter() - start:.1f}s")
    shared = sharing_line(grid)
    if shared is not None:
        click.echo(shared)
    click.echo(mlflow_summary(identity, spec.experiment))
    if result.failed:
        click.echo(f"error: {failure_line(result.failed, len(result.rows))}", err=True)
    return result
