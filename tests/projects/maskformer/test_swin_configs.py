"""The official Swin configs d2ext ships (configs/maskformer/*/swin: MaskFormer's 8,
configs/mask2former/*/*/swin: Mask2Former's 31 image ones; values unchanged) load
with d2ext's config and build with their real backbone settings.

Building 39 models at full size is minutes on one CPU thread, so each distinct
``MODEL.SWIN`` is built once (D2SwinTransformer, all of it) and every config's
head is built on that backbone's output shapes; the Swin-T configs build whole
(``build_model``). The parameter counts are the papers'.
"""
import functools
import glob
import os

import pytest
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.meta_arch.semantic_seg import build_sem_seg_head

from d2ext.engine import load_cfg
from d2ext.modeling.backbone.swin import D2SwinTransformer
from d2ext_projects.maskformer import MaskFormer, MSDeformAttnPixelDecoder
from tests.conftest import REPO_ROOT

CONFIGS = os.path.join(REPO_ROOT, "configs")
SWIN = sorted(
    os.path.relpath(p, CONFIGS)
    for family in ("maskformer", "mask2former")
    for p in glob.glob(os.path.join(CONFIGS, family, "**", "swin", "*.yaml"), recursive=True)
)
OPTS = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""]

# Swin-T/S/B/L: (EMBED_DIM, DEPTHS, NUM_HEADS, backbone parameters in millions)
SIZES = {
    "tiny": (96, [2, 2, 6, 2], [3, 6, 12, 24], 27.5),
    "small": (96, [2, 2, 18, 2], [3, 6, 12, 24], 48.8),
    "base": (128, [2, 2, 18, 2], [4, 8, 16, 32], 86.9),
    "large": (192, [2, 2, 18, 2], [6, 12, 24, 48], 195.2),
}
# Whole-model parameters (millions) of the papers' tables: MaskFormer (ADE20K-150
# and COCO panoptic) and Mask2Former (COCO panoptic).
PAPER_PARAMS = {
    ("maskformer", "tiny"): 42, ("maskformer", "small"): 63, ("maskformer", "base"): 102,
    ("maskformer", "large"): 212,
    ("mask2former/coco/panoptic", "tiny"): 47, ("mask2former/coco/panoptic", "small"): 69,
    ("mask2former/coco/panoptic", "base"): 107, ("mask2former/coco/panoptic", "large"): 216,
}


def _size(name: str) -> str:
    return next(s for s in SIZES if f"swin_{s}_" in name)


def _cfg(name: str):
    return load_cfg(os.path.join(CONFIGS, name), OPTS)


@functools.lru_cache(maxsize=None)
def _backbone(swin_items: tuple):
    cfg = load_cfg(os.path.join(CONFIGS, SWIN[0]), OPTS)
    for key, value in swin_items:
        cfg.MODEL.SWIN[key] = list(value) if isinstance(value, tuple) else value
    backbone = build_backbone(cfg)
    return backbone.output_shape(), sum(p.numel() for p in backbone.parameters()), len(backbone.state_dict())


def _swin_items(cfg) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.MODEL.SWIN.items()))


def test_all_official_swin_image_configs_are_here():
    assert sum(c.startswith("maskformer/") for c in SWIN) == 8
    assert sum(c.startswith("mask2former/") for c in SWIN) == 31  # the official 39 minus 8 video (YouTube-VIS)
    assert len({_size(c) for c in SWIN}) == 4


@pytest.mark.parametrize("name", SWIN)
def test_config_loads_with_swin_settings_and_builds(name):
    cfg = _cfg(name)
    size = _size(name)
    embed_dim, depths, num_heads, backbone_m = SIZES[size]
    assert cfg.MODEL.BACKBONE.NAME == "D2SwinTransformer"
    assert (cfg.MODEL.SWIN.EMBED_DIM, cfg.MODEL.SWIN.DEPTHS, cfg.MODEL.SWIN.NUM_HEADS) == (embed_dim, depths, num_heads)
    # the ImageNet weights the config names were trained with this window and input size
    window, image = (12, 384) if "384" in name else (7, 224)
    assert (cfg.MODEL.SWIN.WINDOW_SIZE, cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE) == (window, image)
    assert cfg.MODEL.WEIGHTS == "" and f"window{window}_{image}" in load_cfg(os.path.join(CONFIGS, name)).MODEL.WEIGHTS
    assert cfg.INPUT.FORMAT == "RGB" and list(cfg.MODEL.PIXEL_MEAN) == [123.675, 116.28, 103.53]

    shapes, backbone_params, _ = _backbone(_swin_items(cfg))
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        f"res{i + 2}": (embed_dim * 2 ** i, 4 * 2 ** i) for i in range(4)
    }
    assert backbone_params / 1e6 == pytest.approx(backbone_m, abs=0.1)
    head = build_sem_seg_head(cfg, shapes)
    assert head.predictor.class_embed.out_features == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES + 1
    assert isinstance(head.pixel_decoder, MSDeformAttnPixelDecoder) == name.startswith("mask2former/")
    total = (backbone_params + sum(p.numel() for p in head.parameters())) / 1e6
    for (family, paper_size), params in PAPER_PARAMS.items():
        if name.startswith(family) and paper_size == size:
            assert total == pytest.approx(params, abs=1.0), total


@pytest.mark.parametrize("name", [c for c in SWIN if "swin_tiny" in c])
def test_swin_tiny_configs_build_the_whole_model(name):
    model = build_model(_cfg(name))
    assert isinstance(model, MaskFormer) and isinstance(model.backbone, D2SwinTransformer)
    assert model.backbone.size_divisibility == 32
    keys = [k for k in model.state_dict() if k.startswith("backbone.")]
    assert len(keys) == 189 and "backbone.layers.2.blocks.5.attn.relative_position_index" in keys


def test_min_size_train_is_the_official_expression():
    """MaskFormer's copies spell out the official ``int(x * 0.1 * 640) for x in range(5, 21)``."""
    cfg = _cfg("maskformer/ade20k-150/swin/maskformer_swin_base_IN21k_384_bs16_160k_res640.yaml")
    assert list(cfg.INPUT.MIN_SIZE_TRAIN) == [int(x * 0.1 * 640) for x in range(5, 21)]
    cfg = _cfg("mask2former/ade20k/semantic-segmentation/swin/maskformer2_swin_base_384_bs16_160k_res640.yaml")
    assert list(cfg.INPUT.MIN_SIZE_TRAIN) == [int(x * 0.1 * 640) for x in range(5, 21)]
