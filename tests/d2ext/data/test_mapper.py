"""CommonDatasetMapper: every target shares one geometry; errors name what is missing."""
import numpy as np
import pytest
import torch
from PIL import Image

import d2ext  # noqa: F401  (compat first)
from detectron2.config import get_cfg as detectron2_get_cfg
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, PolygonMasks, polygons_to_bitmask

from d2ext.config import add_d2ext_config
from d2ext.data.augmentations import CategoryAreaCrop, ColorAugSSD
from d2ext.data.datasets.checks import DatasetError
from d2ext.data.mapper import CommonDatasetMapper
from d2ext.data.targets import TARGET_BUILDERS, TargetUnavailableError, register_target
from tests.d2ext.data import mapper_fixtures as fx

ALL = ("instances", "sem_seg", "segments")
CAPTURE = "test_mapper_capture"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return fx.write_scene(str(tmp_path_factory.mktemp("scene")))


@pytest.fixture(scope="module", autouse=True)
def capture_builder():
    """A project-style builder that exposes the context it was given."""

    @register_target(CAPTURE, maps=("pan_seg",))
    def _capture(ctx, out):
        out[CAPTURE] = ctx

    yield
    TARGET_BUILDERS.remove(CAPTURE)


def _mapper(augs, targets=ALL, **kw):
    kw.setdefault("image_format", "RGB")
    return CommonDatasetMapper(True, augmentations=augs, targets=targets, **kw)


def _geometric_augs():
    # 40x60 -> 27x41 (factor 0.675), a 20x30 window, always flipped.
    return [T.ResizeShortestEdge(27, 1000), T.RandomCrop("absolute", (20, 30)), T.RandomFlip(1.0)]


def _instance_bitmasks(inst, hw):
    if isinstance(inst.gt_masks, BitMasks):
        return inst.gt_masks.tensor.numpy()
    return np.stack([polygons_to_bitmask(p, *hw) for p in inst.gt_masks.polygons]).astype(bool)


@pytest.mark.parametrize("seed", range(4))
def test_targets_agree_after_resize_crop_flip(scene, seed):
    np.random.seed(seed)
    mapper = _mapper(_geometric_augs(), targets=ALL + (CAPTURE,), instance_mask_format="bitmask")
    out = mapper(fx.make_dict(scene, annos="rle", semantic=False))
    ctx = out[CAPTURE]
    hw = tuple(out["image"].shape[1:])
    assert hw == (20, 30) and out["height"] == fx.H and out["width"] == fx.W

    # Every output is the original pushed through the same transforms.
    tfms = ctx.transforms
    assert np.array_equal(out["image"].permute(1, 2, 0).numpy(), tfms.apply_image(fx.image()))
    sem = out["sem_seg"].numpy()
    assert out["sem_seg"].dtype == torch.int64 and sem.shape == hw
    assert np.array_equal(sem, tfms.apply_segmentation(fx.semantic_labels()))

    seg_masks = out["segments"].gt_masks.numpy()
    seg_classes = out["segments"].gt_classes.numpy()
    inst = out["instances"]
    inst_masks = _instance_bitmasks(inst, hw)
    assert seg_masks.dtype == bool and seg_masks.shape[1:] == hw
    # No two segments overlap; each pixel's semantic label is its segment's class.
    assert seg_masks.sum(0).max() <= 1
    for mask, cls in zip(seg_masks, seg_classes):
        assert mask.any() and (sem[mask] == cls).all()
    # Pixels of no segment are void or crowd (crowd keeps its class in sem_seg).
    assert set(np.unique(sem[~seg_masks.any(0)])) <= {fx.IGNORE, fx.CROWD_CLASS}

    # Thing segments and instances: same pixels, same classes, one to one.
    thing = seg_classes < fx.NUM_THINGS
    assert len(inst) == thing.sum()
    for mask, cls in zip(seg_masks[thing], seg_classes[thing]):
        match = [i for i in range(len(inst)) if np.array_equal(inst_masks[i], mask)]
        assert len(match) == 1 and inst.gt_classes[match[0]] == cls
        # The transformed annotation box is the tight box of the mask within 1 px.
        box = inst.gt_boxes.tensor[match[0]].numpy()
        assert np.abs(box - fx.tight_box(mask)).max() <= 1.0


