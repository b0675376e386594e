"""ICNet's structure and shapes: the cascade, odd input sizes, inference without
the auxiliary classifiers, both variants."""
import glob
import os

import pytest
import torch
from torch import nn

from d2ext.config import get_cfg
from d2ext.engine import Trainer, load_cfg
from d2ext_projects.icnet import CascadeFeatureFusion, PyramidPooling, add_icnet_config, dilate_stage

from .conftest import REPO_ROOT, build_model


def _count_calls(modules):
    counts = {name: 0 for name in modules}
    for name, module in modules.items():
        module.register_forward_hook(lambda m, i, o, name=name: counts.__setitem__(name, counts[name] + 1))
    return counts


def test_config_defaults_are_the_paper():
    cfg = get_cfg()
    ic = cfg.MODEL.ICNET
    assert ic.LOW_BRANCH_INPUT == "image" and ic.PPM_MODE == "concat"
    assert list(ic.PPM_BINS) == [1, 2, 3, 6] and list(ic.LOSS_WEIGHTS) == [0.4, 0.4, 1.0]
    # add_icnet_config only adds its own namespace
    plain = get_cfg()
    add_icnet_config(plain)
    assert plain.dump() == cfg.dump()


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "icnet", "*", "*.yaml"))))
def test_every_config_loads(path):
    cfg = load_cfg(path, ["MODEL.WEIGHTS", ""])
    if os.path.basename(path).startswith("Base-"):
        return
    assert cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor"
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == (19 if "cityscapes" in path else 5)


def test_cityscapes_pairs_build_with_the_same_resnet():
    for depth in (18, 50):
        models = [
            Trainer.build_model(load_cfg(
                os.path.join(REPO_ROOT, "configs", "icnet", "cityscapes", f"{name}_R{depth}_cityscapes.yaml"),
                ["MODEL.WEIGHTS", ""],
            ))
            for name in ("icnet", "semantic_fpn")
        ]
        resnets = [models[0].backbone.resnet, models[1].backbone.bottom_up]
        shapes = [{k: v.shape for k, v in r.state_dict().items()} for r in resnets]
        assert shapes[0] == shapes[1]  # same ResNet, so the same checkpoint loads into both


def test_dilation_keeps_weights_and_output_stride_8(variant):
    _, model = build_model(variant)
    r = model.backbone.resnet
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        out = r.res5(r.res4(r.res3(r.res2(r.stem(x)))))
    assert out.shape[-2:] == (8, 12)
    conv = r.res5[1].conv1
    assert conv.dilation == (4, 4) and conv.padding == (4, 4) and conv.stride == (1, 1)
    assert r.res4[0].conv1.dilation == (2, 2) and r.res4[0].shortcut.stride == (1, 1)


def test_dilate_stage_on_a_plain_stage():
    stage = nn.Sequential(nn.Sequential(nn.Conv2d(2, 2, 3, stride=2, padding=1), nn.Conv2d(2, 2, 1)))
    stage[0].stride = 2
    weight = stage[0][0].weight.clone()
    dilate_stage(stage, 3)
    assert stage[0][0].stride == (1, 1) and stage[0][0].dilation == (3, 3)
    assert stage[0][1].dilation == (1, 1) and torch.equal(stage[0][0].weight, weight)
    assert stage(torch.rand(1, 2, 7, 9)).shape == (1, 2, 7, 9)


def test_dilate_stage_rejects_deformable_blocks():
    class DeformBlock(nn.Module):
        stride = 2

    with pytest.raises(ValueError, match="deformable"):
        dilate_stage(nn.Sequential(DeformBlock()), 2)


@pytest.mark.parametrize("mode", ["concat", "sum"])
def test_pyramid_pooling_shapes(mode):
    ppm = PyramidPooling(16, 8, bins=(1, 2, 3, 6), mode=mode).eval()
    for size in [(3, 5), (8, 12), (1, 1)]:
        assert ppm(torch.rand(2, 16, *size)).shape == (2, 8, *size)
    assert (ppm.reduce is None) == (mode == "sum")


