"""Tests of adprune_core.data; everything runs offline on the CPU."""

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import TypeAdapter

from adprune_core.config import DATASETS, DatasetNotFoundError, DataSpec, SyntheticSpec
from adprune_core.config.plugin_loading import check_dataset_name
from adprune_core.data import ArrayDataset, DeviceBatches, dataset_shape, load_dataset


def _synthetic_spec(seed: int = 0, **syn: object) -> DataSpec:
    return DataSpec(dataset="synthetic", seed=seed, synthetic=SyntheticSpec(**syn))


def _assert_same_data(a: ArrayDataset, b: ArrayDataset) -> None:
    assert torch.equal(a.train_x, b.train_x)
    assert torch.equal(a.train_y, b.train_y)
    assert torch.equal(a.test_x, b.test_x)
    assert torch.equal(a.test_y, b.test_y)
    assert a.mean == b.mean and a.std == b.std


@pytest.fixture(scope="module")
def digits() -> ArrayDataset:
    return load_dataset(DataSpec(dataset="digits"))


# ------------------------------------------------------------------------------ specs


@pytest.mark.parametrize("cls", [DataSpec, SyntheticSpec])
def test_every_spec_field_has_help_and_a_default_that_validates(cls: type) -> None:
    fields = cls.__pydantic_fields__
    for name, info in fields.items():
        assert isinstance(info.description, str) and info.description, name
    # The defaults go through the same validation as a user's values.
    assert TypeAdapter(cls).validate_python({}) == cls()


def test_dataset_check_takes_the_known_datasets_and_refuses_others() -> None:
    for name in DATASETS:
        assert check_dataset_name(name) == name
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        check_dataset_name("nope")
    assert set(DATASETS) == {
        "cifar10",
        "cifar100",
        "tinyimagenet",
        "digits",
        "synthetic",
    }


def test_unknown_dataset_is_rejected_with_the_known_names() -> None:
    with pytest.raises(ValueError) as info:
        DataSpec(dataset="mnist")
    assert all(name in str(info.value) for name in DATASETS)


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_and_split(digits: ArrayDataset) -> None:
    n_train, n_test = len(digits.train_y), len(digits.test_y)
    assert n_train + n_test == 1797
    assert abs(n_test - 0.2 * 1797) <= 1
    assert digits.train_x.shape == (n_train, 1, 8, 8)
    assert digits.test_x.shape == (n_test, 1, 8, 8)
    assert digits.train_x.dtype == torch.float32 and digits.test_x.dtype == torch.float32
    assert digits.train_y.dtype == torch.int64 and digits.test_y.dtype == torch.int64
    assert digits.train_x.min() >= 0.0 and digits.train_x.max() <= 1.0
    assert digits.train_x.max() == 1.0
    for y in (digits.train_y, digits.test_y):
        assert set(y.tolist()) == set(range(10))
    assert digits.num_classes == 10 and digits.input_size == 8 and digits.in_channels == 1
    assert digits.default_augment is False


def test_digits_train_and_test_are_disjoint(digits: ArrayDataset) -> None:
    train_rows = {tuple(r) for r in digits.train_x.flatten(1).tolist()}
    test_rows = [tuple(r) for r in digits.test_x.flatten(1).tolist()]
    # Duplicate images exist in the raw data, so allow a handful rather than demanding none.
    assert sum(r in train_rows for r in test_rows) < 0.05 * len(test_rows)


def test_digits_statistics_describe_the_train_split(digits: ArrayDataset) -> None:
    x = digits.train_x.double()
    assert digits.mean == pytest.approx([x.mean().item()], rel=1e-6)
    assert digits.std == pytest.approx([x.std(unbiased=False).item()], rel=1e-6)


def test_digits_is_deterministic_and_seeded(digits: ArrayDataset) -> None:
    _assert_same_data(digits, load_dataset(DataSpec(dataset="digits")))
    other = load_dataset(DataSpec(dataset="digits", seed=1))
    assert not torch.equal(digits.train_y, other.train_y)


# -------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_follow_the_spec() -> None:
    spec = _synthetic_spec(
        num_train=30, num_test=12, num_classes=3, input_size=6, in_channels=2, noise=0.1
    )
    data = load_dataset(spec)
    assert data.train_x.shape == (30, 2, 6, 6) and data.test_x.shape == (12, 2, 6, 6)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert set(data.train_y.tolist()) == {0, 1, 2} and set(data.test_y.tolist()) == {
        0,
        1,
        2,
    }
    assert len(data.mean) == 2 and len(data.std) == 2
    assert (data.num_classes, data.input_size, data.in_channels) == dataclasses.astuple(
        dataset_shape(spec)
    )