def test_polygon_instances_agree_with_segments(scene):
    np.random.seed(0)
    augs = [T.ResizeShortestEdge(27, 1000), T.RandomFlip(1.0)]
    out = _mapper(augs, instance_mask_format="polygon", recompute_boxes=True)(
        fx.make_dict(scene, annos="polygon", semantic=False)
    )
    inst, segs = out["instances"], out["segments"]
    assert isinstance(inst.gt_masks, PolygonMasks)
    hw = tuple(out["image"].shape[1:])
    thing = segs.gt_classes < fx.NUM_THINGS
    assert len(inst) == int(thing.sum()) == 3
    inst_masks = _instance_bitmasks(inst, hw)
    for mask, cls in zip(segs.gt_masks[thing].numpy(), segs.gt_classes[thing]):
        # Exact polygons vs nearest-resized pixels: equal up to the boundary.
        ious = [(m & mask).sum() / (m | mask).sum() for m in inst_masks]
        best = int(np.argmax(ious))
        assert ious[best] > 0.9 and inst.gt_classes[best] == cls
        assert np.abs(inst.gt_boxes.tensor[best].numpy() - fx.tight_box(mask)).max() <= 1.0


def test_polygon_crop_needs_shapely_or_works(scene):
    np.random.seed(0)
    mapper = _mapper(_geometric_augs(), targets=("instances",), instance_mask_format="polygon")
    try:
        import shapely  # noqa: F401
    except ImportError:
        with pytest.raises(ModuleNotFoundError, match="shapely"):
            mapper(fx.make_dict(scene, annos="polygon"))
    else:
        assert isinstance(mapper(fx.make_dict(scene, annos="polygon"))["instances"].gt_masks, PolygonMasks)


def test_semantic_file_and_panoptic_give_the_same_labels(scene):
    outs = []
    for semantic in (True, False):
        np.random.seed(3)
        outs.append(_mapper(_geometric_augs(), targets=("sem_seg",))(fx.make_dict(scene, semantic=semantic)))
    assert torch.equal(outs[0]["sem_seg"], outs[1]["sem_seg"])


def test_horizontal_flip_flips_everything(scene):
    out = _mapper([T.RandomFlip(1.0)], instance_mask_format="bitmask")(fx.make_dict(scene))
    assert np.array_equal(out["image"].permute(1, 2, 0).numpy(), np.fliplr(fx.image()))
    assert np.array_equal(out["sem_seg"].numpy(), np.fliplr(fx.semantic_labels()))
    masks = fx.thing_masks()
    inst = out["instances"]
    for sid, cls, _ in fx.THINGS:
        expected = np.fliplr(masks[sid])
        i = [k for k in range(len(inst)) if np.array_equal(inst.gt_masks.tensor[k].numpy(), expected)]
        assert len(i) == 1 and inst.gt_classes[i[0]] == cls
        x0, y0, x1, y1 = fx.tight_box(masks[sid])
        assert np.allclose(inst.gt_boxes.tensor[i[0]].numpy(), [fx.W - x1, y0, fx.W - x0, y1])
    pan = fx.panoptic_ids()
    for info, mask in zip(
        [s for s in fx.segments_info() if not s["iscrowd"]], out["segments"].gt_masks.numpy()
    ):
        assert np.array_equal(mask, np.fliplr(pan == info["id"]))


def test_vertical_flip(scene):
    out = _mapper([T.RandomFlip(1.0, horizontal=False, vertical=True)], targets=("sem_seg",))(
        fx.make_dict(scene)
    )
    assert np.array_equal(out["sem_seg"].numpy(), np.flipud(fx.semantic_labels()))


def test_padding_uses_ignore_label_and_zero(scene):
    mapper = _mapper(
        [], targets=ALL + (CAPTURE,), ignore_label=254, size_divisibility=32, instance_mask_format="bitmask"
    )
    out = mapper(fx.make_dict(scene, semantic=False))  # sem_seg derived: void -> 254
    assert tuple(out["image"].shape) == (3, 64, 64)
    img = out["image"].numpy()
    assert (img[:, fx.H :, :] == 0).all() and (img[:, :, fx.W :] == 0).all()
    assert np.array_equal(img[:, : fx.H, : fx.W].transpose(1, 2, 0), fx.image())
    sem = out["sem_seg"].numpy()
    assert (sem[fx.H :, :] == 254).all() and (sem[:, fx.W :] == 254).all()
    assert (sem[fx.VOID] == 254).all()
    inner = sem[: fx.H, : fx.W]
    assert np.array_equal(inner == 254, fx.semantic_labels() == fx.IGNORE)
    segs = out["segments"]
    assert segs.image_size == (64, 64) and segs.gt_masks.shape[1:] == (64, 64)
    assert not segs.gt_masks[:, fx.H :, :].any() and not segs.gt_masks[:, :, fx.W :].any()
    inst = out["instances"]
    assert inst.image_size == (64, 64) and inst.gt_masks.tensor.shape[1:] == (64, 64)
    ctx = out[CAPTURE]
    assert ctx.image_size == (fx.H, fx.W) and ctx.padded_size == (64, 64)
    assert (ctx.pan_ids[fx.H :, :] == 0).all() and (ctx.pan_ids[:, fx.W :] == 0).all()


