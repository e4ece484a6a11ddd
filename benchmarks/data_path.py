"""Data path: the in-memory batched pipeline (crop + flip on whole batches, on the training
device) against torchvision's DataLoader + transforms (RandomCrop(32, 4), RandomHorizontalFlip,
ToTensor, Normalize; 2 workers) on CIFAR-shaped uint8 data.

Targets: >= 5x the images/s for loading alone; an end-to-end epoch no slower than the baseline.
"""

import numpy as np
import torch
from common import cifar_shaped, reproduce, timed, verdict
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from adprune_core.data import DeviceBatches
from adprune_core.engine import train_epoch
from adprune_core.nets import build_model

NUM_IMAGES = 10000
BATCH = 128


class Uint8Images(Dataset):
    """CIFAR's own layout: HWC uint8 arrays, turned into PIL images per item."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def baseline_loader(data) -> DataLoader:
    images = (data.train_x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(data.mean, data.std),
        ]
    )
    dataset = Uint8Images(images, data.train_y.numpy(), transform)
    return DataLoader(
        dataset, batch_size=BATCH, shuffle=True, num_workers=2, persistent_workers=True
    )


def drain_ours(batches: DeviceBatches, generator: torch.Generator) -> None:
    for x, _ in batches.train_batches(BATCH, generator):
        x.sum()  # touch the batch, as training would


def drain_loader(loader: DataLoader) -> None:
    for x, _ in loader:
        x.sum()


def baseline_epoch(model, loader, optimizer) -> None:
    model.train()
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


if __name__ == "__main__":
    reproduce("data_path.py")
    data = cifar_shaped(NUM_IMAGES)
    batches = DeviceBatches(data, "cpu", augment=True)
    generator = torch.Generator().manual_seed(0)
    loader = baseline_loader(data)
    drain_loader(loader)  # start the workers once; persistent afterwards
    ours = min(timed(lambda: drain_ours(batches, generator)) for _ in range(3))
    theirs = min(timed(lambda: drain_loader(loader)) for _ in range(3))
    speedup = theirs / ours
    print(
        f"loading only: in-memory {NUM_IMAGES / ours:,.0f} img/s, DataLoader "
        f"{NUM_IMAGES / theirs:,.0f} img/s: {speedup:.1f}x ({verdict(speedup, 5, True)})"
    )
    torch.manual_seed(0)
    model = build_model("cnn", [16, 16, 32, 32], num_classes=10, input_size=32, in_channels=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    train_epoch(model, batches, optimizer, BATCH, generator)  # warm-up
    ours_e2e = min(
        timed(lambda: train_epoch(model, batches, optimizer, BATCH, generator)) for _ in range(2)
    )
    theirs_e2e = min(timed(lambda: baseline_epoch(model, loader, optimizer)) for _ in range(2))
    ratio = ours_e2e / theirs_e2e
    print(
        f"end-to-end epoch (cnn [16,16,32,32], {NUM_IMAGES} images): in-memory {ours_e2e:.2f}s, "
        f"DataLoader {theirs_e2e:.2f}s: {ratio:.2f}x the baseline's time "
        f"({verdict(ratio, 1.0, False)})"
    )