def test_synthetic_is_deterministic_and_seeds_differ() -> None:
    a = load_dataset(_synthetic_spec(seed=3))
    _assert_same_data(a, load_dataset(_synthetic_spec(seed=3)))
    b = load_dataset(_synthetic_spec(seed=4))
    assert not torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.test_x, b.test_x)


def test_synthetic_is_learnable_by_nearest_class_mean() -> None:
    data = load_dataset(_synthetic_spec(num_train=400, num_test=200, num_classes=5))
    flat_train, flat_test = data.train_x.flatten(1), data.test_x.flatten(1)
    centroids = torch.stack([flat_train[data.train_y == c].mean(0) for c in range(5)])
    predicted = torch.cdist(flat_test, centroids).argmin(1)
    assert (predicted == data.test_y).float().mean() > 0.9


def test_synthetic_without_noise_is_one_image_per_class() -> None:
    data = load_dataset(_synthetic_spec(num_train=40, num_classes=4, noise=0.0))
    for c in range(4):
        members = data.train_x[data.train_y == c]
        assert torch.equal(members, members[:1].expand_as(members))


# -------------------------------------------------------------------------- num_train


def test_num_train_caps_the_training_set_only(digits: ArrayDataset) -> None:
    capped = load_dataset(DataSpec(dataset="digits", num_train=100))
    assert capped.train_x.shape == (100, 1, 8, 8) and capped.train_y.shape == (100,)
    assert torch.equal(capped.test_x, digits.test_x)
    # Every kept image comes from the full training split, with its own label.
    labels_of: dict[tuple[float, ...], set[int]] = {}
    for row, y in zip(digits.train_x.flatten(1).tolist(), digits.train_y.tolist(), strict=True):
        labels_of.setdefault(tuple(row), set()).add(y)
    for row, y in zip(capped.train_x.flatten(1).tolist(), capped.train_y.tolist(), strict=True):
        assert y in labels_of.get(tuple(row), set())
    assert len(set(capped.train_y.tolist())) > 5  # a shuffled subset, not one class
    assert capped.mean == pytest.approx([capped.train_x.double().mean().item()], rel=1e-6)
    _assert_same_data(capped, load_dataset(DataSpec(dataset="digits", num_train=100)))


def test_num_train_above_the_size_keeps_everything() -> None:
    data = load_dataset(_synthetic_spec(num_train=20))
    spec = dataclasses.replace(_synthetic_spec(num_train=20), num_train=1000)
    assert torch.equal(load_dataset(spec).train_x, data.train_x)


def test_num_train_below_one_is_rejected() -> None:
    with pytest.raises(ValueError):
        load_dataset(DataSpec(dataset="digits", num_train=0))


# ---------------------------------------------------------------------- dataset_shape


def test_dataset_shape_matches_loaded_data(digits: ArrayDataset) -> None:
    assert dataclasses.astuple(dataset_shape(DataSpec(dataset="digits"))) == (
        digits.num_classes,
        digits.input_size,
        digits.in_channels,
    )
    spec = _synthetic_spec(num_classes=7, input_size=5, in_channels=3, num_train=14)
    data = load_dataset(spec)
    assert dataclasses.astuple(dataset_shape(spec)) == (
        data.num_classes,
        data.input_size,
        data.in_channels,
    )


def test_dataset_shape_of_image_datasets_needs_no_files(tmp_path: Path) -> None:
    root = str(tmp_path / "nothing-here")
    shapes = {
        name: dataclasses.astuple(dataset_shape(DataSpec(dataset=name, root=root)))
        for name in DATASETS[:3]
    }
    assert shapes == {
        "cifar10": (10, 32, 3),
        "cifar100": (100, 32, 3),
        "tinyimagenet": (200, 64, 3),
    }


# ------------------------------------------------------------------------ augmentation


def _reference_crops(x: torch.Tensor, padding: int) -> list[list[torch.Tensor]]:
    """Every possible crop of every image, computed one image at a time."""
    h, w = x.shape[2:]
    padded = F.pad(x, (padding,) * 4)
    return [
        [
            padded[i, :, r : r + h, c : c + w]
            for r in range(2 * padding + 1)
            for c in range(2 * padding + 1)
        ]
        for i in range(x.shape[0])
    ]


@pytest.fixture(scope="module")
def small() -> ArrayDataset:
    return load_dataset(_synthetic_spec(num_train=50, num_test=23, num_classes=3, in_channels=2))


