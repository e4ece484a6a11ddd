"""Datasets held as whole tensors, and on-device batching with batched augmentation.

Everything a training run needs from its data is an :class:`ArrayDataset` (raw train/test
tensors plus normalisation constants) and a :class:`DeviceBatches` view of it that lives on
the training device. Keeping the whole dataset on the device and drawing batches by index
avoids DataLoader worker processes, which interact badly with Ray workers and dominate the
step time for the small CNNs this project sweeps.

Longer than 300 lines because it holds the loaders of all five datasets (each short), and the
entry of plugin loaders, next to the one batching path they all feed, whose shapes and
normalisation they must agree with.
"""

import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from adprune_core.catalog import DATASETS, FIXED_DATASET_SHAPES
from adprune_core.data_plugins import plugin_loader
from adprune_core.errors import DatasetNotFoundError

# (num_classes, input_size, in_channels) of the datasets whose shape is fixed.
_FIXED_SHAPES = FIXED_DATASET_SHAPES

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

# A channel that is constant on the training data would otherwise divide by zero.
_MIN_STD = 1e-6


def check_dataset(name: str) -> None:
    """The spec's check of ``data.dataset``: a one-line error unless it names a loader."""
    if name not in DATASETS:
        plugin_loader(name, DATASETS)


@dataclass
class SyntheticSpec:
    num_train: int = field(
        default=512, metadata={"min": 1, "help": "number of synthetic training images"}
    )
    num_test: int = field(
        default=128, metadata={"min": 1, "help": "number of synthetic test images"}
    )
    num_classes: int = field(
        default=4,
        metadata={"min": 2, "help": "number of classes (one prototype image each)"},
    )
    input_size: int = field(
        default=8, metadata={"min": 4, "help": "height and width of the square images"}
    )
    in_channels: int = field(default=1, metadata={"min": 1, "help": "number of image channels"})
    noise: float = field(
        default=0.5,
        metadata={
            "min": 0.0,
            "help": "std of the Gaussian noise added to each class prototype",
        },
    )


@dataclass
class DataSpec:
    dataset: str = field(
        default="digits",
        metadata={
            "check": check_dataset,
            "help": "built-in dataset, or loader 'module.path:function'",
        },
    )
    root: str = field(
        default="data",
        metadata={"help": "folder holding the cifar/tinyimagenet data (or where to download it)"},
    )
    download: bool = field(
        default=False,
        metadata={"help": "let torchvision download cifar10/cifar100 into root (needs network)"},
    )
    batch_size: int = field(default=128, metadata={"min": 1, "help": "training batch size"})
    eval_batch_size: int = field(
        default=1024, metadata={"min": 1, "help": "batch size for evaluation passes"}
    )
    augment: bool | None = field(
        default=None,
        metadata={
            "help": "random crop + horizontal flip on training batches; null = dataset default"
        },
    )
    crop_padding: int = field(
        default=4,
        metadata={"min": 0, "help": "zero padding (pixels) for the random crop"},
    )
    num_train: int | None = field(
        default=None,
        metadata={
            "min": 1,
            "help": "use only the first N training images after a seeded shuffle",
        },
    )
    seed: int = field(
        default=0,
        metadata={"help": "seed for the train/test split, subsetting and synthetic data"},
    )
    synthetic: SyntheticSpec = field(
        default_factory=SyntheticSpec,
        metadata={"help": "settings of the 'synthetic' dataset"},
    )


@dataclass
class ArrayDataset:
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_augment: bool

    @property
    def input_size(self) -> int:
        return int(self.train_x.shape[2])

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])


# ----------------------------------------------------------------------------- loading


def load_dataset(spec: DataSpec) -> ArrayDataset:
    """Load the dataset named by ``spec`` into CPU tensors (train subset applied)."""
    loader = _LOADERS.get(spec.dataset, _load_plugin)
    if spec.num_train is not None and spec.num_train < 1:
        raise ValueError(f"data.num_train must be at least 1, got {spec.num_train}")
    data = loader(spec)
    if spec.num_train is not None:
        data = _cap_train(data, spec.num_train, spec.seed)
    return data


