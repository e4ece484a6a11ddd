"""Tests of the spec: typed loading, validation, overrides, search domains, YAML.

A sweep spec file is what users write, so the sweep loader is tested here; the schedule spec
is the part of it ``adprune_core`` reads, loaded without torch (tests/test_startup.py)."""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from adprune_core.config import ScheduleSpec, SpecError, flatten
from adprune_core.config import load_spec as load_schedule_spec
from adprune_core.config import spec_from_dict as schedule_spec_from_dict
from ray_jobs.sweep import SweepSpec
from ray_jobs.sweep import load_sweep_spec as load_spec
from ray_jobs.sweep import sweep_spec_from_dict as spec_from_dict

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "sweeps" / "quickstart.yaml"

# The datasets the project documents (data.dataset); an error must list every one of them.
KNOWN_DATASETS = ("cifar10", "cifar100", "tinyimagenet", "digits", "synthetic")


def spec_error(data: Any, overrides: tuple[str, ...] = ()) -> str:
    """The message of the SpecError that ``spec_from_dict`` must raise."""
    with pytest.raises(SpecError) as info:
        spec_from_dict(data, overrides)
    message = str(info.value)
    assert "\n" not in message.strip(), f"not one line: {message!r}"
    return message


def nested(dotted: str, value: Any) -> dict[str, Any]:
    """``nested("a.b.c", 1)`` -> ``{"a": {"b": {"c": 1}}}``, built here rather than by the spec."""
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def attr(spec: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        spec = getattr(spec, part)
    return spec


# ---------------------------------------------------------------------------- loading


# The defaults the README and the method's description document, written out here.
DOCUMENTED_DEFAULTS = {
    "model.arch": "cnn",
    "data.dataset": "digits",
    "train.lr": 0.05,
    "train.lr_schedule": "cosine",
    "prune.rho.threshold": 0.001,
    "prune.rho.patience": 2,
    "prune.rho.min_epochs": 3,
    "prune.rho.max_epochs": 30,
    "prune.delta.flat_band": 0.001,
    "prune.min_width": 1,
    "prune.max_rounds": 4,
    "prune.init": "random",
    "final.epochs": 0,
    "num_samples": 1,
    "resources.cpu": 1.0,
    "record.models": "chosen",
}


def test_empty_spec_takes_the_documented_defaults():
    for spec in (spec_from_dict({}), spec_from_dict(None)):
        assert isinstance(spec, SweepSpec)
        for dotted, value in DOCUMENTED_DEFAULTS.items():
            assert attr(spec, dotted) == value, dotted


def test_schedule_spec_refuses_the_sweep_sections_a_sweep_spec_takes():
    sweep_only = {"search": {"train.lr": {"grid": [0.1, 0.2]}}, "num_samples": 2}
    assert spec_from_dict(copy.deepcopy(sweep_only)).num_samples == 2
    with pytest.raises(SpecError, match=r"^search: unknown key"):
        schedule_spec_from_dict(copy.deepcopy(sweep_only))
    assert isinstance(schedule_spec_from_dict({"prune": {"max_rounds": 2}}), ScheduleSpec)


def test_schedule_loader_names_the_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("record:\n  models: all\n")  # a sweep-only key
    with pytest.raises(SpecError) as info:
        load_schedule_spec(path)
    assert str(info.value).startswith(f"{path}: record.models: unknown key")


def test_quickstart_yaml_loads_with_its_values():
    spec = load_spec(QUICKSTART)
    raw = yaml.safe_load(QUICKSTART.read_text())
    leaves = flat_leaves(raw)
    assert len(leaves) > 10  # the file sets plenty of keys; all must come through
    for dotted, value in leaves.items():
        got = attr(spec, dotted)
        if isinstance(value, float):
            assert got == pytest.approx(value), dotted
        else:
            assert got == value, dotted


def flat_leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted paths of a spec dict's values; ``search`` is one value (its keys are dotted)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and dotted != "search":
            out.update(flat_leaves(value, dotted))
        else:
            out[dotted] = value
    return out


# ---------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    "dotted",
    ["foo", "model.depth", "prune.rho.foo", "data.synthetic.bar", "prune.delta.baz"],
)
def test_unknown_key_named_by_full_path(dotted):
    message = spec_error(nested(dotted, 1))
    assert message.startswith(f"{dotted}:"), message
    assert "unknown key" in message