def test_category_area_crop_respects_max_area(scene):
    max_area = 0.6
    crop = CategoryAreaCrop("absolute", (16, 24), max_area, fx.IGNORE)
    plain = T.RandomCrop("absolute", (16, 24))

    def worst_fraction(aug, targets, seed):
        np.random.seed(seed)
        out = _mapper([aug], targets=targets + (CAPTURE,), instance_mask_format="bitmask")(fx.make_dict(scene))
        sem = out[CAPTURE].sem_seg
        _, counts = np.unique(sem[sem != fx.IGNORE], return_counts=True)
        return counts.max() / counts.sum()

    # "instances" needs no semantic map: the crop alone makes the mapper read it.
    assert max(worst_fraction(crop, ("instances",), s) for s in range(8)) < max_area
    # The data needs the constraint: unconstrained windows exceed it.
    assert max(worst_fraction(plain, ("sem_seg",), s) for s in range(8)) >= max_area


def test_category_area_crop_on_instance_only_data(scene):
    np.random.seed(0)
    crop = CategoryAreaCrop("absolute", (16, 24), 0.5, fx.IGNORE)
    d = fx.make_dict(scene, panoptic=False, semantic=False)
    out = _mapper([crop], targets=("instances",), instance_mask_format="bitmask")(d)
    assert tuple(out["image"].shape[1:]) == (16, 24)  # plain random crop


def test_color_aug_changes_only_the_image(scene):
    plain = _mapper([], targets=ALL, instance_mask_format="bitmask")(fx.make_dict(scene))
    np.random.seed(0)
    jittered = _mapper([ColorAugSSD(img_format="RGB", prob=1.0)], targets=ALL, instance_mask_format="bitmask")(
        fx.make_dict(scene)
    )
    assert not torch.equal(plain["image"], jittered["image"])
    assert plain["image"].shape == jittered["image"].shape
    assert torch.equal(plain["sem_seg"], jittered["sem_seg"])
    for key in ("instances", "segments"):
        a, b = plain[key], jittered[key]
        assert a.image_size == b.image_size
        for name in a.get_fields():
            va, vb = a.get(name), b.get(name)
            va, vb = (getattr(va, "tensor", va), getattr(vb, "tensor", vb))
            assert torch.equal(va, vb), (key, name)


def test_test_time_output(scene):
    cfg = _cfg()
    cfg.INPUT.MIN_SIZE_TEST = 20
    cfg.INPUT.MAX_SIZE_TEST = 1000
    mapper = CommonDatasetMapper(cfg, is_train=False)
    assert mapper.targets == ()
    out = mapper(fx.make_dict(scene))
    assert tuple(out["image"].shape) == (3, 20, 30) and out["image"].dtype == torch.uint8
    assert (out["height"], out["width"]) == (fx.H, fx.W)
    for key in ("instances", "sem_seg", "segments", "annotations", "sem_seg_file_name"):
        assert key not in out


def _cfg():
    cfg = detectron2_get_cfg()
    add_d2ext_config(cfg)
    return cfg


def test_from_config_reads_input_targets_and_ignore_label():
    name = "d2ext_test_mapper_metadata"
    MetadataCatalog.get(name).set(ignore_label=254)
    try:
        cfg = _cfg()
        cfg.DATASETS.TRAIN = (name,)
        cfg.D2EXT.TARGETS = ["segments", "sem_seg"]
        cfg.INPUT.FORMAT = "RGB"
        cfg.INPUT.MASK_FORMAT = "bitmask"
        cfg.INPUT.SIZE_DIVISIBILITY = 32
        cfg.INPUT.COLOR_AUG_SSD = True
        cfg.INPUT.CROP.ENABLED = True
        cfg.INPUT.CROP.TYPE = "absolute"
        cfg.INPUT.CROP.SIZE = [16, 24]
        cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.75
        mapper = CommonDatasetMapper(cfg, is_train=True)
    finally:
        MetadataCatalog.remove(name)
    s = mapper.settings
    assert mapper.targets == ("segments", "sem_seg")
    assert (s.ignore_label, s.image_format) == (254, "RGB")
    assert (s.instance_mask_format, s.size_divisibility) == ("bitmask", 32)
    assert s.recompute_boxes == cfg.MODEL.MASK_ON
    augs = mapper.augmentations.augs
    assert [type(a) for a in augs] == [T.ResizeShortestEdge, CategoryAreaCrop, ColorAugSSD, T.RandomFlip]
    assert augs[1].ignored_category == 254


