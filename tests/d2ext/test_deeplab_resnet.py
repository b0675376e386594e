"""build_resnet_deeplab_backbone (d2ext.modeling.backbone.deeplab_resnet): strides and
channels per stem type and dilation, res5 multi-grid dilations, the DeepLab stem against
a functional reference, equality with detectron2's ResNet where the two must agree,
the config keys' defaults, and errors naming the key."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone
from detectron2.modeling.backbone.resnet import BasicStem

import d2ext  # noqa: F401  (registers the backbone)
from d2ext.config import add_d2ext_config, get_cfg
from d2ext.modeling.backbone.deeplab_resnet import DeepLabStem, build_resnet_deeplab_backbone

# a narrow ResNet-50 (same block counts, 1/8 of the channels): fast on one CPU thread
NARROW = [
    "MODEL.BACKBONE.NAME", "build_resnet_deeplab_backbone",
    "MODEL.RESNETS.DEPTH", "50",
    "MODEL.RESNETS.WIDTH_PER_GROUP", "8",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "32",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "16",
    "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']",
    "MODEL.BACKBONE.FREEZE_AT", "0",
]
FEATURES = ("res2", "res3", "res4", "res5")
CHANNELS = {"res2": 32, "res3": 64, "res4": 128, "res5": 256}


def make_cfg(*opts):
    cfg = get_cfg()
    cfg.merge_from_list(NARROW + list(opts))
    return cfg


def build(*opts):
    torch.manual_seed(0)
    return build_backbone(make_cfg(*opts)).eval()


def randomize(model: torch.nn.Module, seed: int = 1) -> dict:
    """Random values for every parameter and norm statistic (variances positive)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in model.state_dict().items():
        r = torch.rand(v.shape, generator=g) if k.endswith("running_var") else torch.randn(v.shape, generator=g)
        state[k] = (r + 0.5 if k.endswith("running_var") else r * 0.1).to(v.dtype)
    return state


def test_registered_and_config_defaults_are_deeplabs():
    assert BACKBONE_REGISTRY.get("build_resnet_deeplab_backbone") is build_resnet_deeplab_backbone
    r = get_cfg().MODEL.RESNETS
    assert (r.STEM_TYPE, r.RES4_DILATION, list(r.RES5_MULTI_GRID)) == ("deeplab", 1, [1, 2, 4])


def test_existing_values_of_the_keys_are_kept():
    from detectron2.config import get_cfg as detectron2_get_cfg

    cfg = detectron2_get_cfg()
    cfg.MODEL.RESNETS.STEM_TYPE = "basic"
    cfg.MODEL.RESNETS.RES4_DILATION = 2
    cfg.MODEL.RESNETS.RES5_MULTI_GRID = [1, 1, 1]
    add_d2ext_config(cfg)
    r = cfg.MODEL.RESNETS
    assert (r.STEM_TYPE, r.RES4_DILATION, list(r.RES5_MULTI_GRID)) == ("basic", 2, [1, 1, 1])


