"""Mask2Former's dataset mapper names: large-scale jitter for the *_lsj mappers
(augmentations.py), instance targets for the instance mappers."""
import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, ImageList, Instances, PolygonMasks

from d2ext.data.mapper import CommonDatasetMapper
from d2ext.engine import load_cfg
from d2ext.model_io import model_targets, model_train_augmentations
from tests.projects.maskformer.conftest import TINY, TOY_PANOPTIC

LSJ = ["INPUT.DATASET_MAPPER_NAME", "coco_panoptic_lsj", "INPUT.IMAGE_SIZE", "128"]


def test_lsj_mapper_names_select_large_scale_jitter():
    cfg = load_cfg(TOY_PANOPTIC, TINY + LSJ + ["INPUT.MIN_SCALE", "0.5", "INPUT.MAX_SCALE", "1.5"])
    augs = model_train_augmentations(cfg)
    assert [type(a) for a in augs] == [T.RandomFlip, T.ResizeScale, T.FixedSizeCrop]
    assert (augs[1].min_scale, augs[1].max_scale, augs[1].target_height) == (0.5, 1.5, 128)
    assert augs[2].crop_size == (128, 128)
    # the other mappers keep the common augmentations from INPUT.*
    plain = load_cfg(TOY_PANOPTIC, TINY)
    assert model_train_augmentations(plain) is None
    no_flip = load_cfg(TOY_PANOPTIC, TINY + LSJ + ["INPUT.RANDOM_FLIP", "none"])
    assert [type(a) for a in model_train_augmentations(no_flip)] == [T.ResizeScale, T.FixedSizeCrop]


@pytest.mark.parametrize("scale, expected_hw", [(2.0, (128, 128)), (0.25, (32, 32))])
def test_lsj_mapper_crops_large_and_keeps_small_images(small_toy, scale, expected_hw):
    """The 256 x 256 toy image fitted to scale x 128: cropped to 128 when larger,
    left smaller (the batch pads it) when smaller; segments follow the image."""
    opts = TINY + LSJ + ["INPUT.MIN_SCALE", str(scale), "INPUT.MAX_SCALE", str(scale)]
    cfg = load_cfg(TOY_PANOPTIC, opts + ["INPUT.SIZE_DIVISIBILITY", "-1"])
    mapper = CommonDatasetMapper(cfg, is_train=True)
    assert isinstance(mapper.augmentations.augs[1], T.ResizeScale)
    mapped = mapper(small_toy["toy_panoptic_train"][0])
    assert tuple(mapped["image"].shape[1:]) == expected_hw
    seg = mapped["segments"]
    assert seg.gt_masks.shape[1:] == mapped["image"].shape[1:] and len(seg) > 0


@pytest.mark.parametrize(
    "key, value", [("INPUT.MIN_SCALE", "0.0"), ("INPUT.MAX_SCALE", "0.05"), ("INPUT.IMAGE_SIZE", "0")]
)
def test_bad_lsj_settings_name_the_key(key, value):
    cfg = load_cfg(TOY_PANOPTIC, TINY + LSJ + [key, value])
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        model_train_augmentations(cfg)


@pytest.mark.parametrize("mapper", ["mask_former_instance", "coco_instance_lsj"])
def test_instance_mappers_train_on_instances(mapper):
    cfg = load_cfg(TOY_PANOPTIC, TINY + ["INPUT.DATASET_MAPPER_NAME", mapper])
    assert model_targets(cfg) == {"instances"}


def test_prepare_targets_reads_instances_with_bit_or_polygon_masks():
    from detectron2.modeling import build_model

    cfg = load_cfg(TOY_PANOPTIC, TINY + ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    square = [np.array([2.0, 2.0, 10.0, 2.0, 10.0, 10.0, 2.0, 10.0])]
    poly = Instances((16, 20), gt_classes=torch.tensor([1]), gt_masks=PolygonMasks([square]))
    bits = torch.zeros((1, 16, 20), dtype=torch.bool)
    bits[0, 3:7, 4:9] = True
    bit = Instances((16, 20), gt_classes=torch.tensor([2]), gt_masks=BitMasks(bits))
    images = ImageList(torch.zeros((2, 3, 32, 32)), [(16, 20), (16, 20)])
    targets = model.prepare_targets([{"instances": poly}, {"instances": bit}], images)
    assert [t["labels"].tolist() for t in targets] == [[1], [2]]
    assert targets[0]["masks"].shape == (1, 32, 32) and targets[0]["masks"].dtype == torch.bool
    assert targets[0]["masks"][0, 3:9, 3:9].all() and not targets[0]["masks"][0, 12:].any()
    assert torch.equal(targets[1]["masks"][0, :16, :20], bits[0]) and not targets[1]["masks"][0, 16:].any()
    with pytest.raises(KeyError, match="'segments' or 'instances'"):
        model.prepare_targets([{"image": None}], images)
