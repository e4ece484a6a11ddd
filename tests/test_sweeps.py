from pathlib import Path

import pytest

from ray_jobs.sweep import load_sweep_spec as load_spec

SWEEPS = sorted((Path(__file__).parent.parent / "sweeps").glob("*.yaml"))


def test_the_paper_setups_and_quickstart_are_shipped():
    names = {p.stem for p in SWEEPS}
    assert {
        "quickstart",
        "cifar10-vgg19",
        "cifar10-resnet18",
        "cifar100-vgg19",
        "cifar100-resnet18",
        "tinyimagenet-resnet18",
        "rho-delta-study",
        "quickstart-nsga2",
    } <= names


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_shipped_sweep_is_valid(path):
    spec = load_spec(path)
    assert spec.search, f"{path.name} sweeps nothing"


def test_quickstart_is_cpu_sized_and_sweeps_rho():
    spec = load_spec(SWEEPS[[p.stem for p in SWEEPS].index("quickstart")])
    assert spec.data.dataset == "digits" and spec.resources.gpu == 0
    assert len(spec.search["prune.rho.threshold"]["grid"]) >= 4


def test_quickstart_nsga2_is_a_cpu_sized_multi_objective_search():
    spec = load_spec(SWEEPS[[p.stem for p in SWEEPS].index("quickstart-nsga2")])
    assert spec.data.dataset == "digits" and spec.resources.gpu == 0
    assert (spec.search_alg.name, spec.search_alg.sampler) == ("optuna", "nsga2")
    assert len(spec.search_alg.objectives) == 2
    assert {
        "prune.rho.threshold",
        "prune.rho.patience",
        "prune.delta.flat_band",
        "train.lr",
    } <= set(spec.search)
    assert spec.num_samples >= 2 * spec.search_alg.population_size  # NSGA-II gets to evolve