def test_cff_unit_shapes():
    cff = CascadeFeatureFusion(low_channels=12, high_channels=6, out_channels=10, num_classes=4).eval()
    fused, low_up = cff(torch.rand(2, 12, 5, 7), torch.rand(2, 6, 10, 14))
    assert fused.shape == (2, 10, 10, 14) and low_up.shape == (2, 12, 10, 14)
    assert (fused >= 0).all()  # ReLU after the sum
    assert cff.conv_low.dilation == (2, 2) and cff.conv_low.kernel_size == (3, 3)
    assert cff.conv_high.kernel_size == (1, 1)


def test_backbone_feature_shapes(variant):
    cfg, model = build_model(variant)
    with torch.no_grad():
        feats = model.backbone(torch.rand(2, 3, 96, 160))
    res3 = model.backbone.resnet.res3[-1].out_channels
    assert feats["low"].shape == (2, cfg.MODEL.ICNET.LOW_CHANNELS, 3, 5)
    assert feats["medium"].shape == (2, res3, 6, 10)
    assert feats["high"].shape == (2, cfg.MODEL.ICNET.HIGH_CHANNELS[-1], 12, 20)
    with pytest.raises(ValueError, match="divisible by 32"):
        model.backbone(torch.rand(1, 3, 95, 160))


def test_the_cascade_runs_the_resnet_on_the_right_images(variant):
    """Image cascade: the stem sees the 1/2 and the 1/4 image; feature variant:
    only the 1/2 image, and res4 continues from res3 at 1/32 either way."""
    _, model = build_model(variant)
    r = model.backbone.resnet
    sizes = {"stem": [], "res4": []}
    r.stem.register_forward_hook(lambda m, i, o: sizes["stem"].append(tuple(i[0].shape[-2:])))
    r.res4.register_forward_hook(lambda m, i, o: sizes["res4"].append(tuple(i[0].shape[-2:])))
    with torch.no_grad():
        model.backbone(torch.rand(1, 3, 128, 192))
    assert sizes["stem"] == ([(64, 96), (32, 48)] if variant == "image" else [(64, 96)])
    assert sizes["res4"] == [(4, 6)]


@pytest.mark.parametrize("size", [(65, 97), (31, 33), (1, 1)])
def test_output_has_the_original_size(variant, size):
    _, model = build_model(variant)
    batch = [{"image": torch.rand(3, *size) * 255}, {"image": torch.rand(3, 50, 70) * 255}]
    with torch.no_grad():
        out = model(batch)
    assert out[0]["sem_seg"].shape == (5, *size)
    assert out[1]["sem_seg"].shape == (5, 50, 70)
    assert torch.isfinite(out[0]["sem_seg"]).all()


def test_output_resized_to_height_width():
    """A test-time resized image (e.g. 0.5x) comes back at its original height x width."""
    _, model = build_model()
    with torch.no_grad():
        (out,) = model([{"image": torch.rand(3, 51, 77) * 255, "height": 101, "width": 153}])
    assert out["sem_seg"].shape == (5, 101, 153)


def test_aux_classifiers_run_in_training_only(variant):
    _, model = build_model(variant)
    head = model.sem_seg_head
    counts = _count_calls({
        "aux_16": head.cff_medium.aux_classifier,
        "aux_8": head.cff_high.aux_classifier,
        "final": head.classifier,
    })
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 64) * 255}])
    assert counts == {"aux_16": 0, "aux_8": 0, "final": 1}
    assert list(out[0]) == ["sem_seg"]

    model.train()
    batch = [{"image": torch.rand(3, 32, 32) * 255, "sem_seg": torch.randint(0, 5, (32, 32))}
             for _ in range(2)]
    losses = model(batch)
    assert counts == {"aux_16": 1, "aux_8": 1, "final": 2}
    assert set(losses) == {"loss_guidance_1_16", "loss_guidance_1_8", "loss_sem_seg"}
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_training_on_odd_sizes_with_ignore_everywhere():
    _, model = build_model(train=True)
    batch = [
        {"image": torch.rand(3, 45, 71) * 255, "sem_seg": torch.full((45, 71), 255)},
        {"image": torch.rand(3, 33, 90) * 255, "sem_seg": torch.full((33, 90), 255)},
    ]
    losses = model(batch)
    assert all(v.item() == 0.0 for v in losses.values())
