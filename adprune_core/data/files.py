"""The datasets read from files: CIFAR-10/100 (torchvision's pickles) and TinyImageNet (its
standard folder layout). A missing dataset is a one-line error that says how to get it.
"""

from __future__ import annotations

import os
import warnings

import torch

from adprune_core.config import FIXED_DATASET_SHAPES, DatasetNotFoundError, DataSpec
from adprune_core.data.arrays import ArrayDataset

# Published per-channel statistics of the training sets, so that loading does not have to
# convert tens of thousands of images to float just to measure them.
_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)


_CIFAR10_STD = (0.2470, 0.2435, 0.2616)


_CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)


_CIFAR100_STD = (0.2673, 0.2564, 0.2762)


_TINYIMAGENET_MEAN = (0.4802, 0.4481, 0.3975)


_TINYIMAGENET_STD = (0.2770, 0.2691, 0.2821)


_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


_TINYIMAGENET_FOLDER = "tiny-imagenet-200"


_TINYIMAGENET_SIZE = 64


def load_cifar(spec: DataSpec) -> ArrayDataset:
    from torchvision import (
        datasets,
    )  # torchvision is slow to import; only cifar needs it here

    name = spec.dataset
    folder = os.path.join(spec.root, _CIFAR_FOLDERS[name])
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        train = cls(spec.root, train=True, download=spec.download)
        test = cls(spec.root, train=False, download=spec.download)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise DatasetNotFoundError(
            f"{name} not found under {folder!r}: set data.download=true on a machine with "
            f"network, or copy the extracted {_CIFAR_FOLDERS[name]!r} folder there"
        ) from err
    except OSError as err:  # download=True without network ends up here (URLError)
        raise DatasetNotFoundError(
            f"{name} could not be downloaded to {folder!r} ({_one_line(err)}): copy the "
            f"extracted {_CIFAR_FOLDERS[name]!r} folder there and set data.download=false"
        ) from err
    mean, std = (
        (_CIFAR10_MEAN, _CIFAR10_STD) if name == "cifar10" else (_CIFAR100_MEAN, _CIFAR100_STD)
    )
    return ArrayDataset(
        name=name,
        train_x=_hwc_to_chw(train.data),
        train_y=torch.as_tensor(train.targets, dtype=torch.int64),
        test_x=_hwc_to_chw(test.data),
        test_y=torch.as_tensor(test.targets, dtype=torch.int64),
        num_classes=FIXED_DATASET_SHAPES[name][0],
        mean=mean,
        std=std,
        default_augment=True,
    )


def _hwc_to_chw(images: object) -> torch.Tensor:
    return torch.as_tensor(images).permute(0, 3, 1, 2).contiguous()


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def load_tinyimagenet(spec: DataSpec) -> ArrayDataset:
    base = os.path.join(spec.root, _TINYIMAGENET_FOLDER)
    wnids_path = os.path.join(base, "wnids.txt")
    annotations_path = os.path.join(base, "val", "val_annotations.txt")
    for required in (wnids_path, annotations_path):
        if not os.path.isfile(required):
            raise DatasetNotFoundError(
                f"tinyimagenet not found under {base!r} (missing {required!r}): download "
                f"http://cs231n.stanford.edu/tiny-imagenet-200.zip and extract it under "
                f"{spec.root!r}"
            )
    with open(wnids_path) as f:
        wnids = [line.strip() for line in f if line.strip()]
    label_of = {wnid: i for i, wnid in enumerate(wnids)}

    train_files: list[str] = []
    train_labels: list[int] = []
    for label, wnid in enumerate(wnids):
        image_dir = os.path.join(base, "train", wnid, "images")
        if not os.path.isdir(image_dir):
            raise DatasetNotFoundError(
                f"tinyimagenet under {base!r} is incomplete (missing {image_dir!r}): "
                f"re-extract tiny-imagenet-200.zip under {spec.root!r}"
            )
        # Sorted so the image order (and hence any seeded subset) is the same on every machine.
        names = sorted(n for n in os.listdir(image_dir) if n.endswith(".JPEG"))
        train_files += [os.path.join(image_dir, n) for n in names]
        train_labels += [label] * len(names)

    test_files: list[str] = []
    test_labels: list[int] = []
    with open(annotations_path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2:
                continue
            if parts[1] not in label_of:
                raise ValueError(
                    f"{annotations_path}: {parts[0]} has class {parts[1]!r}, not in wnids.txt"
                )
            test_files.append(os.path.join(base, "val", "images", parts[0]))
            test_labels.append(label_of[parts[1]])

    return ArrayDataset(
        name="tinyimagenet",
        train_x=_decode_images(train_files),
        train_y=torch.tensor(train_labels, dtype=torch.int64),
        test_x=_decode_images(test_files),
        test_y=torch.tensor(test_labels, dtype=torch.int64),
        num_classes=len(wnids),
        mean=_TINYIMAGENET_MEAN,
        std=_TINYIMAGENET_STD,
        default_augment=True,
    )


def _decode_images(paths: list[str]) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    size = _TINYIMAGENET_SIZE
    # Preallocated so peak memory is one copy of the dataset, not a list of tensors plus a stack.
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    with warnings.catch_warnings():
        # torchvision >= 0.29 warns on every decode that torchcodec supersedes it; one warning
        # per image would bury real ones, and the decoder still works.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision.io")
        for i, path in enumerate(paths):
            # RGB mode because a few TinyImageNet JPEGs are greyscale.
            image = decode_image(read_file(path), mode=ImageReadMode.RGB)
            if image.shape != (3, size, size):
                raise ValueError(
                    f"{path}: expected a {size}x{size} image, got {tuple(image.shape)}"
                )
            out[i] = image
    return out
