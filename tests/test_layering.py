"""The structure of the tree, read from its imports.

- ``adprune_core`` never imports Ray, MLflow or ``ray_jobs``, and is five rooms with a one-way
  flow: ``schedule -> engine -> {nets, data} -> config``; ``config`` (the spec) imports no torch;
- ``ray_jobs`` is three rooms with a one-way flow: ``cli -> sweep -> tracking`` and
  ``cli -> results -> tracking``; ``results`` reads only the run keys and the store location
  from ``tracking``;
- no import circles between modules;
- no module over about 300 lines without a reason stated in its docstring.

Every rule is checked on the real tree, and on a small planted tree that breaks it, so each
one is shown able to fail.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import adprune_core

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("adprune_core", "ray_jobs")
MAX_LINES = 300
SIZE_REASON = "Longer than 300 lines"

# What each room may not import; "ray_jobs" is the package root, which joins the rooms.
FORBIDDEN = {
    "adprune_core": ("ray", "mlflow", "ray_jobs"),
    "adprune_core.config": (
        "torch",
        "torchvision",
        "adprune_core.nets",
        "adprune_core.data",
        "adprune_core.engine",
        "adprune_core.schedule",
    ),
    "adprune_core.nets": ("adprune_core.data", "adprune_core.engine", "adprune_core.schedule"),
    "adprune_core.data": ("adprune_core.nets", "adprune_core.engine", "adprune_core.schedule"),
    "adprune_core.engine": ("adprune_core.schedule",),
    "ray_jobs.tracking": ("ray_jobs.sweep", "ray_jobs.results", "ray_jobs.cli", "ray_jobs"),
    "ray_jobs.results": ("ray_jobs.sweep", "ray_jobs.cli", "ray_jobs"),
    "ray_jobs.sweep": ("ray_jobs.results", "ray_jobs.cli", "ray_jobs"),
}
# The reading side takes names and the store's location from tracking, never the writer.
RESULTS_MAY_USE_FROM_TRACKING = ("ray_jobs.tracking.keys", "ray_jobs.tracking.store")


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    imports: set[str] = field(default_factory=set)  # modules, resolved through lazy exports


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def lazy_table(tree: ast.Module, package: str) -> dict[str, str]:
    """A package's ``lazy_exports(__name__, {name: module})`` table, with absolute modules."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", "") == "lazy_exports"
            and len(node.args) == 2
            and isinstance(node.args[1], ast.Dict)
        ):
            table = {}
            for key, value in zip(node.args[1].keys, node.args[1].values):
                target = value.value
                table[key.value] = package + target if target.startswith(".") else target
            return table
    return {}


def raw_imports(tree: ast.Module, name: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) for every import, at any depth (lazy ones too)."""
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [alias.name for alias in node.names]))
    return found


def load_tree(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    trees = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            name, is_package = module_name(path, root)
            modules[name] = Module(name, path, is_package)
            trees[name] = ast.parse(path.read_text(), str(path))
    tables = {n: lazy_table(trees[n], n) for n, m in modules.items() if m.is_package}
    for name, module in modules.items():
        for base, names in raw_imports(trees[name], name, module.is_package):
            for imported in names or [""]:
                module.imports.add(resolve(base, imported, modules, tables))
    return modules


def resolve(base: str, name: str, modules: dict[str, Module], tables: dict) -> str:
    """The module an import really reaches: a submodule, or the module behind a lazy export."""
    if name and f"{base}.{name}" in modules:
        return f"{base}.{name}"
    if name and name in tables.get(base, {}):
        return tables[base][name]
    return base


def in_room(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


def layering_violations(modules: dict[str, Module]) -> list[str]:
    found = []
    for name, module in modules.items():
        for room, forbidden in FORBIDDEN.items():
            if not in_room(name, room):
                continue
            for target in sorted(module.imports):
                for bad in forbidden:
                    # The root is forbidden only itself; its rooms are judged on their own.
                    hit = target == bad if bad == "ray_jobs" else in_room(target, bad)
                    if hit:
                        found.append(f"{name} imports {target}")
        if in_room(name, "ray_jobs.results"):
            for target in sorted(module.imports):
                if in_room(target, "ray_jobs.tracking") and not any(
                    in_room(target, ok) for ok in RESULTS_MAY_USE_FROM_TRACKING
                ):
                    found.append(f"{name} imports the writer side {target}")
    return found


def import_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {n: sorted(t for t in m.imports if t in modules and t != n) for n, m in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def oversized(modules: dict[str, Module]) -> list[str]:
    found = []
    for name, module in modules.items():
        text = module.path.read_text()
        lines = len(text.splitlines())
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_LINES and SIZE_REASON not in docstring:
            found.append(f"{name}: {lines} lines, and no '{SIZE_REASON} ...' in its docstring")
    return found


# ---------------------------------------------------------------------------- the real tree


@pytest.fixture(scope="module")
def tree() -> dict[str, Module]:
    return load_tree(ROOT)


CORE_ROOMS = ("config", "nets", "data", "engine", "schedule")


def test_the_rooms_exist_and_the_old_flat_modules_are_gone(tree):
    for room in ("ray_jobs.sweep", "ray_jobs.tracking", "ray_jobs.results"):
        assert tree[room].is_package
        assert len([n for n in tree if n.startswith(room + ".")]) >= 3
    flat = [n for n, m in tree.items() if n.startswith("ray_jobs.") and n.count(".") == 1]
    flat = [n for n in flat if not tree[n].is_package]
    assert flat == ["ray_jobs.cli"]
    for room in CORE_ROOMS:
        assert tree[f"adprune_core.{room}"].is_package
        assert len([n for n in tree if n.startswith(f"adprune_core.{room}.")]) >= 3
    core_flat = [n for n in tree if n.startswith("adprune_core.") and n.count(".") == 1]
    assert sorted(core_flat) == sorted(
        ["adprune_core._exports", *[f"adprune_core.{r}" for r in CORE_ROOMS]]
    )


def test_imports_flow_one_way_between_the_rooms(tree):
    assert layering_violations(tree) == []


def test_no_import_circles(tree):
    assert import_cycles(tree) == []


def test_no_module_is_oversized_without_a_reason(tree):
    assert oversized(tree) == []


def test_core_never_imports_ray_or_mlflow():
    modules = [m.name for m in pkgutil.walk_packages(adprune_core.__path__, "adprune_core.")]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert len(modules) >= 25
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("room", "must_not_load"),
    [
        ("ray_jobs.tracking", ("ray_jobs.sweep", "ray_jobs.results")),
        ("ray_jobs.results", ("ray_jobs.sweep", "ray")),
    ],
)
def test_importing_a_room_loads_no_room_it_must_not_use(room, must_not_load):
    """What the interpreter really loads, every module of the room imported."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"room = importlib.import_module({room!r})\n"
        "for m in pkgutil.iter_modules(room.__path__):\n"
        "    importlib.import_module(room.__name__ + '.' + m.name)\n"
        f"banned = {must_not_load!r}\n"
        "bad = [n for n in sys.modules if any(n == p or n.startswith(p + '.') for p in banned)]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------------------- planted trees