# ---------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("data.batch_size", "64"),  # a string for an int
        ("data.batch_size", True),  # a bool is not an int, even though bool subclasses int
        ("prune.rho.patience", False),
        ("data.batch_size", 64.0),  # a float for an int
        ("final.epochs", 2.5),
        ("model", [1, 2]),  # a list where a mapping is expected
        ("prune.rho", ["threshold", 0.1]),
        ("data.synthetic", [8]),
        ("train.lr", "fast"),
        ("data.augment", 1),  # an int for a bool
        ("name", 3),
        ("model.widths", 16),  # a scalar for a list
        ("model.widths", [16, "32", 64, 64]),
    ],
)
def test_wrong_type_named_by_path(dotted, value):
    message = spec_error(nested(dotted, value))
    assert message.startswith(dotted), message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("dotted", ["train.lr", "prune.rho.threshold", "train.momentum"])
def test_non_finite_float_rejected(dotted, value):
    message = spec_error(nested(dotted, value))
    assert message.startswith(f"{dotted}:"), message


def test_int_accepted_for_float_field():
    spec = spec_from_dict({"train": {"lr": 1}})
    assert spec.train.lr == 1.0
    assert isinstance(spec.train.lr, float)


def test_huge_int_for_float_field_is_spec_error():
    message = spec_error({"train": {"lr": 10**400}})
    assert message.startswith("train.lr:")


# ---------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("prune.rho.threshold", 0),
        ("prune.rho.threshold", 0.0),
        ("prune.rho.threshold", -0.001),
        ("prune.min_width", 0),
        ("prune.rho.patience", 0),
        ("prune.max_rounds", 0),
        ("train.momentum", 1.5),
        ("train.momentum", -0.1),
        ("train.lr", 0),
        ("final.epochs", -1),
        ("data.batch_size", 0),
        ("num_samples", 0),
    ],
)
def test_out_of_range_named_by_path(dotted, value):
    message = spec_error(nested(dotted, value))
    assert message.startswith(f"{dotted}:"), message


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("prune.rho.threshold", 1e-9),
        ("prune.min_width", 1),
        ("train.momentum", 1.0),
        ("train.momentum", 0.0),
        ("final.epochs", 0),
    ],
)
def test_boundary_values_accepted(dotted, value):
    assert attr(spec_from_dict(nested(dotted, value)), dotted) == value


def test_unknown_arch_named():
    message = spec_error({"model": {"arch": "nope"}})
    assert message.startswith("model.arch:"), message
    assert "nope" in message
    for arch in ("cnn2", "vgg19", "resnet18"):
        assert arch in message


def test_unknown_dataset_lists_choices():
    message = spec_error({"data": {"dataset": "nope"}})
    assert message.startswith("data.dataset:"), message
    for name in KNOWN_DATASETS:
        assert name in message


def test_min_epochs_above_max_epochs():
    message = spec_error({"prune": {"rho": {"min_epochs": 5, "max_epochs": 4}}})
    assert "prune.rho.min_epochs" in message
    assert "prune.rho.max_epochs" in message
    # Equal is fine.
    spec = spec_from_dict({"prune": {"rho": {"min_epochs": 4, "max_epochs": 4}}})
    assert spec.prune.rho.min_epochs == spec.prune.rho.max_epochs == 4


@pytest.mark.parametrize(
    "widths",
    [[16], [16, 32, 64], [], [0, 32], [16, -1], [-5, -5]],
)
def test_bad_widths_name_model_widths(widths):
    message = spec_error({"model": {"arch": "cnn2", "widths": widths}})
    assert message.startswith("model.widths"), message


def test_good_widths_accepted():
    spec = spec_from_dict({"model": {"arch": "cnn2", "widths": [3, 5]}})
    assert spec.model.widths == [3, 5]


# ---------------------------------------------------------------------------- overrides


def test_overrides_create_nested_sections_and_parse_yaml_values():
    spec = spec_from_dict(
        {},
        [
            "prune.rho.threshold=0.002",  # float; the prune section does not exist yet
            "data.synthetic.num_train=7",  # int, three levels deep
            "model.arch=cnn2",  # plain string
            "model.widths=[8, 16]",  # list
            "data.augment=true",  # bool
            "data.dataset=synthetic",
        ],
    )
    assert spec.prune.rho.threshold == 0.002
    assert spec.data.synthetic.num_train == 7
    assert isinstance(spec.data.synthetic.num_train, int)
    assert spec.model.arch == "cnn2"
    assert spec.model.widths == [8, 16]
    assert spec.data.augment is True
    assert spec.data.dataset == "synthetic"


