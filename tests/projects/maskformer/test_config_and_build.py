"""Config keys, the official configs' keys loading and building, model IO
declarations, build-time checks (NUM_CLASSES, mapper name, decoder input)."""
import glob
import os

import pytest
import torch
from detectron2.modeling import SemanticSegmentor, build_model

import d2ext_projects  # noqa: F401
from d2ext.config import CONFIG_ADDERS
from d2ext.config import add_d2ext_config, get_cfg
from d2ext.engine import load_cfg
from d2ext.model_io import model_outputs, model_targets
from detectron2.config import get_cfg as detectron2_get_cfg
from d2ext_projects.maskformer import MaskFormer, add_maskformer_config
from tests.projects.maskformer.conftest import CONFIGS, TINY, TOY_PANOPTIC, TOY_SEMANTIC

BASELINES = os.path.join(os.path.dirname(CONFIGS), "baselines", "toy")
# Every non-Swin config of the official MaskFormer (facebookresearch/MaskFormer
# configs/; the Swin ones: test_swin_configs.py) -> (sem_seg_head or pixel decoder,
# NUM_CLASSES, whole-model parameters in millions as in the MaskFormer paper
# (None: not given there), ResNet stem).
TF, FPN = "TransformerEncoderPixelDecoder", "BasePixelDecoder"
PLAIN, PLUS = "PerPixelBaselineHead", "PerPixelBaselinePlusHead"
OFFICIAL = {
    "ade20k-150/maskformer_R50_bs16_160k.yaml": (FPN, 150, 41, "BasicStem"),
    "ade20k-150/maskformer_R101_bs16_160k.yaml": (FPN, 150, 60, "BasicStem"),
    "ade20k-150/maskformer_R101c_bs16_160k.yaml": (FPN, 150, 60, "DeepLabStem"),
    "ade20k-150/per_pixel_baseline_R50_bs16_160k.yaml": (PLAIN, 150, None, "BasicStem"),
    "ade20k-150/per_pixel_baseline_plus_R50_bs16_160k.yaml": (PLUS, 150, None, "BasicStem"),
    "ade20k-150-panoptic/maskformer_panoptic_R50_bs16_720k.yaml": (TF, 150, 45, "BasicStem"),
    "ade20k-150-panoptic/maskformer_panoptic_R101_bs16_720k.yaml": (TF, 150, 64, "BasicStem"),
    "ade20k-full-847/maskformer_R50_bs16_200k.yaml": (FPN, 847, 41, "BasicStem"),
    "ade20k-full-847/maskformer_R101_bs16_200k.yaml": (FPN, 847, 60, "BasicStem"),
    "ade20k-full-847/maskformer_R101c_bs16_200k.yaml": (FPN, 847, 60, "DeepLabStem"),
    "ade20k-full-847/per_pixel_baseline_R50_bs16_200k.yaml": (PLAIN, 847, None, "BasicStem"),
    "ade20k-full-847/per_pixel_baseline_plus_R50_bs16_200k.yaml": (PLUS, 847, None, "BasicStem"),
    "cityscapes-19/maskformer_R101_bs16_90k.yaml": (FPN, 19, 60, "BasicStem"),
    "cityscapes-19/maskformer_R101c_bs16_90k.yaml": (FPN, 19, 60, "DeepLabStem"),
    "coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml": (TF, 133, 45, "BasicStem"),
    "coco-panoptic/maskformer_panoptic_R101_bs64_554k.yaml": (TF, 133, 64, "BasicStem"),
    "coco-stuff-10k-171/maskformer_R50_bs32_60k.yaml": (FPN, 171, 41, "BasicStem"),
    "coco-stuff-10k-171/maskformer_R101_bs32_60k.yaml": (FPN, 171, 60, "BasicStem"),
    "coco-stuff-10k-171/maskformer_R101c_bs32_60k.yaml": (FPN, 171, 60, "DeepLabStem"),
    "coco-stuff-10k-171/per_pixel_baseline_R50_bs32_60k.yaml": (PLAIN, 171, None, "BasicStem"),
    "coco-stuff-10k-171/per_pixel_baseline_plus_R50_bs32_60k.yaml": (PLUS, 171, None, "BasicStem"),
    "mapillary-vistas-65/maskformer_R50_bs16_300k.yaml": (FPN, 65, 41, "BasicStem"),
}


