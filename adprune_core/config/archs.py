"""The built-in architectures as descriptions: conv widths, pools and blocks, without torch.

The modules are built from these in :mod:`adprune_core.nets.models`; the analytic cost in
:mod:`adprune_core.nets.cost` counts from them alone, so ``adprune-sweep cost`` of a built-in arch
never loads torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from adprune_core.config.errors import ArchError

MAX_WIDTH = 1 << 16  # far above any real layer; keeps cost arithmetic in float range
POOL = "M"

VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "vgg13": [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "vgg16": [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL]
    + [512, 512, 512, POOL, 512, 512, 512, POOL],
    "vgg19": [64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL]
    + [512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL],
}

RESNET_BLOCKS: dict[str, list[int]] = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}
RESNET_STAGE_WIDTHS = [64, 128, 256, 512]

# A small family for CPU runs: 3x3 conv + BN + ReLU, a 2x2 max-pool after every second conv.
CNN_CONFIGS: dict[str, list[int]] = {
    "cnn2": [16, 32],
    "cnn": [32, 32, 64, 64],
    "cnn6": [32, 32, 64, 64, 128, 128],
}


def pool_fits(size: int) -> bool:
    # Tiny inputs (8x8 digits) run out of resolution before the last pools of a VGG;
    # a pool that would shrink below 1x1 is skipped, in the cost model too.
    return size >= 2


def cnn_layout(num_layers: int) -> list[int | str]:
    layout: list[int | str] = []
    for i in range(num_layers):
        layout.append(i)
        if i % 2 == 1:
            layout.append(POOL)
    return layout


def vgg_layout(cfg: Sequence[int | str]) -> list[int | str]:
    layout: list[int | str] = []
    index = 0
    for item in cfg:
        if item == POOL:
            layout.append(POOL)
        else:
            layout.append(index)
            index += 1
    return layout


def resnet_default_widths(blocks_per_stage: Sequence[int]) -> tuple[int, ...]:
    widths = [RESNET_STAGE_WIDTHS[0]]
    for stage, count in enumerate(blocks_per_stage):
        widths += [RESNET_STAGE_WIDTHS[stage]] * (2 * count)
    return tuple(widths)


def builtin_family(arch: str) -> str | None:
    """``vgg``, ``resnet`` or ``cnn`` for a built-in arch; None for anything else."""
    if arch in VGG_CONFIGS:
        return "vgg"
    if arch in RESNET_BLOCKS:
        return "resnet"
    if arch in CNN_CONFIGS:
        return "cnn"
    return None


def builtin_default_widths(arch: str) -> tuple[int, ...]:
    family = builtin_family(arch)
    if family == "vgg":
        return tuple(w for w in VGG_CONFIGS[arch] if w != POOL)  # type: ignore[misc]
    if family == "resnet":
        return resnet_default_widths(RESNET_BLOCKS[arch])
    if family == "cnn":
        return tuple(CNN_CONFIGS[arch])
    raise ArchError(f"{arch} is not a built-in arch")


def layout_for(arch: str) -> list[int | str]:
    """Conv indices and pools, in order, for the plain (VGG / cnn) families."""
    family = builtin_family(arch)
    if family == "vgg":
        return vgg_layout(VGG_CONFIGS[arch])
    if family == "cnn":
        return cnn_layout(len(CNN_CONFIGS[arch]))
    raise ArchError(f"{arch} is not a plain conv stack")


def validate_widths(arch: str, expected: Sequence[int], widths: Sequence[int] | None) -> list[int]:
    """The widths to build (``expected`` when None), or a one-line :class:`ArchError`."""
    if widths is None:
        return list(expected)
    widths = list(widths)
    if len(widths) != len(expected):
        raise ArchError(f"{arch} has {len(expected)} prunable layers, got {len(widths)} widths")
    for i, w in enumerate(widths):
        if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= MAX_WIDTH:
            raise ArchError(
                f"width {i} of {arch} must be an integer in [1, {MAX_WIDTH}], got {str(w)[:20]}"
            )
    return widths
