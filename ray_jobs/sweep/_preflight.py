"""What ``run`` checks before its first epoch, checked for a sweep before anything trains.

On the embedded local Ray the trials run on this machine, so :func:`check_local` loads the
dataset, and checks the device and the precision, here, before Ray starts: a missing dataset
is then one line and exit status 2, with nothing written, instead of every trial failing
inside Ray. On a cluster the data lives on the nodes: :func:`check_nodes` loads it from a
zero-CPU task on every node that can host a trial, and names the node where it fails.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adprune_core.config import set_dotted, spec_to_dict
from ray_jobs.sweep._errors import LaunchError
from ray_jobs.sweep._spec import SweepSpec
from ray_jobs.sweep._spec_checks import sweep_spec_from_dict
from ray_jobs.sweep._trial_errors import DETERMINISTIC_ERRORS, one_line

if TYPE_CHECKING:
    from adprune_core.data import ArrayDataset

# The keys that decide what a trial loads and where it trains; a search over one of them
# gives trials a setup of their own to check.
SETUP_KEYS = ("train.device", "train.precision")
SETUP_PREFIX = "data."
PROBE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class NodeProblem:
    """What stops trials on one node."""

    address: str
    reason: str


def is_setup_key(key: str) -> bool:
    return key.startswith(SETUP_PREFIX) or key in SETUP_KEYS


def trial_setups(spec: SweepSpec) -> list[SweepSpec]:
    """The spec, and one variant per value a grid or choice gives a data, device or precision
    key: each distinct dataset, device and precision some trial will use."""
    base = spec_to_dict(spec)
    variants = [spec]
    for key, domain in spec.search.items():
        if not is_setup_key(key):
            continue
        for value in [*domain.get("grid", []), *domain.get("choice", [])]:
            data = copy.deepcopy(base)
            set_dotted(data, key, value)
            variants.append(sweep_spec_from_dict(data))
    distinct: dict[str, SweepSpec] = {}
    for variant in variants:
        distinct.setdefault(setup_key(variant), variant)
    return list(distinct.values())


def setup_key(spec: SweepSpec) -> str:
    """What a trial's data load, device and precision depend on (not batch sizes etc.)."""
    d = spec.data
    loaded = (d.dataset, d.root, d.download, d.num_train, d.seed, d.synthetic)
    return repr((loaded, spec.train.device, spec.train.precision))


def check_setup(spec: SweepSpec, loaded: ArrayDataset | None = None) -> ArrayDataset:
    """Raise the error ``run`` would: the dataset loads, the device exists, the precision is
    supported on it. ``loaded`` is the spec's dataset when the plugin check loaded it.
    The dataset, loaded."""
    from adprune_core.data import load_dataset
    from adprune_core.engine import check_precision, resolve_device

    if loaded is None:
        try:
            loaded = load_dataset(spec.data)
        except DETERMINISTIC_ERRORS:
            raise  # already one line, the same as run's
        except Exception as err:  # a malformed file, a loader's bug: still one line
            raise LaunchError(f"data.dataset: {spec.data.dataset}: {one_line(err)}") from None
    check_precision(spec.train.precision, resolve_device(spec.train.device))
    return loaded


def check_local(spec: SweepSpec, plugin_data: ArrayDataset | None) -> ArrayDataset | None:
    """Every trial setup of ``spec`` works on this machine (one load per distinct dataset).
    The dataset of ``spec`` itself, loaded, for the trials to share; None where no trial
    has its setup."""
    base = None
    for variant in trial_setups(spec):
        same_setup = setup_key(variant) == setup_key(spec)
        same_data = plugin_data is not None and variant.data.dataset == spec.data.dataset
        loaded = check_setup(variant, plugin_data if same_data and same_setup else None)
        if same_setup:
            base = loaded
    return base


# ---------------------------------------------------------------------------- cluster


def node_setup_problem(spec_dict: dict[str, Any]) -> str | None:
    """Run on a node: why its trials could not load their data, or None."""
    from adprune_core.data import load_dataset

    try:
        for variant in trial_setups(sweep_spec_from_dict(spec_dict)):
            load_dataset(variant.data)
    except Exception as err:  # any error here would fail every trial on this node
        return one_line(err)
    return None


def can_host(node: dict[str, Any], spec: SweepSpec) -> bool:
    have = node.get("Resources", {})
    return have.get("CPU", 0.0) >= spec.resources.cpu and have.get("GPU", 0.0) >= spec.resources.gpu


def device_problem(node: dict[str, Any], spec: SweepSpec) -> str | None:
    # A zero-GPU task may not see the node's GPUs (Ray hides them), so ask Ray what it has.
    wants_cuda = any(v.train.device == "cuda" for v in trial_setups(spec))
    if wants_cuda and not node.get("Resources", {}).get("GPU", 0.0):
        return "train.device is 'cuda' but this node has no GPU"
    return None


def host_nodes(spec: SweepSpec) -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n["Alive"] and can_host(n, spec)]


def probe_nodes(spec: SweepSpec, nodes: list[dict[str, Any]]) -> list[str | None]:
    """Each node's data problem (or None), from a zero-CPU task pinned to it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(node_setup_problem)
    spec_dict = spec_to_dict(spec)
    pending = [
        probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(spec_dict)
        for n in nodes
    ]
    ready, _ = ray.wait(pending, num_returns=len(pending), timeout=PROBE_TIMEOUT_S)
    done = set(ready)
    return [
        ray.get(ref) if ref in done else f"no answer from the data check in {PROBE_TIMEOUT_S:g}s"
        for ref in pending
    ]


def node_problems(spec: SweepSpec) -> list[NodeProblem]:
    nodes = host_nodes(spec)
    problems = [
        NodeProblem(n["NodeManagerAddress"], p) for n in nodes if (p := device_problem(n, spec))
    ]
    if problems:
        return problems
    return [
        NodeProblem(n["NodeManagerAddress"], p)
        for n, p in zip(nodes, probe_nodes(spec, nodes))
        if p is not None
    ]


def check_nodes(spec: SweepSpec) -> None:
    """On a cluster: every node that can host a trial loads the data and has the device."""
    problems = node_problems(spec)
    if problems:
        first = problems[0]
        others = f" (and {len(problems) - 1} more node(s))" if len(problems) > 1 else ""
        raise LaunchError(f"node {first.address}: {first.reason}{others}")
