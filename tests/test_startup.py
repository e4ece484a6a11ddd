"""Quick, quiet starts: read-only commands load neither torch nor Ray, a launch does not open
on library noise, and an empty spec is an error rather than a sweep of the defaults."""

import re
import subprocess
from pathlib import Path

import pytest
from conftest import CLI

HEAVY = ("torch", "ray", "matplotlib")
REPO = Path(__file__).resolve().parents[1]


def imported_top_level(args, cwd):
    """Every top-level package the command imported, from ``python -X importtime``."""
    proc = subprocess.run(
        [CLI[0], "-X", "importtime", *CLI[1:], *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \| ( *)(\S+)$", proc.stderr, re.M)
    return {name.split(".")[0] for indent, name in names}


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["compare"],
        ["compare", "--format", "json"],
        ["pareto", "-o", "f.parquet"],
        ["cost", "--arch", "vgg19", "--dataset", "cifar100", "--widths", ",".join(["8"] * 16)],
        ["cost", "--arch", "resnet18", "--json"],
    ],
    ids=["help", "compare", "compare-json", "pareto", "cost-vgg19", "cost-resnet18"],
)
def test_read_only_commands_load_neither_torch_nor_ray(two_sweeps, args):
    folder, _, _ = two_sweeps
    imported = imported_top_level(args, folder)
    assert "click" in imported  # the probe sees imports at all
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_launch_does_not_open_on_ray_token_auth_notice(two_sweeps):
    _, alpha, beta = two_sweeps
    for proc in (alpha, beta):
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Token authentication is enabled" not in proc.stderr
        assert "Token authentication" not in proc.stdout


@pytest.mark.parametrize(
    "text", ["", "\n\n", "# just a comment\n"], ids=["empty", "blank", "comment"]
)
@pytest.mark.parametrize("command", ["launch", "run"])
def test_an_empty_spec_is_one_line_and_exit_2(tmp_path, command, text):
    spec = tmp_path / "empty.yaml"
    spec.write_text(text)
    proc = subprocess.run(
        [*CLI, command, str(spec)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: {spec}: the spec is empty; see sweeps/quickstart.yaml for one to copy"
    )
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "code",
    [
        "from adprune_core.config import read_yaml, spec_from_dict\n"
        "data = read_yaml('sweeps/quickstart.yaml')\n"
        "data.pop('search'); data.pop('resources')\n"
        "print(spec_from_dict(data).prune.rho.threshold)\n",
        "from ray_jobs.sweep import load_sweep_spec\n"
        "print(load_sweep_spec('sweeps/quickstart.yaml').prune.rho.threshold)\n",
    ],
    ids=["schedule-spec", "sweep-spec"],
)
def test_loading_a_spec_imports_no_torch(code):
    proc = subprocess.run(
        [CLI[0], "-X", "importtime", "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "0.002"  # the quickstart's own threshold came through
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \| ( *)(\S+)$", proc.stderr, re.M)
    imported = {name.split(".")[0] for _, name in names}
    assert "pydantic" in imported  # the probe sees the spec's own imports
    assert not imported & {"torch", "ray", "mlflow"}, sorted(imported & {"torch", "ray", "mlflow"})