def test_train_epoch_covers_every_sample_once_and_keeps_the_last_batch(
    small: ArrayDataset,
) -> None:
    batches = DeviceBatches(small, "cpu", augment=False)
    assert (batches.num_train, batches.num_test) == (50, 23)
    epoch = list(batches.train_batches(16, torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in epoch] == [16, 16, 16, 2]
    xs = torch.cat([x for x, _ in epoch])
    ys = torch.cat([y for _, y in epoch])
    assert torch.equal(ys.sort().values, small.train_y.sort().values)
    # Match each drawn row to its source row after undoing the normalisation.
    mean = torch.tensor(small.mean).view(1, -1, 1, 1)
    std = torch.tensor(small.std).view(1, -1, 1, 1)
    restored = (xs * std + mean).flatten(1)
    distances = torch.cdist(restored.double(), small.train_x.flatten(1).double())
    source = distances.argmin(1)
    assert sorted(source.tolist()) == list(range(50))
    assert distances.min(1).values.max() < 1e-4
    assert torch.equal(ys, small.train_y[source])
    assert source.tolist() != list(range(50))  # shuffled


def test_normalisation_gives_zero_mean_unit_std_per_channel(
    small: ArrayDataset,
) -> None:
    batches = DeviceBatches(small, "cpu", augment=False)
    x = batches.train_x
    assert x.dtype == torch.float32
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (x.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-4


def test_normalisation_of_uint8_images_scales_to_unit_range() -> None:
    images = torch.randint(0, 256, (40, 3, 4, 4), dtype=torch.uint8)
    data = ArrayDataset(
        name="fake",
        train_x=images,
        train_y=torch.zeros(40, dtype=torch.int64),
        test_x=images[:8],
        test_y=torch.zeros(8, dtype=torch.int64),
        num_classes=2,
        mean=(0.5, 0.25, 0.0),
        std=(0.5, 0.25, 1.0),
        default_augment=True,
    )
    batches = DeviceBatches(data, torch.device("cpu"), augment=False)
    expected = (images.double() / 255 - torch.tensor(data.mean).view(1, 3, 1, 1).double()) / (
        torch.tensor(data.std).view(1, 3, 1, 1).double()
    )
    assert torch.allclose(batches.train_x.double(), expected, atol=1e-5)
    assert torch.equal(data.train_x, images)  # the source data is left alone


def test_normalising_does_not_modify_the_dataset(small: ArrayDataset) -> None:
    before = small.train_x.clone()
    DeviceBatches(small, "cpu", augment=False)
    assert torch.equal(small.train_x, before)


@pytest.mark.parametrize("augment", [False, True])
def test_same_generator_seed_gives_same_batches(small: ArrayDataset, augment: bool) -> None:
    batches = DeviceBatches(small, "cpu", augment=augment, crop_padding=2)

    def epoch(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(batches.train_batches(8, torch.Generator().manual_seed(seed)))

    a, b, c = epoch(1), epoch(1), epoch(2)
    assert all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))


def test_augmented_batches_are_crops_or_flips_of_the_samples(
    small: ArrayDataset,
) -> None:
    plain = DeviceBatches(small, "cpu", augment=False)
    augmented = DeviceBatches(small, "cpu", augment=True, crop_padding=1)
    n_plain = list(plain.train_batches(10, torch.Generator().manual_seed(0)))
    n_aug = list(augmented.train_batches(10, torch.Generator().manual_seed(0)))
    assert [y.tolist() for _, y in n_plain] == [y.tolist() for _, y in n_aug]
    changed = 0
    for (xp, _), (xa, _) in zip(n_plain, n_aug, strict=True):
        candidates = _reference_crops(xp, 1)
        for i in range(len(xp)):
            options = candidates[i] + [w.flip(-1) for w in candidates[i]]
            assert any(torch.equal(xa[i], w) for w in options)
            changed += not torch.equal(xa[i], xp[i])
    assert changed > 0


def test_test_batches_are_in_order_and_complete(small: ArrayDataset) -> None:
    batches = DeviceBatches(small, "cpu", augment=True)
    out = list(batches.test_batches(10))
    assert [len(y) for _, y in out] == [10, 10, 3]
    assert torch.equal(torch.cat([y for _, y in out]), small.test_y)
    assert torch.equal(torch.cat([x for x, _ in out]), batches.test_x)


def test_bad_batch_size_is_rejected(small: ArrayDataset) -> None:
    batches = DeviceBatches(small, "cpu", augment=False)
    with pytest.raises(ValueError):
        next(batches.train_batches(0, torch.Generator()))
    with pytest.raises(ValueError):
        next(batches.test_batches(0))


# ------------------------------------------------------------------- missing datasets


@pytest.mark.parametrize(
    ("name", "folder"),
    [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")],
)
def test_missing_cifar_raises_a_one_line_error_naming_the_folder(
    tmp_path: Path, name: str, folder: str
) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(DataSpec(dataset=name, root=str(tmp_path)))
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / folder) in message
    assert "download" in message


def test_missing_tinyimagenet_raises_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(DataSpec(dataset="tinyimagenet", root=str(tmp_path)))
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "tiny-imagenet-200") in message
    assert "tiny-imagenet-200.zip" in message


