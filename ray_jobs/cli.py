"""The ``adprune-sweep`` command line: each command parses its options and calls one function.

Longer than 300 lines because click keeps every option, with its help text, as a decorator
beside its command; the bodies are a few lines each.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

# Only torch-free modules at the top: compare, pareto, ui and --help never load torch.
from adprune_core.config import (
    BUILTIN_ARCHS,
    DATASETS,
    FIXED_DATASET_SHAPES,
    ArchError,
    DatasetNotFoundError,
    DeviceUnavailable,
    PluginError,
    SpecError,
    TrainingDiverged,
)

if TYPE_CHECKING:
    from ray_jobs.sweep import SweepSpec

F = TypeVar("F", bound=Callable[..., Any])

# Errors a user can cause and fix; they end in one line on stderr and exit status 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    SpecError,
    ArchError,
    PluginError,
    DatasetNotFoundError,
    TrainingDiverged,
    DeviceUnavailable,
    FileNotFoundError,
    PermissionError,
)


def user_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as err:
            if click.get_current_context().find_root().params.get("debug"):
                raise
            click.echo(f"error: {err}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """Activation-density pruning in training, run and swept at scale."""


# ---------------------------------------------------------------------------- cost


def parse_widths(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        widths = [int(part) for part in text.replace(" ", "").strip("[]").split(",") if part]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers, got {text!r}", param_hint="'--widths'"
        ) from None
    if not widths:
        raise click.BadParameter("expected at least one width")
    return widths


def dataset_input_shape(dataset: str) -> tuple[int, int, int]:
    """(num_classes, input_size, in_channels) of a built-in dataset, torch-free when fixed."""
    if dataset in FIXED_DATASET_SHAPES:
        return FIXED_DATASET_SHAPES[dataset]
    from adprune_core.config import DataSpec
    from adprune_core.data import dataset_shape

    shape = dataset_shape(DataSpec(dataset=dataset))
    return (shape.num_classes, shape.input_size, shape.in_channels)


def check_arch_option(arch: str) -> str:
    if arch in BUILTIN_ARCHS:
        return arch  # described without torch; a plugin is imported and checked below
    from adprune_core.nets import arch_info

    try:
        arch_info(arch)
    except (ArchError, PluginError) as err:
        raise click.BadParameter(getattr(err, "detail", str(err)), param_hint="'--arch'") from None
    return arch


@main.command()
@click.option(
    "--arch",
    required=True,
    callback=lambda _ctx, _param, value: check_arch_option(value),
    help="Built-in arch (vgg11/13/16/19, resnet18/34, cnn2, cnn, cnn6), torchvision:NAME or "
    "factory 'module.path:function'.",
)
@click.option("--widths", help="Comma-separated widths, one per prunable conv (default: net0).")
@click.option(
    "--groups",
    is_flag=True,
    help="List a torchvision:NAME or nn.Module builder's prunable groups in forward order, "
    "with their layers and default widths, instead of the cost.",
)
@click.option("--dataset", type=click.Choice(DATASETS), help="Take classes and input size from it.")
@click.option("--num-classes", type=click.IntRange(min=1), help="Classes (default 10).")
@click.option("--input-size", type=click.IntRange(min=1), help="Input height = width (default 32).")
@click.option("--in-channels", type=click.IntRange(min=1), help="Input channels (default 3).")
@click.option(
    "--no-shortcuts",
    is_flag=True,
    help="Leave ResNet projection shortcuts out of both sides (how the paper's ResNet "
    "reductions come out).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@user_errors
def cost(
    arch: str,
    widths: str | None,
    groups: bool,
    dataset: str | None,
    num_classes: int | None,
    input_size: int | None,
    in_channels: int | None,
    no_shortcuts: bool,
    as_json: bool,
) -> None:
    """Parameters, MACs, energy and reductions of a width list against the arch's net0."""
    from adprune_core.nets import describe_cost

    if groups:
        # Imported here: the listing loads torch, and cost of a built-in arch never does.
        from adprune_core.nets import describe_groups

        if widths:
            raise click.UsageError("--groups lists net0's groups; give it without --widths")
        click.echo(describe_groups(arch, as_json=as_json))
        return
    if dataset and (num_classes or input_size or in_channels):
        raise click.UsageError(
            "give --dataset or --num-classes/--input-size/--in-channels, not both"
        )
    shape = dataset_input_shape(dataset) if dataset else (10, 32, 3)
    try:
        text = describe_cost(
            arch,
            parse_widths(widths),
            num_classes=num_classes or shape[0],
            input_size=input_size or shape[1],
            in_channels=in_channels or shape[2],
            include_shortcuts=not no_shortcuts,
            as_json=as_json,
        )
    except ArchError as err:
        raise click.BadParameter(str(err), param_hint="'--widths'") from None
    click.echo(text)


