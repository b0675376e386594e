"""Config keys, the official configs' keys loading and building, model IO
declarations, build-time checks (NUM_CLASSES, mapper name, decoder input)."""
import os

import pytest
import torch
from detectron2.modeling import build_model

import d2ext_projects  # noqa: F401
from d2ext.config import CONFIG_ADDERS
from d2ext.config import add_d2ext_config, get_cfg
from d2ext.engine import load_cfg
from d2ext.model_io import model_outputs, model_targets
from detectron2.config import get_cfg as detectron2_get_cfg
from d2ext_projects.maskformer import MaskFormer, add_maskformer_config
from tests.projects.maskformer.conftest import CONFIGS, TINY, TOY_PANOPTIC, TOY_SEMANTIC

BASELINES = os.path.join(os.path.dirname(CONFIGS), "baselines", "toy")
OFFICIAL = {
    "ade20k-150/maskformer_R50_bs16_160k.yaml": ("BasePixelDecoder", 150, 41.3),
    "coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml": ("TransformerEncoderPixelDecoder", 133, 45.0),
    "cityscapes-19/maskformer_R101_bs16_90k.yaml": ("BasePixelDecoder", 19, 60.2),
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
        k.startswith(("MODEL.MASK_FORMER.", "MODEL.SEM_SEG_HEAD.", "MODEL.RESNETS."))
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


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_configs_load_and_build(name):
    decoder, num_classes, params_m = OFFICIAL[name]
    cfg = load_cfg(os.path.join(CONFIGS, name), ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    assert isinstance(model, MaskFormer)
    assert type(model.sem_seg_head.pixel_decoder).__name__ == decoder
    assert model.sem_seg_head.predictor.class_embed.out_features == num_classes + 1
    # parameter counts of the MaskFormer paper: 41M, 45M, 60M
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(params_m, abs=0.5)


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