# ------------------------------------------------------------------ fake tinyimagenet

# Deliberately not in sorted order, so labels must follow wnids.txt rather than the directory.
_WNIDS = ["n03000000", "n01000000", "n02000000"]
_VAL_CLASSES = [2, 0, 1, 1, 0, 2]


def _colour_image(label: int, grey: bool = False) -> torch.Tensor:
    """A flat 64x64 image whose colour encodes its label, robust to JPEG compression."""
    value = 40 + 80 * label
    if grey:
        return torch.full((1, 64, 64), value, dtype=torch.uint8)
    image = torch.full((3, 64, 64), 20, dtype=torch.uint8)
    image[label] = value
    return image


def _label_of_image(image: torch.Tensor) -> int:
    means = image.float().mean(dim=(1, 2))
    return int(means.argmax()) if means.max() - means.min() > 10 else -1


@pytest.fixture(scope="module")
def tinyimagenet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from torchvision.io import write_jpeg

    with warnings.catch_warnings():
        # torchvision >= 0.29 warns on every JPEG encode; the encoder still works.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision.io")
        root = tmp_path_factory.mktemp("tin")
        base = root / "tiny-imagenet-200"
        base.mkdir()
        (base / "wnids.txt").write_text("\n".join(_WNIDS) + "\n")
        for label, wnid in enumerate(_WNIDS):
            images = base / "train" / wnid / "images"
            images.mkdir(parents=True)
            (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
            for k in range(4):
                # One greyscale JPEG per class: real TinyImageNet has some and they must become RGB.
                write_jpeg(_colour_image(label, grey=k == 3), str(images / f"{wnid}_{k}.JPEG"))
        val_images = base / "val" / "images"
        val_images.mkdir(parents=True)
        lines = []
        for k, label in enumerate(_VAL_CLASSES):
            write_jpeg(_colour_image(label), str(val_images / f"val_{k}.JPEG"))
            lines.append(f"val_{k}.JPEG\t{_WNIDS[label]}\t0\t0\t63\t63")
        (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def test_fake_tinyimagenet_loads_with_labels_from_wnids_order(
    tinyimagenet_root: Path,
) -> None:
    data = load_dataset(DataSpec(dataset="tinyimagenet", root=str(tinyimagenet_root)))
    assert data.train_x.shape == (12, 3, 64, 64) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (6, 3, 64, 64) and data.test_x.dtype == torch.uint8
    assert data.train_y.dtype == torch.int64 and data.test_y.dtype == torch.int64
    assert data.num_classes == 3 and data.input_size == 64 and data.in_channels == 3
    assert data.default_augment is True
    assert sorted(data.train_y.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    for image, label in zip(data.train_x, data.train_y.tolist(), strict=True):
        if _label_of_image(image) == -1:  # the greyscale one: equal channels at its grey level
            assert abs(image.float().mean().item() - (40 + 80 * label)) < 3
        else:
            assert _label_of_image(image) == label
    assert sum(_label_of_image(image) == -1 for image in data.train_x) == 3


def test_fake_tinyimagenet_val_labels_come_from_annotations(
    tinyimagenet_root: Path,
) -> None:
    data = load_dataset(DataSpec(dataset="tinyimagenet", root=str(tinyimagenet_root)))
    assert data.test_y.tolist() == _VAL_CLASSES
    assert [_label_of_image(image) for image in data.test_x] == _VAL_CLASSES


def test_fake_tinyimagenet_batches_and_cap(tinyimagenet_root: Path) -> None:
    spec = DataSpec(dataset="tinyimagenet", root=str(tinyimagenet_root), num_train=5)
    data = load_dataset(spec)
    assert data.train_x.shape == (5, 3, 64, 64)
    batches = DeviceBatches(data, "cpu", augment=True, crop_padding=4)
    epoch = list(batches.train_batches(4, torch.Generator().manual_seed(0)))
    assert [x.shape for x, _ in epoch] == [(4, 3, 64, 64), (1, 3, 64, 64)]
    assert all(x.dtype == torch.float32 for x, _ in epoch)