def plant(root: Path, files: dict[str, str]) -> dict[str, Module]:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return load_tree(root)


ROOMS = {
    "adprune_core/__init__.py": "",
    "adprune_core/config/__init__.py": "",
    "adprune_core/config/spec.py": "",
    "adprune_core/nets/__init__.py": "",
    "adprune_core/nets/models.py": "import torch\nfrom adprune_core.config.spec import S\n",
    "adprune_core/schedule/__init__.py": "",
    "adprune_core/schedule/loop.py": "from adprune_core.nets.models import M\n",
    "ray_jobs/__init__.py": "",
    "ray_jobs/cli.py": "from ray_jobs.sweep import launch\n",
    "ray_jobs/sweep/__init__.py": (
        "from adprune_core._exports import lazy_exports\n"
        "__getattr__, __dir__, __all__ = lazy_exports(__name__, {'launch': '._launch'})\n"
    ),
    "ray_jobs/sweep/_launch.py": "from ray_jobs.tracking.keys import KEY_TAG\n",
    "ray_jobs/tracking/__init__.py": (
        "from adprune_core._exports import lazy_exports\n"
        "__getattr__, __dir__, __all__ = lazy_exports(__name__, {'Recorder': '._recorder'})\n"
    ),
    "ray_jobs/tracking/keys.py": "KEY_TAG = 'k'\n",
    "ray_jobs/tracking/_recorder.py": "from ray_jobs.tracking.keys import KEY_TAG\n",
    "ray_jobs/results/__init__.py": "",
    "ray_jobs/results/_records.py": "from ray_jobs.tracking.keys import KEY_TAG\n",
}


def test_a_clean_planted_tree_passes(tmp_path):
    modules = plant(tmp_path, ROOMS)
    assert layering_violations(modules) == []
    assert import_cycles(modules) == []


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("ray_jobs/tracking/_recorder.py", "from ray_jobs.results import x\n", "results"),
        (
            "ray_jobs/tracking/_recorder.py",
            "def f():\n    import ray_jobs.sweep._launch\n",
            "sweep",
        ),
        ("ray_jobs/results/_records.py", "from ray_jobs.sweep import launch\n", "sweep"),
        ("ray_jobs/results/_records.py", "from ray_jobs.tracking import Recorder\n", "writer"),
        ("ray_jobs/results/_records.py", "from ..tracking._recorder import R\n", "writer"),
        ("ray_jobs/sweep/_launch.py", "from ray_jobs.results._records import x\n", "results"),
        ("ray_jobs/sweep/_launch.py", "from ray_jobs import launch\n", "imports ray_jobs"),
        ("adprune_core/config/spec.py", "import mlflow\n", "mlflow"),
        ("adprune_core/config/spec.py", "from ray import tune\n", "ray"),
        ("adprune_core/config/spec.py", "import torch\n", "torch"),
        ("adprune_core/config/spec.py", "from adprune_core.nets import m\n", "nets"),
        ("adprune_core/nets/models.py", "from adprune_core.schedule import x\n", "schedule"),
    ],
)
def test_each_layering_rule_fails_when_broken(tmp_path, module, line, expected):
    modules = plant(tmp_path, {**ROOMS, module: ROOMS[module] + line})
    violations = layering_violations(modules)
    assert len(violations) == 1 and expected in violations[0]


def test_a_planted_circle_is_found(tmp_path):
    files = {
        **ROOMS,
        "ray_jobs/tracking/keys.py": "from ray_jobs.tracking import Recorder\n",
    }
    assert import_cycles(plant(tmp_path, files)) == [
        ["ray_jobs.tracking._recorder", "ray_jobs.tracking.keys"]
    ]


def test_a_long_module_needs_a_stated_reason(tmp_path):
    body = "x = 1\n" * (MAX_LINES + 1)
    modules = plant(tmp_path, {**ROOMS, "ray_jobs/results/_big.py": body})
    assert [v.split(":")[0] for v in oversized(modules)] == ["ray_jobs.results._big"]
    reasoned = f'"""Big.\n\n{SIZE_REASON}: one table.\n"""\n' + body
    assert oversized(plant(tmp_path, {"ray_jobs/results/_big.py": reasoned})) == []