def test_override_replaces_file_value_and_keeps_siblings(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("prune:\n  rho:\n    threshold: 0.5\n    patience: 3\n")
    spec = load_spec(path, ["prune.rho.threshold=0.25", "train.seed=7"])
    assert spec.prune.rho.threshold == 0.25
    assert spec.prune.rho.patience == 3
    assert spec.train.seed == 7


def test_later_override_wins():
    spec = spec_from_dict({}, ["train.seed=1", "train.seed=2"])
    assert spec.train.seed == 2


def test_override_value_is_typed_like_yaml():
    # "1" is read as an int, so it is wrong for a string field; quoted it is a string.
    assert spec_error({}, ["name=1"]).startswith("name:")
    assert spec_from_dict({}, ["name='1'"]).name == "1"


@pytest.mark.parametrize("dotted", ["prune.rho.bogus", "bogus", "data.synthetic.bogus"])
def test_override_of_unknown_key_names_it(dotted):
    message = spec_error({}, [f"{dotted}=1"])
    assert message.startswith(dotted), message


@pytest.mark.parametrize("text", ["foo", "prune.rho.threshold", "=3", ""])
def test_malformed_override(text):
    message = spec_error({}, [text])
    assert "--set" in message


def test_override_with_bad_value_through_load_spec_names_file_and_key(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\n")
    with pytest.raises(SpecError) as info:
        load_spec(path, ["prune.rho.threshold=-1"])
    message = str(info.value)
    assert str(path) in message
    assert "prune.rho.threshold" in message


def test_override_under_a_scalar_is_an_error():
    message = spec_error({}, ["train.lr.x=1"])
    assert "train.lr" in message


# ---------------------------------------------------------------------------- search


def test_valid_search_domains_accepted():
    search = {
        "prune.rho.threshold": {"grid": [0.001, 0.002, 0.004]},
        "model.arch": {"choice": ["cnn", "cnn2"]},
        "train.lr": {"uniform": [0.01, 0.1]},
        "train.weight_decay": {"loguniform": [1e-5, 1e-3]},
        "prune.rho.patience": {"randint": [1, 4]},
    }
    spec = spec_from_dict({"search": copy.deepcopy(search)})
    assert spec.search == search


@pytest.mark.parametrize(
    ("key", "domain"),
    [
        ("train.lr", {"normal": [0.0, 1.0]}),  # unknown kind
        ("train.lr", {"grid": []}),  # empty grid
        ("train.lr", {"choice": []}),
        ("train.lr", {"grid": 0.1}),  # not a list
        ("train.lr", {"uniform": [0.1, 0.1]}),  # low == high
        ("train.lr", {"uniform": [0.2, 0.1]}),  # low > high
        ("train.lr", {"uniform": [0.1]}),
        ("train.lr", {"uniform": ["a", "b"]}),
        ("train.weight_decay", {"loguniform": [0.0, 1.0]}),  # log of 0
        ("train.weight_decay", {"loguniform": [-1.0, 1.0]}),
        ("prune.rho.patience", {"randint": [1.0, 4.0]}),  # float bounds
        ("prune.rho.patience", {"randint": [1, 4.5]}),
        ("train.lr", {"grid": [0.1], "choice": [0.2]}),  # two kinds in one domain
        ("train.lr", {}),
        ("train.lr", [0.1, 0.2]),  # not a mapping
        ("name", {"grid": ["a", "b"]}),  # not searchable
    ],
)
def test_bad_search_domain_named_by_path(key, domain):
    message = spec_error({"search": {key: domain}})
    assert message.startswith(f"search.{key}"), message


@pytest.mark.parametrize("key", ["train.nope", "nope", "prune.rho.threshold.x"])
def test_search_key_naming_no_field_rejected(key):
    message = spec_error({"search": {key: {"grid": [1, 2]}}})
    assert key in message, message
    assert "no such key" in message


def test_search_key_naming_no_field_starts_with_search_path():
    message = spec_error({"search": {"train.nope": {"grid": [1, 2]}}})
    assert message.startswith("search.train.nope"), message


def test_non_string_search_key_is_spec_error():
    message = spec_error({"search": {1: {"grid": [1, 2]}}})
    assert message.startswith("search"), message


# ---------------------------------------------------------------------------- YAML files


def test_malformed_yaml_reports_file_line_col(tmp_path):
    path = tmp_path / "bad.yaml"
    # Line 3 starts with a tab, which YAML forbids as indentation: line 3, column 1.
    path.write_text("name: x\nmodel:\n\tarch: cnn\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3:1:"), message


def test_malformed_yaml_position_is_a_real_location(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodel: {arch: cnn2\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    match = re.match(rf"^{re.escape(str(path))}:(\d+):(\d+): ", str(info.value))
    assert match, str(info.value)
    assert 2 <= int(match.group(1)) <= 3


def test_missing_file_named(tmp_path):
    path = tmp_path / "does-not-exist.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "does-not-exist.yaml" in str(info.value)


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "3\n", "just a string\n"])
def test_top_level_not_a_mapping(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_empty_file_is_an_error_not_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(SpecError, match=r"empty\.yaml: the spec is empty"):
        load_spec(path)


def test_a_spec_of_one_key_fills_the_rest_with_defaults(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text("name: one\n")
    assert load_spec(path) == dataclasses.replace(SweepSpec(), name="one")


def test_error_inside_file_names_file_and_key(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("prune:\n  rho:\n    foo: 1\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: prune.rho.foo"), str(info.value)


def test_yaml_loader_is_safe(tmp_path):
    marker = tmp_path / "HACKED"
    path = tmp_path / "evil.yaml"
    path.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # The same payload through --set is refused too.
    with pytest.raises(SpecError):
        spec_from_dict({}, [f'name=!!python/object/apply:os.system ["touch {marker}"]'])
    assert not marker.exists()


# ---------------------------------------------------------------------------- flatten


def test_flatten_gives_dotted_keys():
    data = {"a": {"b": 1, "c": {"d": [1, 2], "e": None}}, "f": "x", "g": {}}
    assert flatten(data) == {"a.b": 1, "a.c.d": [1, 2], "a.c.e": None, "f": "x", "g": {}}


def test_flatten_of_a_spec_dict_covers_every_leaf():
    data = {"prune": {"rho": {"threshold": 0.1}, "min_width": 2}, "name": "n"}
    flat = flatten(data)
    assert flat == {"prune.rho.threshold": 0.1, "prune.min_width": 2, "name": "n"}
    # Round trip: the dotted keys rebuild the nested dict.
    rebuilt: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = rebuilt
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    assert rebuilt == data


# ---------------------------------------------------------------------------- property


VALID = {
    "name": "prop",
    "experiment": "prop-exp",
    "model": {"arch": "cnn2", "widths": [8, 16]},
    "data": {
        "dataset": "synthetic",
        "batch_size": 32,
        "augment": False,
        "num_train": 100,
        "synthetic": {"num_train": 64, "num_classes": 3, "noise": 0.25},
    },
    "train": {"lr": 0.05, "momentum": 0.9, "lr_schedule": "step", "step_size": 5, "seed": 1},
    "prune": {
        "rho": {"threshold": 0.002, "patience": 2, "min_epochs": 2, "max_epochs": 6},
        "delta": {"flat_band": 0.001},
        "min_width": 2,
        "max_rounds": 3,
        "init": "inherit",
    },
    "final": {"epochs": 2},
    "search": {
        "prune.rho.threshold": {"grid": [0.001, 0.002]},
        "train.lr": {"loguniform": [0.01, 0.1]},
    },
    "num_samples": 2,
    "resources": {"cpu": 1.0, "gpu": 0.0},
}

VALUES = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
    st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=4)), max_size=4),
)


def test_valid_base_of_property_test_is_valid():
    # Otherwise the property test below would only ever see errors.
    assert isinstance(spec_from_dict(copy.deepcopy(VALID)), SweepSpec)


def _paths(node: dict, prefix: tuple = ()) -> tuple[list[tuple], list[tuple]]:
    """(every key path, every path to a mapping including the root)."""
    keys, sections = [], [prefix]
    for key, value in node.items():
        keys.append((*prefix, key))
        if isinstance(value, dict):
            sub_keys, sub_sections = _paths(value, (*prefix, key))
            keys += sub_keys
            sections += sub_sections
    return keys, sections


def _node(root: dict, path: tuple) -> dict:
    for part in path:
        root = root[part]
    return root


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_mutations_give_spec_or_spec_error(data):
    spec = copy.deepcopy(VALID)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        keys, sections = _paths(spec)
        kind = data.draw(st.sampled_from(["delete", "replace", "add"]), label="kind")
        if kind == "add" or not keys:
            section = data.draw(st.sampled_from(sections), label="section")
            node = _node(spec, section)
            key = data.draw(
                st.text(min_size=1, max_size=8).filter(lambda k, node=node: k not in node)
            )
            node[key] = data.draw(VALUES, label="value")
            continue
        path = data.draw(st.sampled_from(keys), label="path")
        parent = _node(spec, path[:-1])
        if kind == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(VALUES, label="value")
    try:
        result = spec_from_dict(spec)
    except SpecError as err:
        assert str(err).strip(), "empty error message"
        return
    assert isinstance(result, SweepSpec)