def dataset_shape(spec: DataSpec) -> tuple[int, int, int]:
    """(num_classes, input_size, in_channels) of the spec's dataset, without loading it."""
    if spec.dataset == "synthetic":
        syn = spec.synthetic
        return (syn.num_classes, syn.input_size, syn.in_channels)
    shape = _FIXED_SHAPES.get(spec.dataset)
    if shape is None:
        raise ValueError(f"unknown dataset {spec.dataset!r}; known datasets: {', '.join(DATASETS)}")
    return shape


def _cap_train(data: ArrayDataset, num_train: int, seed: int) -> ArrayDataset:
    n = data.train_x.shape[0]
    if num_train >= n:
        return data
    # Shuffle before cutting so the subset is not biased by the on-disk (often class-sorted) order.
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:num_train]
    data.train_x = data.train_x[keep]
    data.train_y = data.train_y[keep]
    if data.train_x.dtype != torch.uint8:
        # Computed statistics must describe the images actually trained on.
        data.mean, data.std = _channel_stats(data.train_x)
    return data


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of (N,C,H,W) data in [0,1] units (uint8 is scaled by 1/255)."""
    xf = x.double() / 255.0 if x.dtype == torch.uint8 else x.double()
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3), unbiased=False).clamp_min(_MIN_STD)
    return tuple(mean.tolist()), tuple(std.tolist())


def _load_cifar(spec: DataSpec) -> ArrayDataset:
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
        num_classes=_FIXED_SHAPES[name][0],
        mean=mean,
        std=std,
        default_augment=True,
    )


def _hwc_to_chw(images: object) -> torch.Tensor:
    return torch.as_tensor(images).permute(0, 3, 1, 2).contiguous()


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _load_tinyimagenet(spec: DataSpec) -> ArrayDataset:
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


def _load_digits(spec: DataSpec) -> ArrayDataset:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, works offline
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    # Pixel values are counts 0..16; scale to [0,1] like the image datasets.
    images = torch.as_tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=0.2,
        random_state=spec.seed,
        stratify=labels.numpy(),
    )
    train_idx = torch.as_tensor(train_idx)
    test_idx = torch.as_tensor(test_idx)
    train_x = images[train_idx].contiguous()
    mean, std = _channel_stats(train_x)
    return ArrayDataset(
        name="digits",
        train_x=train_x,
        train_y=labels[train_idx],
        test_x=images[test_idx].contiguous(),
        test_y=labels[test_idx],
        num_classes=10,
        mean=mean,
        std=std,
        default_augment=False,
    )


def _load_synthetic(spec: DataSpec) -> ArrayDataset:
    syn = spec.synthetic
    gen = torch.Generator().manual_seed(spec.seed)
    shape = (syn.in_channels, syn.input_size, syn.input_size)
    prototypes = torch.rand((syn.num_classes, *shape), generator=gen)
    # Separate streams for train and test so changing num_train leaves the test set unchanged.
    train_seed, test_seed = torch.randint(0, 2**62, (2,), generator=gen).tolist()
    train_x, train_y = _sample_synthetic(prototypes, syn.num_train, syn.noise, train_seed)
    test_x, test_y = _sample_synthetic(prototypes, syn.num_test, syn.noise, test_seed)
    mean, std = _channel_stats(train_x)
    return ArrayDataset(
        name="synthetic",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=syn.num_classes,
        mean=mean,
        std=std,
        default_augment=False,
    )


def _sample_synthetic(
    prototypes: torch.Tensor, n: int, noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    num_classes = prototypes.shape[0]
    # Cycled then shuffled labels: every class is present even in small sets.
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    images = prototypes[labels] + noise * torch.randn((n, *prototypes.shape[1:]), generator=gen)
    return images.float(), labels.to(torch.int64)


def _load_plugin(spec: DataSpec) -> ArrayDataset:
    """A loader named by an import path or an entry point (:mod:`adprune_core.data_plugins`)."""
    loaded = plugin_loader(spec.dataset, DATASETS)(
        root=spec.root, seed=spec.seed, download=spec.download
    )
    mean, std = _channel_stats(loaded.train_x)
    return ArrayDataset(
        name=spec.dataset,
        train_x=loaded.train_x,
        train_y=loaded.train_y,
        test_x=loaded.test_x,
        test_y=loaded.test_y,
        num_classes=loaded.num_classes,
        mean=mean,
        std=std,
        default_augment=False,  # crop and flip suit natural images; a loader's data may not
    )


_LOADERS: dict[str, Callable[[DataSpec], ArrayDataset]] = {
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    "tinyimagenet": _load_tinyimagenet,
    "digits": _load_digits,
    "synthetic": _load_synthetic,
}


# ------------------------------------------------------------------- device batching


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Crop every image of the (N,C,H,W) batch at its own random offset in the zero-padded batch."""
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0:
        return x
    # Drawn on the CPU generator so the same seed gives the same crops on any device.
    offsets = torch.randint(0, 2 * padding + 1, (2, x.shape[0]), generator=generator)
    return crop_at(x, padding, offsets.to(x.device))