def test_custom_builder_is_called_with_the_context(scene):
    calls = []
    name = "test_mapper_custom"

    @register_target(name, maps=())
    def _views(ctx, out):
        calls.append(ctx)
        out["views"] = torch.as_tensor(ctx.original_image.copy())

    try:
        out = _mapper([T.RandomFlip(1.0)], targets=(name,))(fx.make_dict(scene))
    finally:
        TARGET_BUILDERS.remove(name)
    assert len(calls) == 1 and calls[0].sem_seg is None and calls[0].pan_ids is None
    assert np.array_equal(out["views"].numpy(), fx.image())


def test_image_without_segments_gives_empty_targets(tmp_path):
    img = np.zeros((8, 10, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "i.png")
    Image.fromarray(np.full((8, 10), 255, np.uint8)).save(tmp_path / "s.png")
    d = {"file_name": str(tmp_path / "i.png"), "height": 8, "width": 10, "annotations": [],
         "sem_seg_file_name": str(tmp_path / "s.png")}
    out = _mapper([], instance_mask_format="bitmask")(d)
    assert out["segments"].gt_classes.shape == (0,) and out["segments"].gt_masks.shape == (0, 8, 10)
    assert out["segments"].gt_classes.dtype == torch.int64 and out["segments"].gt_masks.dtype == torch.bool
    assert len(out["instances"]) == 0 and out["instances"].gt_masks.tensor.shape == (0, 8, 10)
    assert (out["sem_seg"] == 255).all()


# -- errors -------------------------------------------------------------------
def test_segments_on_instance_only_data_names_target_file_and_keys(scene):
    d = fx.make_dict(scene, panoptic=False, semantic=False)
    with pytest.raises(TargetUnavailableError) as err:
        _mapper([], targets=("segments",))(d)
    msg = str(err.value)
    for part in ("'segments'", scene["image"], "pan_seg_file_name", "segments_info", "sem_seg_file_name"):
        assert part in msg
    assert isinstance(err.value, DatasetError)


def test_instances_on_semantic_only_data(scene):
    with pytest.raises(TargetUnavailableError, match="'instances'.*annotations"):
        _mapper([], targets=("instances",))(fx.make_dict(scene, annos="none", panoptic=False))


def test_instances_from_panoptic_when_no_annotations(scene):
    out = _mapper([], targets=("instances",))(fx.make_dict(scene, annos="none", semantic=False))
    inst = out["instances"]
    assert isinstance(inst.gt_masks, BitMasks) and len(inst) == len(fx.THINGS)
    masks = fx.thing_masks()
    for k, (sid, cls, _) in enumerate(fx.THINGS):
        assert np.array_equal(inst.gt_masks.tensor[k].numpy(), masks[sid]) and inst.gt_classes[k] == cls
        assert np.allclose(inst.gt_boxes.tensor[k].numpy(), fx.tight_box(masks[sid]))


def test_rle_with_polygon_format_is_an_error(scene):
    with pytest.raises(DatasetError, match="RLE.*MASK_FORMAT=bitmask"):
        _mapper([], targets=("instances",), instance_mask_format="polygon")(fx.make_dict(scene, annos="rle"))


def test_unknown_target_fails_at_construction():
    with pytest.raises(KeyError, match="no_such_target.*registered"):
        _mapper([], targets=("no_such_target",))


def test_label_size_mismatch(scene, tmp_path):
    bad = tmp_path / "small.png"
    Image.fromarray(np.zeros((fx.H - 1, fx.W), np.uint8)).save(bad)
    d = fx.make_dict(scene)
    d["sem_seg_file_name"] = str(bad)
    with pytest.raises(DatasetError, match="small.png"):
        _mapper([], targets=("sem_seg",))(d)


def test_panoptic_png_disagreeing_with_json(scene):
    d = fx.make_dict(scene, semantic=False)
    d["segments_info"] = [s for s in d["segments_info"] if s["id"] != 12]
    with pytest.raises(DatasetError, match="12"):
        _mapper([], targets=("segments",))(d)


def test_multichannel_semantic_png(scene):
    d = fx.make_dict(scene)
    d["sem_seg_file_name"] = scene["image"]
    with pytest.raises(DatasetError, match="single-channel"):
        _mapper([], targets=("sem_seg",))(d)
