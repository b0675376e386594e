"""Every extension point, used by a method defined in the tests (tests/example_method.py)
through the public API only: it trains 2 iterations and runs inference with clicks."""
import ast
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.engine import hooks

import tests.example_method as example
from d2ext.config import CONFIG_ADDERS, get_cfg, register_config
from d2ext.data.mapper import CommonDatasetMapper
from d2ext.data.targets import TARGET_BUILDERS, register_target
from d2ext.engine import Predictor, Trainer, register_hooks
from d2ext.engine.hooks import HOOK_FACTORIES
from d2ext.engine.predictor import PromptError
from d2ext.evaluation import register_evaluator_type
from d2ext.model_io import MODEL_IO, model_prompts, model_targets, register_model_io
from d2ext.registry import DuplicateRegistrationError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


pytestmark = pytest.mark.usefixtures("example_method")  # its config keys (tests/conftest.py)


def _cfg(output_dir, *opts):
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.META_ARCHITECTURE", example.META_ARCH,
        "MODEL.DEVICE", "cpu",
        "MODEL.EXAMPLE.TARGET_SCALE", "2.0",
        "DATASETS.TRAIN", "('toy_sem_seg_train',)",
        "DATASETS.TEST", "('toy_sem_seg_val',)",
        "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "INPUT.MAX_SIZE_TRAIN", "1000",
        "INPUT.MIN_SIZE_TEST", "96",
        "INPUT.MAX_SIZE_TEST", "1000",
        "INPUT.FORMAT", "RGB",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.BASE_LR", "0.01",
        "SOLVER.MAX_ITER", "2",
        "SOLVER.STEPS", "()",
        "SOLVER.WARMUP_ITERS", "0",
        "SOLVER.CHECKPOINT_PERIOD", "1",
        "DATALOADER.NUM_WORKERS", "0",
        "OUTPUT_DIR", str(output_dir),
        *opts,
    ])
    return cfg


def test_the_example_uses_only_public_names_of_d2ext():
    tree = ast.parse(open(example.__file__).read())
    imported = [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("d2ext")
        for alias in node.names
    ]
    assert imported, "the example must go through d2ext's registration functions"
    for module, name in imported:
        assert not any(part.startswith("_") for part in module.split(".")), module
        assert not name.startswith("_"), name


def test_every_registration_is_visible():
    assert CONFIG_ADDERS.get("example_method") is example.add_example_config
    assert get_cfg().MODEL.EXAMPLE.RADIUS == 4.0
    assert TARGET_BUILDERS.get(example.TARGET).configurable
    assert example.META_ARCH in MODEL_IO and example.META_ARCH in HOOK_FACTORIES
    cfg = _cfg("/unused")
    assert model_targets(cfg) == {example.TARGET}
    assert model_prompts(cfg) == {"points"}


@pytest.mark.parametrize(
    "register",
    [
        lambda: register_config("example_method", example.add_example_config),
        lambda: register_model_io(example.META_ARCH, lambda c: frozenset(), lambda c: frozenset()),
        lambda: register_target(example.TARGET)(example.MeanColorTarget),
        lambda: register_hooks(example.META_ARCH, lambda cfg, trainer: []),
        lambda: register_evaluator_type("sem_seg", lambda *a: [], "again"),
    ],
    ids=["config", "model_io", "target", "hooks", "evaluator_type"],
)
def test_a_duplicate_name_is_an_error_in_every_registry(register):
    with pytest.raises(DuplicateRegistrationError, match="already registered"):
        register()


def test_configured_target_builder_reads_the_config(tiny_toy, tmp_path):
    cfg = _cfg(tmp_path)
    mapper = CommonDatasetMapper(cfg, is_train=True)
    out = mapper(DatasetCatalog.get("toy_sem_seg_train")[0])
    image = out["image"].permute(1, 2, 0).numpy().astype(np.float64)
    expected = image.reshape(-1, 3).mean(axis=0) / 255.0 * 2.0
    np.testing.assert_allclose(out[example.TARGET].numpy(), expected, rtol=1e-5)
    # Without a config there are no settings to read: a clear error, not defaults.
    with pytest.raises(ValueError, match="reads its settings from the config"):
        CommonDatasetMapper(True, augmentations=[], image_format="RGB", targets=[example.TARGET])