def crop_at(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Crop image n of the (N,C,H,W) batch at (offsets[0, n], offsets[1, n]) of its padded copy."""
    if padding == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (N,H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (N,W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices separated by the channel slice put their dims first: (N,H,W,C).
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image of the (N,C,H,W) batch horizontally with probability 1/2."""
    flip = torch.randint(0, 2, (x.shape[0],), generator=generator)
    return flip_where(x, flip.to(x.device).bool())


def flip_where(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Image n of the (N,C,H,W) batch flipped horizontally where ``flip[n]`` is true."""
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class DeviceBatches:
    """Whole dataset held as normalised float32 tensors on one device; batches drawn by index
    (no DataLoader, no worker processes); augmentation applied to whole batches on the device."""

    def __init__(
        self,
        data: ArrayDataset,
        device: torch.device | str,
        augment: bool,
        crop_padding: int = 4,
    ) -> None:
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.device = torch.device(device)
        self.augment = augment
        self.crop_padding = crop_padding
        self.num_classes = data.num_classes
        self.train_x = _normalise(data.train_x, data.mean, data.std, self.device)
        self.train_y = data.train_y.to(self.device, torch.int64)
        self.test_x = _normalise(data.test_x, data.mean, data.std, self.device)
        self.test_y = data.test_y.to(self.device, torch.int64)
        self.num_train = int(self.train_x.shape[0])
        self.num_test = int(self.test_x.shape[0])

    def train_batches(
        self, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch in a random order from ``generator``; the last partial batch is kept."""
        _check_batch_size(batch_size)
        if generator.device.type != "cpu":
            raise ValueError("train_batches needs a CPU torch.Generator (for reproducibility)")
        # The epoch's order, crop offsets and flips are drawn up front and cross to the
        # device in one copy: a blocking CPU -> GPU copy per batch would make the host wait
        # for the GPU every step.
        draws = to_device_without_sync(self._epoch_draws(generator), self.device)
        order, offsets, flips = draws[0], draws[1:3], draws[3].bool()
        for start in range(0, self.num_train, batch_size):
            idx = order[start : start + batch_size]
            x = self.train_x[idx]
            if self.augment:
                batch = slice(start, start + batch_size)
                x = flip_where(crop_at(x, self.crop_padding, offsets[:, batch]), flips[batch])
            yield x, self.train_y[idx]

    def _epoch_draws(self, generator: torch.Generator) -> torch.Tensor:
        """(4, N) int64 on the CPU: sample order, crop row and column offsets, flip flags."""
        n = self.num_train
        order = torch.randperm(n, generator=generator)
        if not self.augment:
            return torch.cat([order[None], torch.zeros((3, n), dtype=torch.int64)])
        span = 2 * self.crop_padding + 1
        offsets = torch.randint(0, span, (2, n), generator=generator)
        flips = torch.randint(0, 2, (1, n), generator=generator)
        return torch.cat([order[None], offsets, flips])

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The test set in stored order, without augmentation."""
        _check_batch_size(batch_size)
        for start in range(0, self.num_test, batch_size):
            yield (
                self.test_x[start : start + batch_size],
                self.test_y[start : start + batch_size],
            )


def to_device_without_sync(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``, without making the host wait for a GPU.

    A copy from pageable memory synchronizes the stream; from pinned memory it is queued
    (the caching host allocator keeps the pinned buffer alive until the copy has run).
    """
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _normalise(
    x: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
) -> torch.Tensor:
    if x.dtype == torch.uint8:
        # Moved before converting so the images cross to the device at a quarter of the size.
        x = x.to(device).float().div_(255.0)
    else:
        # A copy, so normalising in place never alters the caller's ArrayDataset.
        x = x.to(device=device, dtype=torch.float32, copy=True)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t)
