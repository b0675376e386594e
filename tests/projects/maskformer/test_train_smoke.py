"""Smoke tests on a small toy dataset: training iterations through the Trainer,
evaluation through Trainer.test, an --eval-only run of train_net.py reporting
PQ, mask AP and mIoU; images without segments; semantic TTA."""
import json
import os

import pytest
import torch
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model
from detectron2.structures import Instances

import train_net
from d2ext.data.mapper import CommonDatasetMapper
from d2ext.engine import Trainer, load_cfg
from tests.projects.maskformer.conftest import TINY, TOY_PANOPTIC, TOY_SEMANTIC


def tiny_train_opts(output_dir, max_iter=3):
    return TINY + [
        "OUTPUT_DIR", str(output_dir),
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD", "1000",
        "TEST.EVAL_PERIOD", "0",
    ]


def train(config, output_dir, max_iter):
    """A few iterations through the Trainer (evaluation left to the caller); -> the model."""
    cfg = load_cfg(config, tiny_train_opts(output_dir, max_iter) + ["DATASETS.TEST", "()"])
    cfg.freeze()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer.model


def test_mapper_builds_segments_for_each_mapper_name(small_toy):
    for name, config, key in [
        ("mask_former_panoptic", TOY_PANOPTIC, "segments"),
        ("mask_former_semantic", TOY_PANOPTIC, "segments"),
    ]:
        cfg = load_cfg(config, TINY + ["INPUT.DATASET_MAPPER_NAME", name])
        mapped = CommonDatasetMapper(cfg, is_train=True)(small_toy["toy_panoptic_train"][0])
        seg = mapped[key]
        assert isinstance(seg, Instances) and seg.gt_masks.dtype == torch.bool
        assert seg.gt_masks.shape[1:] == mapped["image"].shape[1:]
        if name == "mask_former_semantic":  # one segment per class, classes ascending
            classes = seg.gt_classes.tolist()
            assert classes == sorted(set(classes))


def test_train_and_evaluate_toy_panoptic_then_eval_only(small_toy, tmp_path):
    train(TOY_PANOPTIC, tmp_path, max_iter=3)
    assert os.path.exists(tmp_path / "model_final.pth")

    # python train_net.py --config-file ... --eval-only MODEL.WEIGHTS model_final.pth:
    # Trainer.test on the 3 val images
    args = default_argument_parser().parse_args(
        ["--config-file", TOY_PANOPTIC, "--eval-only"]
        + tiny_train_opts(tmp_path / "eval")
        + ["MODEL.WEIGHTS", str(tmp_path / "model_final.pth")]
    )
    results = train_net.main(args)
    for task, metric in [("panoptic_seg", "PQ"), ("segm", "AP"), ("sem_seg", "mIoU")]:
        assert isinstance(results[task][metric], float), (task, results[task])
    with open(tmp_path / "eval" / "eval_results.json") as f:  # what tools/summarize_runs.py reads
        written = json.load(f)["results"]
    assert written["panoptic_seg/PQ"] == results["panoptic_seg"]["PQ"]
    assert written["sem_seg/mIoU"] == results["sem_seg"]["mIoU"]


def test_train_toy_semantic(small_toy, tmp_path):
    model = train(TOY_SEMANTIC, tmp_path, max_iter=2)
    results = Trainer.test(load_cfg(TOY_SEMANTIC, tiny_train_opts(tmp_path)), model)
    assert set(results) == {"sem_seg"} and "mIoU" in results["sem_seg"]


def test_images_without_segments_train():
    cfg = load_cfg(TOY_PANOPTIC, TINY)
    model = build_model(cfg).train()
    no_masks = torch.zeros(0, 64, 64, dtype=torch.bool)
    empty = Instances((64, 64), gt_classes=torch.zeros(0, dtype=torch.int64), gt_masks=no_masks)
    one = torch.zeros(1, 64, 64, dtype=torch.bool)
    one[0, 10:30, 10:30] = True
    some = Instances((64, 64), gt_classes=torch.tensor([1]), gt_masks=one)
    for batch in ([empty, empty], [empty, some]):
        inputs = [{"image": torch.rand(3, 64, 64) * 255, "segments": s} for s in batch]
        losses = model(inputs)
        total = sum(losses.values())
        assert torch.isfinite(total)
        model.zero_grad()
        total.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_outputs_at_original_size_and_semantic_tta():
    cfg = load_cfg(TOY_PANOPTIC, TINY)
    model = build_model(cfg).eval()
    image = torch.rand(3, 96, 128) * 255
    with torch.no_grad():
        (plain,) = model([{"image": image, "height": 150, "width": 200}])
    assert plain["sem_seg"].shape == (5, 150, 200)
    panoptic, segments_info = plain["panoptic_seg"]
    assert panoptic.shape == (150, 200) and panoptic.dtype == torch.int32
    assert all({"id", "category_id", "isthing"} <= set(s) for s in segments_info)
    assert plain["instances"].image_size == (150, 200)
    assert plain["instances"].pred_masks.shape[1:] == (150, 200)
    assert set(plain["instances"].pred_classes.tolist()) <= {0, 1, 2}  # things only

    # TTA at the mapper's own scale, unflipped, is plain inference
    model.tta = {"min_sizes": [96], "max_size": 1000, "flip": False}
    with torch.no_grad():
        (same,) = model([{"image": image, "height": 96, "width": 128}])
        model.tta = None
        (ref,) = model([{"image": image, "height": 96, "width": 128}])
    torch.testing.assert_close(same["sem_seg"], ref["sem_seg"], atol=1e-4, rtol=1e-4)

    cfg = load_cfg(
        TOY_PANOPTIC,
        TINY + ["TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(64, 96)", "TEST.AUG.FLIP", "True"],
    )
    model = build_model(cfg).eval()
    assert model.tta == {"min_sizes": [64, 96], "max_size": cfg.TEST.AUG.MAX_SIZE, "flip": True}
    with torch.no_grad():
        (tta,) = model([{"image": image, "height": 150, "width": 200}])
    assert tta["sem_seg"].shape == (5, 150, 200) and torch.isfinite(tta["sem_seg"]).all()