# ---------------------------------------------------------------------------- run


@main.command()
@click.argument("spec_path", metavar="SPEC.yaml", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a spec key, e.g. --set prune.rho.threshold=0.002 (repeatable).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write a JSON summary here.")
@click.option("--device", help="Override train.device (cpu, cuda).")
@click.option("-q", "--quiet", is_flag=True, help="No per-epoch lines.")
@user_errors
def run(
    spec_path: str, overrides: tuple[str, ...], output: str | None, device: str | None, quiet: bool
) -> None:
    """Run one full prune schedule in this process (no Ray, no MLflow)."""
    from adprune_core.schedule import run_spec_file
    from ray_jobs.sweep import load_sweep_spec

    def load_and_note(path: str, all_overrides: tuple[str, ...]) -> SweepSpec:
        # The same file as launch, validated as a sweep spec; run trains its schedule part.
        spec = load_sweep_spec(path, all_overrides)
        if spec.search:
            click.echo(
                f"note: run trains the spec's base values; its search over "
                f"{', '.join(spec.search)} is for `adprune-sweep launch`"
            )
        return spec

    extra = (f"train.device={device}",) if device else ()
    run_spec_file(spec_path, overrides + extra, output, quiet, echo=click.echo, load=load_and_note)


# ---------------------------------------------------------------------------- launch


@main.command()
@click.argument("spec_path", metavar="[SPEC.yaml]", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--cluster",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[ADDRESS]",
    help="Run on an existing Ray cluster: HOST:PORT, or 'auto' / bare flag for $RAY_ADDRESS. "
    "Without it, an embedded local Ray sized to this machine.",
)
@click.option("--storage", help="Where Tune keeps trial state and checkpoints (default ./runs).")
@click.option("--name", help="Sweep name (default: the spec's name).")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the interrupted sweep --name, with the spec it was launched with "
    "(SPEC.yaml may be left out).",
)
@click.option("--num-samples", type=click.IntRange(min=1), help="Override num_samples.")
@click.option("--max-concurrent", type=click.IntRange(min=0), help="Override max_concurrent.")
@click.option(
    "--max-failures",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Retries per trial, each from its last checkpoint.",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec key.")
@click.option(
    "--tracking-uri",
    help="MLflow store: sqlite:///PATH or http://HOST:PORT "
    "(default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db).",
)
@click.option(
    "--py-module",
    "py_modules",
    multiple=True,
    type=click.Path(exists=True),
    help="A plugin package (folder, .whl or .zip) Ray ships to every worker "
    "(runtime_env py_modules; repeatable).",
)
@click.option(
    "--working-dir",
    type=click.Path(exists=True, file_okay=False),
    help="A folder Ray ships to every worker as its working directory (runtime_env working_dir).",
)
@click.option(
    "--register-as",
    metavar="NAME",
    help="At the end, register the sweep's chosen network (best accuracy on its front, with "
    "a logged model) in the MLflow Model Registry under NAME.",
)
@click.option(
    "--no-share",
    "no_share",
    is_flag=True,
    help="Every trial trains all its epochs itself, even those another trial has trained "
    "identically (spec key share.enabled; results are the same either way).",
)
@user_errors
def launch(
    spec_path: str | None,
    cluster: str | None,
    storage: str | None,
    name: str | None,
    resume: bool,
    num_samples: int | None,
    max_concurrent: int | None,
    max_failures: int,
    overrides: tuple[str, ...],
    tracking_uri: str | None,
    py_modules: tuple[str, ...],
    working_dir: str | None,
    register_as: str | None,
    no_share: bool,
) -> None:
    """Sweep SPEC.yaml with Ray Tune: every trial runs a whole prune schedule.

    Every net[i] each trial trains is recorded in MLflow as sweep -> trial -> net[i] runs.
    Exit status 0 when every trial finished its schedule, 1 when any ended in an error (the
    closing line names their logs), 2 when the sweep cannot start. Ctrl-C or SIGTERM saves
    the sweep's state and prints the command that goes on with it (exit status 130 or 143); a
    second Ctrl-C ends at once.
    """
    from ray_jobs import LaunchOptions, SweepInterrupted
    from ray_jobs import launch as launch_sweep
    from ray_jobs.results import spec_reference
    from ray_jobs.sweep import load_sweep_spec, shipped_code

    if spec_path is None and (overrides or not resume):
        raise click.UsageError("SPEC.yaml is required, except with --resume (and no --set)")

    options = LaunchOptions(
        cluster=cluster,
        storage=storage,
        name=name,
        resume=resume,
        num_samples=num_samples,
        max_concurrent=max_concurrent,
        max_failures=max_failures,
        tracking_uri=tracking_uri,
        spec_label=spec_path,
        py_modules=list(py_modules),
        working_dir=working_dir,
        register_as=register_as,
        share=not no_share,
    )
    shipped_code(py_modules, working_dir)  # the driver imports the plugins the spec names
    spec, reference = None, None
    if spec_path:
        spec = load_sweep_spec(spec_path, overrides)
        try:
            reference = spec_reference(spec)
        except SpecError as err:
            raise SpecError(f"{spec_path}: {err}") from None
    try:
        result = launch_sweep(spec, options, reference)
    except SweepInterrupted as stop:
        click.echo(str(stop), err=True)
        sys.exit(stop.exit_status)
    close_before_exit()
    if result.failed:  # the closing line has said how many, and where their logs are
        sys.exit(1)