def test_adds_keys_without_changing_existing_defaults():
    base = detectron2_get_cfg()
    add_d2ext_config(base)
    cfg = base.clone()
    add_maskformer_config(cfg)
    flat_base, flat = _flatten(base), _flatten(cfg)
    assert all(flat[k] == v for k, v in flat_base.items())
    added = set(flat) - set(flat_base)
    assert all(
        k.startswith(("MODEL.MASK_FORMER.", "MODEL.SEM_SEG_HEAD."))
        or k in ("INPUT.DATASET_MAPPER_NAME", "INPUT.IMAGE_SIZE", "INPUT.MIN_SCALE", "INPUT.MAX_SCALE")
        for k in added
    ), added
    assert get_cfg().MODEL.MASK_FORMER.MASK_WEIGHT == 20.0
    assert CONFIG_ADDERS.get("maskformer") is add_maskformer_config


def _flatten(node, prefix=""):
    out = {}
    for k, v in node.items():
        if hasattr(v, "items"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def test_every_official_copy_is_listed():
    """The non-Swin, non-toy configs under configs/maskformer are exactly OFFICIAL."""
    ours = {
        os.path.relpath(p, CONFIGS)
        for p in glob.glob(os.path.join(CONFIGS, "*", "*.yaml"))
        if not os.path.basename(p).startswith("Base-") and os.path.basename(os.path.dirname(p)) != "toy"
    }
    assert ours == set(OFFICIAL)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_configs_load_and_build(name):
    """Built whole at full size on CPU (no forward): about a second per model."""
    head, num_classes, params_m, stem = OFFICIAL[name]
    cfg = load_cfg(os.path.join(CONFIGS, name), ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == num_classes
    if head in (PLAIN, PLUS):
        assert isinstance(model, SemanticSegmentor) and type(model.sem_seg_head).__name__ == head
    else:
        assert isinstance(model, MaskFormer)
        assert type(model.sem_seg_head.pixel_decoder).__name__ == head
        assert model.sem_seg_head.predictor.class_embed.out_features == num_classes + 1
        # MaskFormer paper: R50 41M, R101 / R101c 60M; with the transformer encoder 45M / 64M
        assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(params_m, abs=0.5)
    backbone = model.backbone
    assert type(backbone.stem).__name__ == stem
    # R101c: DeepLab's ResNet, res5 dilated by RES5_DILATION (1) x RES5_MULTI_GRID [1, 2, 4]
    deeplab = stem == "DeepLabStem"
    assert cfg.MODEL.BACKBONE.NAME == ("build_resnet_deeplab_backbone" if deeplab else "build_resnet_backbone")
    assert [b.conv2.dilation[0] for b in backbone.res5] == ([1, 2, 4] if deeplab else [1, 1, 1])
    assert backbone.stem.conv1.weight.shape[-1] == (3 if deeplab else 7)
    assert backbone.output_shape()["res5"].stride == 32


def test_python_eval_tag_of_official_yaml_loads(tmp_path):
    """The official Base configs write MIN_SIZE_TRAIN with a python eval tag."""
    path = tmp_path / "eval_tag.yaml"
    path.write_text(
        "INPUT:\n"
        '  MIN_SIZE_TRAIN: !!python/object/apply:eval ["[int(x * 0.1 * 512) for x in range(5, 21)]"]\n'
        "  DATASET_MAPPER_NAME: mask_former_semantic\n"
    )
    cfg = load_cfg(str(path))
    assert cfg.INPUT.MIN_SIZE_TRAIN[0] == 256 and len(cfg.INPUT.MIN_SIZE_TRAIN) == 16


def test_toy_configs_share_the_baselines_training_budget():
    for path in (TOY_PANOPTIC, TOY_SEMANTIC):
        cfg = load_cfg(path)
        base = load_cfg(os.path.join(BASELINES, "semantic_fpn_R18_toy.yaml"))
        for key in ("SOLVER.MAX_ITER", "SOLVER.IMS_PER_BATCH", "INPUT.MIN_SIZE_TRAIN", "INPUT.MAX_SIZE_TRAIN",
                    "INPUT.MIN_SIZE_TEST", "SEED", "MODEL.RESNETS.DEPTH", "MODEL.RESNETS.NORM"):
            a, b = cfg, base
            for part in key.split("."):
                a, b = a[part], b[part]
            assert a == b, key
        assert cfg.MODEL.WEIGHTS == ""


@pytest.mark.parametrize(
    "mapper, expected",
    [
        ("mask_former_semantic", {"maskformer_semantic_segments"}),
        ("mask_former_panoptic", {"segments"}),
        ("detr_panoptic", {"segments"}),
    ],
)
def test_mapper_names_give_targets(mapper, expected):
    cfg = load_cfg(TOY_PANOPTIC, ["INPUT.DATASET_MAPPER_NAME", mapper])
    assert model_targets(cfg) == expected


def test_unknown_mapper_name_fails():
    cfg = load_cfg(TOY_PANOPTIC, ["INPUT.DATASET_MAPPER_NAME", "my_mapper"])
    with pytest.raises(ValueError, match="INPUT.DATASET_MAPPER_NAME='my_mapper'"):
        model_targets(cfg)
    with pytest.raises(ValueError, match="INPUT.DATASET_MAPPER_NAME='my_mapper'"):
        build_model(cfg)


@pytest.mark.parametrize(
    "flags, outputs",
    [
        ((True, False, False), {"sem_seg"}),
        ((True, True, True), {"sem_seg", "panoptic_seg", "instances"}),
        ((False, True, False), {"panoptic_seg"}),
    ],
)
def test_outputs_follow_test_flags(flags, outputs):
    keys = ("SEMANTIC_ON", "PANOPTIC_ON", "INSTANCE_ON")
    opts = [x for k, v in zip(keys, flags) for x in (f"MODEL.MASK_FORMER.TEST.{k}", str(v))]
    cfg = load_cfg(TOY_PANOPTIC, opts + TINY)
    assert model_outputs(cfg) == outputs
    model = build_model(cfg).eval()
    with torch.no_grad():
        (result,) = model([{"image": torch.zeros(3, 64, 80), "height": 70, "width": 90}])
    assert set(result) == outputs


@pytest.mark.parametrize(
    "opts, names",
    [
        (
            ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "4"],
            ["MODEL.SEM_SEG_HEAD.NUM_CLASSES=4", "DATASETS.TRAIN", "5 classes"],
        ),
        (
            ["DATASETS.TEST", "('toy_panoptic_separated_val',)"],  # stuff ids 0 = things, 1..2
            ["NUM_CLASSES=5", "DATASETS.TEST", "'toy_panoptic_separated_val'", "3 classes"],
        ),
    ],
)
def test_num_classes_disagreeing_with_dataset_fails_at_build(opts, names):
    cfg = load_cfg(TOY_PANOPTIC, TINY + opts)
    with pytest.raises(ValueError) as info:
        build_model(cfg)
    for name in names:
        assert name in str(info.value)


def test_unregistered_dataset_is_not_checked_nor_registered():
    from detectron2.data import MetadataCatalog

    cfg = load_cfg(TOY_PANOPTIC, TINY + ["DATASETS.TRAIN", "('not_registered_xyz',)", "DATASETS.TEST", "()"])
    build_model(cfg)
    assert "not_registered_xyz" not in MetadataCatalog.list()


def test_transformer_encoder_feature_needs_its_decoder():
    cfg = load_cfg(TOY_PANOPTIC, TINY + ["MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", "transformer_encoder"])
    with pytest.raises(ValueError, match="TransformerEncoderPixelDecoder"):
        build_model(cfg)


@pytest.mark.parametrize("feature", ["transformer_encoder", "pixel_embedding", "res4"])
def test_decoder_inputs(feature):
    opts = TINY + [
        "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "TransformerEncoderPixelDecoder",
        "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
        "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", feature,
        "MODEL.MASK_FORMER.PRE_NORM", "True",
    ]
    model = build_model(load_cfg(TOY_PANOPTIC, opts)).eval()
    with torch.no_grad():
        out = model.sem_seg_head(model.backbone(torch.zeros(1, 3, 64, 64)))
    assert out["pred_logits"].shape == (1, 12, 6) and out["pred_masks"].shape == (1, 12, 16, 16)
