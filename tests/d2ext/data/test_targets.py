"""Target builders and their registry, on hand-made contexts."""
import numpy as np
import pytest
import torch

import d2ext  # noqa: F401  (compat first)
from detectron2.data import transforms as T
from detectron2.structures import PolygonMasks

from d2ext.data.mapper import transform_label_map
from d2ext.data.targets import (
    TARGET_BUILDERS,
    MapperSettings,
    TargetContext,
    TargetRegistry,
    TargetUnavailableError,
    require,
    semantic_from_panoptic,
)


def _settings(**kw):
    base = dict(is_train=True, image_format="RGB", ignore_label=255, instance_mask_format="bitmask",
                recompute_boxes=False, size_divisibility=-1)
    base.update(kw)
    return MapperSettings(**base)


def _ctx(sem=None, pan=None, dataset_dict=None, **settings):
    shape = (sem if sem is not None else pan).shape
    img = np.zeros(shape + (3,), np.uint8)
    return TargetContext(
        image=img, original_image=img, transforms=T.TransformList([]), image_size=shape,
        sem_seg=sem, pan_ids=pan, dataset_dict=dataset_dict or {"file_name": "x.png"},
        settings=_settings(**settings),
    )


INFOS = [
    {"id": 5, "category_id": 0, "iscrowd": 0, "isthing": True},
    {"id": 6, "category_id": 0, "iscrowd": 1, "isthing": True},
    {"id": 7, "category_id": 3, "iscrowd": 0, "isthing": False},
    {"id": 8, "category_id": 1, "iscrowd": 0, "isthing": True},  # cropped away: absent
]
PAN = np.array([[5, 5, 6, 0], [7, 7, 6, 9], [7, 7, 7, 7]])


def test_semantic_from_panoptic():
    sem = semantic_from_panoptic(PAN, INFOS, 255)
    # crowd keeps its class; void (0) and an id without info (9) are ignored
    assert np.array_equal(sem, [[0, 0, 0, 255], [3, 3, 0, 255], [3, 3, 3, 3]])
    assert sem.dtype == np.uint8
    wide = semantic_from_panoptic(PAN, INFOS, 1000)
    assert wide.dtype == np.int32 and wide[0, 3] == 1000
    assert (semantic_from_panoptic(PAN, [], 255) == 255).all()


def test_segments_from_panoptic_drop_crowd_and_absent():
    d = {"file_name": "x.png", "pan_seg_file_name": "p.png", "segments_info": INFOS}
    out = {}
    TARGET_BUILDERS.get("segments").build(_ctx(pan=PAN, dataset_dict=d), out)
    segs = out["segments"]
    assert segs.gt_classes.tolist() == [0, 3] and segs.gt_classes.dtype == torch.int64
    assert segs.gt_masks.dtype == torch.bool and segs.image_size == PAN.shape
    assert np.array_equal(segs.gt_masks.numpy(), [PAN == 5, PAN == 7])


def test_segments_from_semantic_one_per_present_class():
    sem = np.array([[4, 4, 255], [1, 4, 1]], np.int64)
    out = {}
    TARGET_BUILDERS.get("segments").build(_ctx(sem=sem), out)
    assert out["segments"].gt_classes.tolist() == [1, 4]
    assert np.array_equal(out["segments"].gt_masks.numpy(), [sem == 1, sem == 4])


def test_segments_all_ignore_gives_empty_shapes():
    out = {}
    TARGET_BUILDERS.get("segments").build(_ctx(sem=np.full((3, 5), 9, np.int64), ignore_label=9), out)
    assert tuple(out["segments"].gt_masks.shape) == (0, 3, 5) and tuple(out["segments"].gt_classes.shape) == (0,)


def test_sem_seg_target_is_long():
    out = {}
    TARGET_BUILDERS.get("sem_seg").build(_ctx(sem=np.array([[1, 255]], np.int64)), out)
    assert out["sem_seg"].dtype == torch.int64 and out["sem_seg"].tolist() == [[1, 255]]


def test_empty_polygon_instances_keep_mask_field():
    out = {}
    ctx = _ctx(sem=np.zeros((4, 4), np.int64), dataset_dict={"file_name": "x", "annotations": []},
               instance_mask_format="polygon")
    TARGET_BUILDERS.get("instances").build(ctx, out)
    assert len(out["instances"]) == 0 and isinstance(out["instances"].gt_masks, PolygonMasks)


def test_builtin_maps_follow_the_dict():
    inst, segs, sem = (TARGET_BUILDERS.get(n) for n in ("instances", "segments", "sem_seg"))
    pan = {"file_name": "x", "pan_seg_file_name": "p", "segments_info": []}
    assert inst.maps({"file_name": "x", "annotations": []}) == frozenset()
    assert inst.maps(pan) == {"pan_seg"}
    assert segs.maps({**pan, "sem_seg_file_name": "s"}) == {"pan_seg"}  # panoptic preferred
    assert segs.maps({"file_name": "x", "sem_seg_file_name": "s"}) == {"sem_seg"}
    assert sem.maps(pan) == {"sem_seg"}
    with pytest.raises(TargetUnavailableError, match="'sem_seg'"):
        sem.maps({"file_name": "x", "annotations": []})


def test_require_message():
    with pytest.raises(TargetUnavailableError) as err:
        require("views", {"file_name": "a/b.jpg", "height": 1}, [("pan_seg_file_name", "segments_info")])
    msg = str(err.value)
    assert "'views'" in msg and "a/b.jpg" in msg and "missing: ['pan_seg_file_name', 'segments_info']" in msg
    assert "height" in msg  # what the dict does have


def test_registry_protocol():
    reg = TargetRegistry("TEST")

    @reg.register("a", maps=("sem_seg",))
    def build_a(ctx, out):
        out["a"] = 1

    assert reg.names() == ["a"] and "a" in reg and reg.get("a").build is build_a
    with pytest.raises(KeyError, match="already registered"):
        reg.register("a")(build_a)
    with pytest.raises(ValueError, match="unknown label maps"):
        reg.register("b", maps=("depth",))(build_a)
    reg.register("c", maps=lambda d: {"depth"})(build_a)
    with pytest.raises(ValueError, match="depth"):
        reg.get("c").maps({"file_name": "x"})
    with pytest.raises(KeyError, match="'zzz'.*registered: \\['a', 'c'\\]"):
        reg.get("zzz")
    reg.remove("c")
    assert reg.names() == ["a"]


def test_builtins_registered():
    assert {"instances", "sem_seg", "segments"} <= set(TARGET_BUILDERS.names())


@pytest.mark.parametrize(
    "tfm", [T.ResizeTransform(7, 9, 4, 13), T.HFlipTransform(9), T.CropTransform(1, 2, 5, 4)]
)
def test_wide_label_maps_take_the_uint8_path(tfm):
    rng = np.random.RandomState(0)
    small = rng.randint(0, 200, size=(7, 9)).astype(np.uint8)
    ref = tfm.apply_segmentation(small)
    assert np.array_equal(transform_label_map(tfm, small.astype(np.int32)), ref)
    wide = small.astype(np.int32) * 1000 + 70000  # > 16 bits
    out = transform_label_map(tfm, wide)
    assert out.dtype == np.int32 and np.array_equal(out, ref.astype(np.int32) * 1000 + 70000)