# ---------------------------------------------------------------------------- MLflow

EXPERIMENT_OPTION = click.option(
    "--experiment", "experiments", multiple=True, help="Experiment (repeatable; default all)."
)
SWEEP_OPTION = click.option(
    "--sweep", "sweeps", multiple=True, help="Sweep name or id (repeatable; default all)."
)
REFERENCE_OPTION = click.option(
    "--reference",
    metavar="COLUMN=VALUE,...",
    help="The hypervolume's reference point: accuracy=net0-5 (points below the baseline net0; "
    "the default), accuracy=0.93 (absolute), COLUMN=VALUE for other objectives; reductions "
    "default to 1x.",
)
TRACKING_URI_OPTION = click.option(
    "--tracking-uri",
    help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db).",
)


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind; anything but loopback exposes the store to the network.",
)
@click.option(
    "--sweep",
    "sweeps",
    multiple=True,
    help="Sweep name or id whose trials to compare (repeatable: one compare page holds every "
    "sweep's trials; default: the latest).",
)
@click.option("--experiment", help="Look for the sweep in this experiment only.")
@click.option("--open", "open_browser", is_flag=True, help="Open the runs page in a browser.")
@TRACKING_URI_OPTION
@user_errors
def ui(
    port: int,
    host: str,
    sweeps: tuple[str, ...],
    experiment: str | None,
    open_browser: bool,
    tracking_uri: str | None,
) -> None:
    """Serve the MLflow UI over the sweep store and print the pages that compare thresholds:
    the experiment's runs, the sweep's trials side by side, and the sweep run.

    Ctrl-C or SIGTERM stops the server and its workers; if the server dies, ui exits 1.
    """
    from ray_jobs.results import UiOptions, serve_ui

    options = UiOptions(tracking_uri, host, port, sweeps, experiment, open_browser)
    sys.exit(serve_ui(options))


@main.command()
@EXPERIMENT_OPTION
@SWEEP_OPTION
@click.option(
    "--sort-by",
    default="sweep",
    show_default=True,
    help="Column: sweep, trial, status, rounds, accuracy, mac_reduction, param_reduction, "
    "training_complexity, or a swept key (full or last part, e.g. threshold).",
)
@click.option("--desc", is_flag=True, help="Sort descending.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--by",
    type=click.Choice(["trial", "sweep"]),
    default="trial",
    show_default=True,
    help="One row per trial (the table adds one row per sweep below), or per sweep only.",
)
@REFERENCE_OPTION
@TRACKING_URI_OPTION
@user_errors
def compare(
    experiments: tuple[str, ...],
    sweeps: tuple[str, ...],
    sort_by: str,
    desc: bool,
    fmt: str,
    by: str,
    reference: str | None,
    tracking_uri: str | None,
) -> None:
    """One row per trial: swept thresholds, final widths, accuracy, MAC reduction, rounds;
    and one row per sweep: its hypervolume against the reference all selected sweeps share,
    and its MAC reduction at 0.5, 1, 2 and 5 points of accuracy loss."""
    from ray_jobs.results import compare_trials

    text = compare_trials(tracking_uri, experiments, sweeps, sort_by, desc, fmt, by, reference)
    click.echo(text)


