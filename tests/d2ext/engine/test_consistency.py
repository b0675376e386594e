"""Class counts and ignore labels of the config against the datasets' metadata
(d2ext.engine.consistency): every shipped config passes, every model's wrong
key is named with both numbers, and the Trainer checks before it builds.

No model is built (the check needs only the config and the metadata, which
registration provides without any file).
"""
import glob
import os

import pytest

import d2ext_projects  # noqa: F401  (every method registers its checks)
from d2ext.engine import (
    ConfigError,
    Trainer,
    check_config_against_datasets,
    expect_count,
    load_cfg,
    register_consistency_check,
)
from d2ext.engine.consistency import CONSISTENCY_CHECKS
from d2ext.registry import DuplicateRegistrationError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CONFIGS = os.path.join(REPO_ROOT, "configs")
# Base-*.yaml are fragments (their DATASETS are detectron2's defaults), not runs.
SHIPPED = sorted(
    os.path.relpath(p, CONFIGS)
    for p in glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)


def _cfg(name, *opts):
    return load_cfg(os.path.join(CONFIGS, name), list(opts))


def _message(key, value, dataset, has, field):
    return f"{key} = {value}, but dataset {dataset!r} has {has} (MetadataCatalog.get({dataset!r}).{field})"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_agrees_with_its_datasets(name):
    check_config_against_datasets(_cfg(name))


