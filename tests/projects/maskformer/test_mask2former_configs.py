"""Every Mask2Former image config d2ext ships (configs/mask2former: the official
non-Swin ones, values unchanged, and the toy ones) loads with d2ext's config
and builds Mask2Former: the deformable pixel decoder and the masked-attention
decoder, with the config's classes and layers."""
import glob
import os

import pytest
import torch
from detectron2.modeling import build_model

from d2ext.data.mapper import CommonDatasetMapper
from d2ext.engine import load_cfg
from d2ext_projects.maskformer import MSDeformAttnPixelDecoder, MultiScaleMaskedTransformerDecoder
from tests.conftest import REPO_ROOT
from tests.projects.maskformer.conftest import TINY

ROOT = os.path.join(REPO_ROOT, "configs", "mask2former")
CONFIGS = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-") and "swin" not in p.split(os.sep)  # Swin: test_swin_configs.py
)


def test_the_official_image_configs_are_all_here():
    official = [c for c in CONFIGS if not c.startswith("toy")]
    assert len(official) == 16, official  # 26 official non-Swin image config files, 10 of them Base-*


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_builds_mask2former(name):
    cfg = load_cfg(os.path.join(ROOT, name), ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    head = build_model(cfg).sem_seg_head
    assert isinstance(head.pixel_decoder, MSDeformAttnPixelDecoder)
    assert isinstance(head.predictor, MultiScaleMaskedTransformerDecoder)
    assert head.predictor.class_embed.out_features == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES + 1
    assert len(head.predictor.transformer_cross_attention_layers) == cfg.MODEL.MASK_FORMER.DEC_LAYERS - 1


def test_mask2former_trains_with_binary_cross_entropy_maskformer_with_focal():
    from d2ext.engine import Trainer, load_cfg

    from tests.conftest import REPO_ROOT

    for config, loss in (("configs/mask2former/toy/maskformer2_R18_toy_panoptic.yaml", "bce"),
                         ("configs/maskformer/toy/maskformer_R18_toy_panoptic.yaml", "focal")):
        model = Trainer.build_model(load_cfg(os.path.join(REPO_ROOT, config), ["MODEL.DEVICE", "cpu"]))
        assert model.criterion.mask_loss == loss and model.criterion.matcher.mask_loss == loss


@pytest.mark.parametrize(
    "ablation",
    [[], ["MODEL.MASK_FORMER.MASKED_ATTENTION", "False"], ["MODEL.MASK_FORMER.SINGLE_SCALE_LEVEL", "0"],
     ["MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "0"]],
    ids=["mask2former", "no_masked_attention", "single_scale", "dense_losses"],
)
def test_toy_config_trains_with_each_ablation_switch(small_toy, ablation):
    """One training step of the (narrowed) toy Mask2Former with each ablation: finite
    losses for every decoder layer and gradients into every cross-attention layer."""
    torch.manual_seed(0)
    cfg = load_cfg(os.path.join(ROOT, "toy", "maskformer2_R18_toy_panoptic.yaml"),
                   TINY + ["MODEL.DEVICE", "cpu", "MODEL.MASK_FORMER.DEC_LAYERS", "4"] + ablation)
    model = build_model(cfg).train()
    mapper = CommonDatasetMapper(cfg, is_train=True)
    losses = model([mapper(d) for d in small_toy["toy_panoptic_train"][:2]])
    assert len([k for k in losses if k.startswith("loss_mask")]) == 4  # 3 layers + the learnable queries
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for layer in model.sem_seg_head.predictor.transformer_cross_attention_layers:
        assert layer.multihead_attn.in_proj_weight.grad.abs().sum() > 0