@main.command()
@EXPERIMENT_OPTION
@SWEEP_OPTION
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default="pareto.parquet",
    show_default=True,
    help="Parquet file, one row per trained network.",
)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write CSV here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Also plot to PNG.")
@click.option(
    "--objectives",
    default="accuracy:max,mac_reduction:max",
    show_default=True,
    help="COLUMN:max|min, comma-separated; the first is the plot's y axis, the second its x.",
)
@REFERENCE_OPTION
@click.option(
    "--losses",
    metavar="L1,L2,...",
    help="Accuracy losses (points against net0) for the reduction-at-loss table "
    "[default: 0.5,1,2,5].",
)
@TRACKING_URI_OPTION
@user_errors
def pareto(
    experiments: tuple[str, ...],
    sweeps: tuple[str, ...],
    output: str,
    csv_path: str | None,
    plot_path: str | None,
    objectives: str,
    reference: str | None,
    losses: str | None,
    tracking_uri: str | None,
) -> None:
    """Export the accuracy vs OPS-reduction front of every trained network (parquet), and
    print each sweep's hypervolume against one shared reference and its MAC reduction at
    each accuracy loss."""
    from ray_jobs.results import ParetoOptions, export_pareto

    options = ParetoOptions(
        tracking_uri,
        experiments,
        sweeps,
        output,
        csv_path,
        plot_path,
        objectives,
        reference,
        losses,
    )
    export_pareto(options)


@main.command()
@click.argument("target", metavar="[RUN_OR_MODEL_URI]", required=False)
@click.option("--name", required=True, help="Registered model name (created if new).")
@click.option(
    "--best",
    metavar="COLUMN[:max|min]",
    help="Instead of a run: the front network best in COLUMN (e.g. accuracy).",
)
@click.option("--min-accuracy", type=float, help="With --best: at least this accuracy (0-1).")
@click.option("--min-mac-reduction", type=float, help="With --best: at least this MAC reduction.")
@EXPERIMENT_OPTION
@SWEEP_OPTION
@TRACKING_URI_OPTION
@user_errors
def register(
    target: str | None,
    name: str,
    best: str | None,
    min_accuracy: float | None,
    min_mac_reduction: float | None,
    experiments: tuple[str, ...],
    sweeps: tuple[str, ...],
    tracking_uri: str | None,
) -> None:
    """Register a trained network in the MLflow Model Registry, its widths and reductions as
    tags: the one a net or trial run id or a models:/ URI names, or the one a rule on the
    accuracy/MAC front picks (--best accuracy --min-mac-reduction 10)."""
    from ray_jobs.results import FrontRule, register_network

    if (target is None) == (best is None):
        raise click.UsageError("give either RUN_OR_MODEL_URI or --best COLUMN")
    if target is not None and (min_accuracy is not None or min_mac_reduction is not None):
        raise click.UsageError("--min-accuracy and --min-mac-reduction go with --best")
    rule = None
    if best is not None:
        rule = FrontRule(best, min_accuracy, min_mac_reduction, experiments, sweeps)
    register_network(tracking_uri, target, rule, name)


@main.command()
@click.argument("target", metavar="RUN_OR_MODEL_URI")
@click.option("-o", "--output", required=True, help="The file to write.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["state_dict", "torchscript", "torch.export"]),
    default="state_dict",
    show_default=True,
    help="state_dict: weights with arch and widths (adprune_core.load_network); torchscript "
    "and torch.export: a program that runs with torch alone.",
)
@TRACKING_URI_OPTION
@user_errors
def export(target: str, output: str, fmt: str, tracking_uri: str | None) -> None:
    """Write the logged network a net or trial run id or a models:/ URI names to a file."""
    from ray_jobs.results import export_network

    export_network(tracking_uri, target, output, fmt)


# Set by ``launch`` once its sweep has ended and what it started is shut down.
_CLOSED_FOR_EXIT = False


def close_before_exit() -> None:
    """End Ray now, so that nothing the sweep started is left for the interpreter's exit."""
    global _CLOSED_FOR_EXIT
    from ray_jobs.sweep._startup import shut_down_ray

    shut_down_ray()
    _CLOSED_FOR_EXIT = True


def entry() -> None:
    """The ``adprune-sweep`` command: :func:`main`, and after a finished sweep a prompt exit.

    By then the records are written and fsynced, the writer and its figure process have
    stopped and Ray is shut down; what is left is the interpreter tearing down torch, Ray
    and MLflow module by module (about 2 s of a quickstart's wall time). Every other
    command, an interrupted sweep and an error exit as usual.
    """
    try:
        main()
    except SystemExit as end:
        if not _CLOSED_FOR_EXIT:
            raise
        status = 0 if end.code is None else end.code
        if not isinstance(status, int):
            click.echo(status, err=True)
            status = 1
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    entry()
