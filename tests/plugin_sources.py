"""A plugin package written outside the repository (into a test's tmp_path): a small
width-parameterised network, a dataset loader, and broken variants of both."""

from pathlib import Path

NETS = '''
import torch
from torch import nn

from adprune_core.nets import LayerReLU


class TinyNet(nn.Module):
    """Strided conv, 3x3 conv, 1x1 conv with bias; global pool; linear head."""

    def __init__(self, widths, num_classes, in_channels):
        super().__init__()
        a, b, c = widths
        self.stem = nn.Conv2d(in_channels, a, 3, stride=2, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(a)
        self.stem_relu = LayerReLU()
        self.mid = nn.Conv2d(a, b, 3, padding=1, bias=False)
        self.mid_bn = nn.BatchNorm2d(b)
        self.mid_relu = LayerReLU()
        self.mix = nn.Conv2d(b, c, 1)
        self.mix_relu = LayerReLU()
        self.fc = nn.Linear(c, num_classes)
        self.channel_groups = {
            "stem": (None, 0), "stem_bn": (0, 0), "mid": (0, 1), "mid_bn": (1, 1),
            "mix": (1, 2), "fc": (2, None),
        }

    def forward(self, x):
        x = self.stem_relu(self.stem_bn(self.stem(x)))
        x = self.mid_relu(self.mid_bn(self.mid(x)))
        x = self.mix_relu(self.mix(x))
        return self.fc(x.mean(dim=(2, 3)))


def build(widths, num_classes, in_channels, input_size):
    return TinyNet(widths, num_classes, in_channels)


build.default_widths = [8, 12, 16]


def build_no_groups(widths, num_classes, in_channels, input_size):
    net = TinyNet(widths, num_classes, in_channels)
    del net.channel_groups
    return net


build_no_groups.default_widths = [8, 12, 16]


def raises(widths, num_classes, in_channels, input_size):
    raise RuntimeError("widths not supported\\nsecond line")


raises.default_widths = [8, 12, 16]


def two_relus(widths, num_classes, in_channels, input_size):
    net = TinyNet(widths, num_classes, in_channels)
    net.mix_relu = nn.ReLU()
    return net


two_relus.default_widths = [8, 12, 16]


def fixed_widths(widths, num_classes, in_channels, input_size):
    return TinyNet([8, 12, 16], num_classes, in_channels)


fixed_widths.default_widths = [8, 12, 16]


def wrong_output(widths, num_classes, in_channels, input_size):
    return TinyNet(widths, num_classes + 1, in_channels)


wrong_output.default_widths = [8, 12, 16]


def no_defaults(widths, num_classes, in_channels, input_size):
    return TinyNet(widths, num_classes, in_channels)
'''

DATA = """
import torch

SIZE, CLASSES = 12, 3


def _split(n, generator, prototypes):
    labels = torch.arange(n) % CLASSES
    noise = torch.randint(0, 60, (n, 3, SIZE, SIZE), generator=generator)
    images = (prototypes[labels] + noise).clamp(0, 255).to(torch.uint8)
    return images, labels.to(torch.int64)


def load(root, seed):
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.randint(0, 196, (CLASSES, 3, SIZE, SIZE), generator=generator)
    train_x, train_y = _split(96, generator, prototypes)
    test_x, test_y = _split(48, generator, prototypes)
    return train_x, train_y, test_x, test_y, CLASSES


# load, leaving the loading process's id in ROOT/loads.txt
def counted(root, seed):
    import os
    from pathlib import Path

    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / "loads.txt", "a") as loads:
        loads.write(f"{os.getpid()}\\n")
    return load(root, seed)


def int32_labels():
    train_x, train_y, test_x, test_y, classes = load("data", 0)
    return train_x, train_y.to(torch.int32), test_x, test_y, classes


def flat_images():
    train_x, train_y, test_x, test_y, classes = load("data", 0)
    return train_x.flatten(1), train_y, test_x, test_y, classes


def four_things():
    return load("data", 0)[:4]


def label_out_of_range():
    train_x, train_y, test_x, test_y, classes = load("data", 0)
    return train_x, train_y + 1, test_x, test_y, classes
"""

ENTRY_POINTS = """
[adprune_sweep.models]
tiny = tinyplug.nets:build

[adprune_sweep.datasets]
tinydata = tinyplug.data:load
"""

BROKEN = """
import a_module_that_is_not_there  # noqa
"""


def write_plugin(folder: Path) -> Path:
    """The package ``tinyplug`` under ``folder/src``; returns the folder to put on sys.path."""
    src = folder / "src"
    package = src / "tinyplug"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(NETS)
    (package / "data.py").write_text(DATA)
    (package / "broken.py").write_text(BROKEN)
    # Installed-package metadata on the same path: the entry points a `pip install` would add.
    dist = src / "tinyplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    return src


def tinynet_cost(widths, num_classes, in_channels, input_size):
    """(params, MACs) of TinyNet counted by hand, independently of any counter."""
    a, b, c = widths
    size = (input_size + 2 - 3) // 2 + 1  # the stride-2 stem
    macs = size * size * (9 * in_channels * a + 9 * a * b + b * c) + c * num_classes
    params = 9 * in_channels * a + 2 * a + 9 * a * b + 2 * b + b * c + c
    params += c * num_classes + num_classes
    return params, macs