def _disc_centres(masks: torch.Tensor) -> np.ndarray:
    """(N, H, W) bool -> (N, 2) xy centroid in continuous pixel coordinates."""
    ys, xs = torch.meshgrid(torch.arange(masks.shape[1]) + 0.5, torch.arange(masks.shape[2]) + 0.5, indexing="ij")
    area = masks.sum(dim=(1, 2)).float()
    return torch.stack([(masks * xs).sum((1, 2)) / area, (masks * ys).sum((1, 2)) / area], 1).numpy()


def test_trains_two_iterations_then_infers_with_clicks(tiny_toy, tmp_path):
    cfg = _cfg(tmp_path)
    cfg.freeze()
    trainer = Trainer(cfg)
    kinds = [type(h) for h in trainer._hooks]
    assert kinds.index(example.StepCounter) == kinds.index(hooks.LRScheduler) + 1
    before = trainer.model.conv.weight.detach().clone()
    trainer.train()
    assert not torch.equal(before, trainer.model.conv.weight)
    counter = next(h for h in trainer._hooks if isinstance(h, example.StepCounter))
    assert counter.steps == 2
    saved = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert saved["trainer"]["hooks"]["StepCounter"] == {"steps": 2}

    # The hook's state comes back on resume.
    resumed = Trainer(cfg)
    resumed.resume_or_load(resume=True)
    assert next(h for h in resumed._hooks if isinstance(h, example.StepCounter)).steps == 2

    # Evaluation (the common test loader, the evaluator factory) on the model's sem_seg.
    results = Trainer.test(cfg, trainer.model)
    assert 0.0 <= results["sem_seg"]["mIoU"] <= 100.0

    # Clicks in original pixels come back as discs around the same points:
    # the test mapper and the predictor both transform them with the resize (256 -> 96).
    clicks = np.array([[30.5, 40.5], [200.5, 120.5]])
    predictor = Predictor(cfg.clone())
    predictor.model.load_state_dict(trainer.model.state_dict())
    dataset_dict = dict(DatasetCatalog.get("toy_sem_seg_val")[0], points=clicks)
    mapped = CommonDatasetMapper(cfg, is_train=False)(dataset_dict)
    assert mapped["image"].shape[1:] == (96, 96)
    np.testing.assert_allclose(mapped["points"].numpy(), clicks * 96 / 256, rtol=1e-6)
    with torch.no_grad():
        from_loader = predictor.model([mapped])[0]["instances"]
    image_bgr = read_image(dataset_dict["file_name"], format="BGR")
    from_predictor = predictor(image_bgr, points=clicks)["instances"]
    for instances in (from_loader, from_predictor):
        assert instances.image_size == (256, 256) and len(instances) == 2
        np.testing.assert_allclose(_disc_centres(instances.pred_masks.cpu()), clicks, atol=0.01)


def test_test_mapper_flips_points_with_the_image(tiny_toy):
    dataset_dict = dict(DatasetCatalog.get("toy_sem_seg_val")[0], points=[[10.0, 20.0], [255.0, 0.5]])
    mapper = CommonDatasetMapper(
        False, augmentations=[T.ResizeShortestEdge(128, 1000), T.RandomFlip(1.0)],
        image_format="RGB", prompts=["points"],
    )
    points = mapper(dataset_dict)["points"]
    assert points.dtype == torch.float32
    np.testing.assert_allclose(points.numpy(), [[128 - 5.0, 10.0], [128 - 127.5, 0.25]], rtol=1e-6)
    # A dict without points is fine; a malformed one names the file.
    assert "points" not in mapper(DatasetCatalog.get("toy_sem_seg_val")[0])
    bad = dict(dataset_dict, points=[[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match=r"'points' of .*\.png.*\(N, 2\)"):
        mapper(bad)
    with pytest.raises(ValueError, match="finite"):
        mapper(dict(dataset_dict, points=[[float("nan"), 2.0]]))


def test_a_model_without_prompts_refuses_points(tiny_toy):
    from d2ext.engine import load_cfg

    cfg = load_cfg(os.path.join(REPO_ROOT, "configs/baselines/toy/semantic_fpn_R18_toy.yaml"),
                   ["MODEL.DEVICE", "cpu", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32"])
    predictor = Predictor(cfg)
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    assert "sem_seg" in predictor(image)
    with pytest.raises(PromptError, match=r"'SemanticSegmentor' accepts no 'points'.*ExampleClickSegmenter"):
        predictor(image, points=[[3.0, 4.0]])
