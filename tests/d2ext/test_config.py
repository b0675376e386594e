import os

import pytest

from d2ext.config import get_cfg
from tests.conftest import REPO_ROOT


def test_get_cfg_has_d2ext_keys_with_neutral_defaults():
    cfg = get_cfg()
    assert cfg.D2EXT.DATASETS == [] and cfg.D2EXT.TARGETS == []
    assert cfg.SOLVER.OPTIMIZER == "SGD" and cfg.SOLVER.BACKBONE_MULTIPLIER == 1.0
    assert cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA == 1.0
    # detectron2's own defaults are untouched
    from detectron2.config import get_cfg as d2_get_cfg

    base = d2_get_cfg()
    assert cfg.SOLVER.BASE_LR == base.SOLVER.BASE_LR and cfg.INPUT.MIN_SIZE_TEST == base.INPUT.MIN_SIZE_TEST


@pytest.mark.parametrize("name", ["mask_rcnn_R18_FPN_toy", "semantic_fpn_R18_toy", "panoptic_fpn_R18_toy"])
def test_baseline_configs_load_and_build(name):
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO_ROOT, "configs", "baselines", "toy", f"{name}.yaml"))
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 1e6


def test_unknown_key_in_yaml_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("SOLVER:\n  OPTIMISER: ADAMW\n")
    with pytest.raises(KeyError, match="OPTIMISER"):
        get_cfg().merge_from_file(str(bad))


def test_toy_baselines_train_every_parameter_from_scratch():
    # Freezing randomly initialised layers (detectron2's FREEZE_AT default) would cripple them.
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO_ROOT, "configs", "baselines", "toy", "mask_rcnn_R18_FPN_toy.yaml"))
    assert cfg.MODEL.WEIGHTS == ""
    model = build_model(cfg)
    assert all(p.requires_grad for p in model.parameters())
