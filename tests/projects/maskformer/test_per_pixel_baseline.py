"""MaskFormer's per-pixel baselines in detectron2's SemanticSegmentor: losses in
training (one per decoder layer for the "plus" head), logits at the input size
at inference, and the one-query-per-class rule named in its error."""
import os

import pytest
import torch
from detectron2.modeling import build_model

from d2ext.engine import load_cfg
from tests.projects.maskformer.conftest import CONFIGS

TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STEM_OUT_CHANNELS", "8",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "8", "MODEL.RESNETS.WIDTH_PER_GROUP", "1",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32", "MODEL.SEM_SEG_HEAD.MASK_DIM", "16",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "5",
    "MODEL.MASK_FORMER.HIDDEN_DIM", "16", "MODEL.MASK_FORMER.NHEADS", "2",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "32", "MODEL.MASK_FORMER.DEC_LAYERS", "3",
]
PLAIN = os.path.join(CONFIGS, "ade20k-150", "per_pixel_baseline_R50_bs16_160k.yaml")
PLUS = os.path.join(CONFIGS, "ade20k-150", "per_pixel_baseline_plus_R50_bs16_160k.yaml")


def _inputs():
    gen = torch.Generator().manual_seed(0)
    return [
        {"image": torch.randint(0, 256, (3, 64, 96), generator=gen, dtype=torch.uint8),
         "sem_seg": torch.randint(0, 5, (64, 96), generator=gen), "height": 32, "width": 48}
        for _ in range(2)
    ]


@pytest.mark.parametrize("config, losses", [(PLAIN, 1), (PLUS, 3)])
def test_train_losses_and_inference_logits(config, losses):
    torch.manual_seed(0)
    model = build_model(load_cfg(config, TINY))
    out = model(_inputs())
    assert sorted(out) == ["loss_sem_seg"] + [f"loss_sem_seg_{i}" for i in range(losses - 1)]
    total = sum(out.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.sem_seg_head.pixel_decoder.mask_features.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        results = model(_inputs())
    assert results[0]["sem_seg"].shape == (5, 32, 48)


def test_plus_head_needs_one_query_per_class():
    cfg = load_cfg(PLUS, TINY + ["MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "7"])
    with pytest.raises(ValueError, match="NUM_OBJECT_QUERIES=7.*NUM_CLASSES=5"):
        build_model(cfg)
