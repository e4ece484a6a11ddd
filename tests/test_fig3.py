"""The paper's Fig. 3: each network keeps the mean activation of its layers for one fixed test
image, and each finished trial run carries net0's beside its chosen network's."""

from pathlib import Path

import torch
from mlflow_store import client_for, hierarchy

from adprune_core.engine import mean_activation_maps
from adprune_core.nets import build_model
from adprune_core.schedule import PruneSchedule
from ray_jobs.sweep import sweep_spec_from_dict as spec_from_dict

TINY = {
    "model": {"arch": "cnn2", "widths": [12, 16]},
    "data": {
        "dataset": "synthetic",
        "batch_size": 32,
        "synthetic": {"num_train": 128, "num_test": 64, "input_size": 8},
    },
    "prune": {
        "rho": {"threshold": 0.01, "patience": 1, "min_epochs": 2, "max_epochs": 3},
        "max_rounds": 3,
    },
}


def test_maps_are_the_channel_mean_of_each_prunable_relu():
    torch.manual_seed(0)
    model = build_model("cnn2", [12, 16], num_classes=10, input_size=8, in_channels=3)
    image = torch.randn(3, 8, 8)
    maps = mean_activation_maps(model, image)
    assert model.training  # left in the mode it was found in
    model.eval()
    with torch.no_grad():
        first = model.features[:3](image[None])[0]  # conv, BN, the first LayerReLU
        second = model.features[:6](image[None])[0]
    assert len(maps["layers"]) == 2
    assert torch.allclose(torch.tensor(maps["layers"][0]), first.mean(0), atol=1e-4)
    assert torch.allclose(torch.tensor(maps["layers"][1]), second.mean(0), atol=1e-4)
    assert torch.allclose(torch.tensor(maps["input"]), image.mean(0), atol=1e-4)
    assert all(not m._forward_hooks for m in model.modules())  # its hooks are gone again


def test_every_record_keeps_its_maps_for_the_same_test_image():
    state = PruneSchedule(spec_from_dict(TINY)).run()
    inputs = {str(r.activation_maps["input"]) for r in state.records}
    assert len(inputs) == 1  # one fixed image for every network
    for record in state.records:
        assert len(record.activation_maps["layers"]) == len(record.widths)


def test_trial_runs_carry_fig3(two_sweeps, tmp_path):
    folder, _, _ = two_sweeps
    client = client_for(folder)
    roots, children = hierarchy(client)
    trials = [t for root in roots for t in children[root.info.run_id]]
    assert trials
    for trial in trials:
        names = {a.path for a in client.list_artifacts(trial.info.run_id)}
        assert "activation_maps.png" in names
        png = client.download_artifacts(trial.info.run_id, "activation_maps.png", tmp_path)
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