# (config, override, key, value, dataset, its number, metadata field)
WRONG_CLASSES = [
    ("baselines/toy/mask_rcnn_R18_FPN_toy.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", 4, "toy_instances_train", 3, "thing_classes"),
    ("baselines/toy/semantic_fpn_R18_toy.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 4, "toy_sem_seg_train", 5, "stuff_classes"),
    # all classes counted: the separated semantic head has stuff + "things"
    ("baselines/toy/panoptic_fpn_R18_toy.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 5, "toy_panoptic_separated_train", 3, "stuff_classes"),
    ("baselines/toy/panoptic_fpn_R18_toy.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", 5, "toy_panoptic_separated_train", 3, "thing_classes"),
    # "no object" counted
    ("maskformer/toy/maskformer_R18_toy_semantic.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 6, "toy_sem_seg_train", 5, "stuff_classes"),
    ("maskformer/toy/maskformer_R18_toy_panoptic.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 3, "toy_panoptic_train", 5, "stuff_classes"),
    ("pointrend/toy/pointrend_rcnn_R18_FPN_toy.yaml", "MODEL.POINT_HEAD.NUM_CLASSES", 4, "toy_instances_train", 3, "thing_classes"),
    ("pointrend/toy/implicit_pointrend_R18_FPN_toy.yaml", "MODEL.POINT_HEAD.NUM_CLASSES", 4, "toy_instances_train", 3, "thing_classes"),
    ("pointrend/toy/pointrend_semantic_R18_FPN_toy.yaml", "MODEL.POINT_HEAD.NUM_CLASSES", 4, "toy_sem_seg_train", 5, "stuff_classes"),
    ("icnet/toy/icnet_R18_toy.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 19, "toy_sem_seg_train", 5, "stuff_classes"),
    ("adaptis/toy/adaptis_R18_toy_panoptic_stage1.yaml", "MODEL.ADAPTIS.NUM_CLASSES", 3, "toy_panoptic_train", 5, "stuff_classes"),
    ("adaptis/toy_rods/adaptis_R18_toy_rods_stage1.yaml", "MODEL.ADAPTIS.NUM_CLASSES", 5, "toy_rods_panoptic_train", 2, "stuff_classes"),
]


@pytest.mark.parametrize("name,key,value,dataset,n,field", WRONG_CLASSES)
def test_wrong_class_count_names_key_dataset_field_and_both_numbers(name, key, value, dataset, n, field):
    with pytest.raises(ConfigError) as info:
        check_config_against_datasets(_cfg(name, key, str(value)))
    msg = str(info.value)
    assert _message(key, value, dataset, f"{n} classes", field) in msg
    val = dataset.replace("_train", "_val")  # DATASETS.TEST is checked too
    assert _message(key, value, val, f"{n} classes", field) in msg


def test_conventions_are_explained():
    msg = lambda name, key, v: str(pytest.raises(ConfigError, check_config_against_datasets, _cfg(name, key, v)).value)  # noqa: E731
    assert "'no object'" in msg("maskformer/toy/maskformer_R18_toy_semantic.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "6")
    assert "'things'" in msg("baselines/toy/panoptic_fpn_R18_toy.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5")


WRONG_IGNORE = [
    "baselines/toy/semantic_fpn_R18_toy.yaml",
    "baselines/toy/panoptic_fpn_R18_toy.yaml",
    "pointrend/toy/pointrend_semantic_R18_FPN_toy.yaml",
    "icnet/toy/icnet_R18_toy.yaml",
]


@pytest.mark.parametrize("name", WRONG_IGNORE)
def test_ignore_value_differing_from_the_metadata_is_named(name):
    cfg = _cfg(name, "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "0")
    with pytest.raises(ConfigError) as info:
        check_config_against_datasets(cfg)
    dataset = cfg.DATASETS.TRAIN[0]
    assert _message("MODEL.SEM_SEG_HEAD.IGNORE_VALUE", 0, dataset, "ignore label 255", "ignore_label") in str(info.value)


def test_class_agnostic_point_head_does_not_use_its_class_count():
    check_config_against_datasets(
        _cfg(
            "pointrend/toy/pointrend_rcnn_R18_FPN_toy.yaml",
            "MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK", "True",
            "MODEL.POINT_HEAD.NUM_CLASSES", "1",
        )
    )


def test_every_disagreement_is_reported_at_once():
    cfg = _cfg(
        "baselines/toy/panoptic_fpn_R18_toy.yaml",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5",
        "MODEL.ROI_HEADS.NUM_CLASSES", "4",
        "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "0",
    )
    with pytest.raises(ConfigError) as info:
        check_config_against_datasets(cfg)
    lines = str(info.value).splitlines()
    assert len(lines) == 6  # 3 keys x (train, val)


def test_unregistered_datasets_are_skipped():
    cfg = _cfg("baselines/toy/semantic_fpn_R18_toy.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "4")
    check_config_against_datasets(cfg, ["no_such_dataset"])


def test_trainer_checks_before_building_the_model():
    cfg = _cfg("baselines/toy/semantic_fpn_R18_toy.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "4")
    with pytest.raises(ConfigError, match=r"MODEL.SEM_SEG_HEAD.NUM_CLASSES = 4"):
        Trainer.build_model(cfg)


def test_a_check_is_selected_by_its_config_value_and_duplicates_are_errors():
    calls = []

    def check(cfg, meta):
        calls.append(meta.name)
        return expect_count("MODEL.SEM_SEG_HEAD.LOSS_WEIGHT", 2, meta, "stuff_classes")

    register_consistency_check("MODEL.SEM_SEG_HEAD.NAME", "TestOnlyHead", check)
    try:
        with pytest.raises(DuplicateRegistrationError):
            register_consistency_check("MODEL.SEM_SEG_HEAD.NAME", "TestOnlyHead", check)
        check_config_against_datasets(_cfg("baselines/toy/semantic_fpn_R18_toy.yaml"))
        assert calls == []  # SEM_SEG_HEAD.NAME is SemSegFPNHead
        cfg = _cfg("baselines/toy/semantic_fpn_R18_toy.yaml", "MODEL.SEM_SEG_HEAD.NAME", "TestOnlyHead")
        with pytest.raises(ConfigError, match=r"MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 2, but dataset 'toy_sem_seg_train' has 5 classes"):
            check_config_against_datasets(cfg)
        assert calls == ["toy_sem_seg_train", "toy_sem_seg_val"]
    finally:
        CONSISTENCY_CHECKS.remove("MODEL.SEM_SEG_HEAD.NAME=TestOnlyHead")
