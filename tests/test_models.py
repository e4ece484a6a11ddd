import pytest
import torch

from adprune_core.config import ArchError
from adprune_core.nets import ARCHS, LayerReLU, build_model, default_widths, inherit_filters

# Published parameter counts of the kuangliu/pytorch-cifar models the paper used (CIFAR-10).
# Our convs carry no bias (BN follows), so VGG-19 is 20,040,522 minus one bias per filter.
KUANGLIU_RESNET18_PARAMS = 11_173_962
KUANGLIU_VGG19_PARAMS = 20_040_522


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet18_matches_published_parameter_count():
    assert n_params(build_model("resnet18")) == KUANGLIU_RESNET18_PARAMS


def test_vgg19_matches_published_count_without_conv_bias():
    widths = default_widths("vgg19")
    assert n_params(build_model("vgg19")) == KUANGLIU_VGG19_PARAMS - sum(widths)


@pytest.mark.parametrize(
    ("arch", "layers"),
    [("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19", 16), ("resnet18", 17), ("resnet34", 33)],
)
def test_prunable_layer_counts(arch, layers):
    assert len(default_widths(arch)) == layers
    model = build_model(arch, num_classes=10, input_size=8)
    assert len(model.prunable_relus()) == layers
    assert all(type(m) is LayerReLU for m in model.prunable_relus())


def test_unknown_arch_lists_known_ones():
    with pytest.raises(ArchError) as err:
        build_model("alexnet")
    for name in ("vgg19", "resnet18", "cnn"):
        assert name in str(err.value)


@pytest.mark.parametrize("widths", [[8, 8, 8], [8, 0, 8, 8], [8, -2, 8, 8], [8, 8.5, 8, 8]])
def test_bad_widths_rejected(widths):
    with pytest.raises(ArchError):
        build_model("cnn", widths)


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize(("size", "channels"), [(8, 1), (32, 3)])
def test_forward_at_random_widths(arch, size, channels):
    gen = torch.Generator().manual_seed(len(arch) + size)
    widths = [int(w) for w in torch.randint(1, 9, (len(default_widths(arch)),), generator=gen)]
    model = build_model(arch, widths, num_classes=7, input_size=size, in_channels=channels)
    out = model.eval()(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    relu_channels = []
    hooks = [
        r.register_forward_hook(lambda m, i, o: relu_channels.append(o.shape[1]))
        for r in model.prunable_relus()
    ]
    model(torch.randn(1, channels, size, size))
    for h in hooks:
        h.remove()
    assert relu_channels == widths


def test_resnet_projection_only_where_shapes_differ():
    widths = default_widths("resnet18")
    model = build_model("resnet18", widths)
    projections = [len(block.shortcut) > 0 for block in model.blocks]
    # Default widths: only the first block of stages 2-4 changes shape (stride 2, wider).
    assert projections == [False, False, True, False, True, False, True, False]
    widths[2] = 40  # block 0 now outputs 40 channels from a 64-channel input
    model = build_model("resnet18", widths)
    assert len(model.blocks[0].shortcut) > 0
    assert len(model.blocks[1].shortcut) > 0  # 40 in, 64 out


def test_inherit_copies_a_consistent_subset_of_filters():
    torch.manual_seed(0)
    parent = build_model("cnn2", [6, 5], num_classes=3, input_size=8, in_channels=1)
    child = build_model("cnn2", [3, 2], num_classes=3, input_size=8, in_channels=1)
    inherit_filters(parent, child, torch.Generator().manual_seed(1))
    p_conv0, p_conv1 = parent.features[0].weight, parent.features[3].weight
    c_conv0, c_conv1 = child.features[0].weight, child.features[3].weight
    # Each child filter of layer 0 is one parent filter, and distinct ones.
    kept0 = [next(j for j in range(6) if torch.equal(c_conv0[i], p_conv0[j])) for i in range(3)]
    assert len(set(kept0)) == 3
    kept1 = [
        next(j for j in range(5) if torch.equal(c_conv1[i], p_conv1[j][kept0])) for i in range(2)
    ]
    assert len(set(kept1)) == 2
    assert torch.equal(child.head.weight, parent.head.weight[:, kept1])
    assert torch.equal(child.head.bias, parent.head.bias)


def test_inherit_resnet_keeps_shapes():
    parent = build_model("resnet18", num_classes=5, input_size=8)
    widths = [max(1, w // 4) for w in default_widths("resnet18")]
    child = build_model("resnet18", widths, num_classes=5, input_size=8)
    inherit_filters(parent, child, torch.Generator().manual_seed(0))
    assert child.eval()(torch.randn(2, 3, 8, 8)).shape == (2, 5)


def test_the_cli_catalog_names_every_registered_arch():
    from adprune_core.config import BUILTIN_ARCHS

    assert sorted(BUILTIN_ARCHS) == sorted(ARCHS)


def test_registering_an_arch_name_twice_is_an_error():
    from adprune_core.nets import register_arch

    before = dict(ARCHS)
    with pytest.raises(ArchError, match="'vgg19' is already registered"):
        register_arch(ARCHS["cnn"].__class__("vgg19", "cnn", (4,), ARCHS["cnn"].builder))
    assert before == ARCHS  # the built-in vgg19 was not replaced


def test_builders_take_the_data_shape_by_keyword_only():
    with pytest.raises(TypeError):
        build_model("cnn2", [4, 6], 10, 8, 1)  # positional shape arguments could be swapped
    model = build_model("cnn2", [4, 6], num_classes=3, input_size=8, in_channels=2)
    assert model(torch.zeros(5, 2, 8, 8)).shape == (5, 3)