@pytest.mark.parametrize(
    "opts, strides",
    [
        ([], (4, 8, 16, 32)),
        (["MODEL.RESNETS.RES5_DILATION", "2"], (4, 8, 16, 16)),
        (["MODEL.RESNETS.RES4_DILATION", "2", "MODEL.RESNETS.RES5_DILATION", "4"], (4, 8, 8, 8)),
    ],
)
@pytest.mark.parametrize("stem", ["deeplab", "basic"])
def test_output_strides_and_channels(stem, opts, strides):
    model = build("MODEL.RESNETS.STEM_TYPE", stem, *opts)
    assert type(model.stem) is (DeepLabStem if stem == "deeplab" else BasicStem)
    shapes = model.output_shape()
    assert {f: (shapes[f].stride, shapes[f].channels) for f in FEATURES} == {
        f: (s, CHANNELS[f]) for f, s in zip(FEATURES, strides)
    }
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert {f: tuple(out[f].shape) for f in FEATURES} == {
        f: (1, CHANNELS[f], 64 // s, 96 // s) for f, s in zip(FEATURES, strides)
    }


@pytest.mark.parametrize("res5_dilation, grid", [(1, [1, 2, 4]), (2, [1, 2, 4]), (4, [1, 1, 1]), (2, [3, 1, 2])])
def test_res5_dilations_are_res5_dilation_times_multi_grid(res5_dilation, grid):
    model = build("MODEL.RESNETS.RES5_DILATION", str(res5_dilation), "MODEL.RESNETS.RES5_MULTI_GRID", str(grid))
    expected = [res5_dilation * m for m in grid]
    assert [block.conv2.dilation for block in model.res5] == [(d, d) for d in expected]
    assert [block.conv2.padding for block in model.res5] == [(d, d) for d in expected]  # size kept
    # res2..res4 are not dilated (RES4_DILATION 1)
    assert {b.conv2.dilation for s in (model.res2, model.res3, model.res4) for b in s} == {(1, 1)}


def test_deeplab_stem_names_and_forward_against_functional_reference():
    model = build("MODEL.RESNETS.STEM_TYPE", "deeplab")
    names = {k: tuple(v.shape) for k, v in model.stem.state_dict().items()}
    assert names == {
        "conv1.weight": (8, 3, 3, 3), "conv2.weight": (8, 8, 3, 3), "conv3.weight": (16, 8, 3, 3),
        **{f"conv{i}.norm.{s}": (c,) for i, c in ((1, 8), (2, 8), (3, 16))
           for s in ("weight", "bias", "running_mean", "running_var")},
    }
    state = randomize(model.stem)
    model.stem.load_state_dict(state)
    x = torch.randn(2, 3, 33, 50)
    ref = x
    for i, stride in ((1, 2), (2, 1), (3, 1)):
        p = f"conv{i}."
        ref = F.conv2d(ref, state[p + "weight"], stride=stride, padding=1)
        ref = F.batch_norm(ref, state[p + "norm.running_mean"], state[p + "norm.running_var"],
                           state[p + "norm.weight"], state[p + "norm.bias"], training=False, eps=1e-5)
        ref = F.relu(ref)
    ref = F.max_pool2d(ref, kernel_size=3, stride=2, padding=1)
    with torch.no_grad():
        out = model.stem(x)
    assert out.shape == (2, 16, 9, 13)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("res5_dilation", [1, 2])
def test_basic_stem_without_multi_grid_equals_detectron2_resnet(res5_dilation):
    opts = ["MODEL.RESNETS.STEM_TYPE", "basic", "MODEL.RESNETS.RES5_MULTI_GRID", "[1, 1, 1]",
            "MODEL.RESNETS.RES5_DILATION", str(res5_dilation)]
    ours = build(*opts)
    theirs = build(*opts, "MODEL.BACKBONE.NAME", "build_resnet_backbone")
    assert type(theirs).__name__ == "ResNet" and theirs is not ours
    state = randomize(theirs)
    assert set(ours.state_dict()) == set(state)
    ours.load_state_dict(state)
    theirs.load_state_dict(state)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert set(a) == set(b) == set(FEATURES)
    for f in FEATURES:
        assert a[f].abs().max() > 0
        torch.testing.assert_close(a[f], b[f], rtol=1e-5, atol=1e-5)


def test_multi_grid_changes_the_output():
    """The equality above is not vacuous: a multi-grid res5 differs from detectron2's."""
    ours = build("MODEL.RESNETS.STEM_TYPE", "basic", "MODEL.RESNETS.RES5_MULTI_GRID", "[1, 2, 4]")
    theirs = build("MODEL.RESNETS.STEM_TYPE", "basic", "MODEL.BACKBONE.NAME", "build_resnet_backbone")
    state = randomize(theirs)
    ours.load_state_dict(state)
    theirs.load_state_dict(state)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    torch.testing.assert_close(a["res4"], b["res4"])
    assert not torch.allclose(a["res5"], b["res5"], atol=1e-3)


def test_only_stages_up_to_the_last_output_are_built():
    model = build("MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4']")
    assert [name for name, _ in model.named_children()] == ["stem", "res2", "res3", "res4"]


def test_freeze_at_freezes_the_deeplab_stem():
    model = build("MODEL.BACKBONE.FREEZE_AT", "2")
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert not any(p.requires_grad for p in model.res2.parameters())
    assert all(p.requires_grad for p in model.res3.parameters())


@pytest.mark.parametrize(
    "opts, key",
    [
        (["MODEL.RESNETS.STEM_TYPE", "resnet"], "MODEL.RESNETS.STEM_TYPE='resnet'"),
        (["MODEL.RESNETS.RES5_MULTI_GRID", "[1, 2]"], "MODEL.RESNETS.RES5_MULTI_GRID=[1, 2]"),
        (["MODEL.RESNETS.RES5_DILATION", "3"], "MODEL.RESNETS.RES5_DILATION=3"),
        (["MODEL.RESNETS.RES4_DILATION", "4"], "MODEL.RESNETS.RES4_DILATION=4"),
        (["MODEL.RESNETS.RES4_DILATION", "2", "MODEL.RESNETS.RES5_DILATION", "2"], "MODEL.RESNETS.RES5_DILATION=4"),
        (["MODEL.RESNETS.DEPTH", "18"], "MODEL.RESNETS.DEPTH=18"),
    ],
)
def test_bad_keys_raise_naming_the_key(opts, key):
    with pytest.raises(ValueError) as info:
        build_resnet_deeplab_backbone(make_cfg(*opts), ShapeSpec(channels=3))
    assert key in str(info.value)
