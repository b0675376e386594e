"""The "r2o_views" target: output contract, geometry against the whole image,
augmentation statistics, superpixels and their cache, seeding, config errors,
and the common mapper built from a config."""
import math
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import roi_align

import d2ext_projects  # noqa: F401  (registers R2O's config keys)
import d2ext_projects.r2o.views as views_module
from d2ext.config import get_cfg
from d2ext.data.mapper import CommonDatasetMapper
from d2ext.data.targets import TARGET_BUILDERS, MapperSettings, TargetContext
from d2ext.seeding import Stream, derive_seed, seed_global_rngs
from d2ext_projects.r2o import superpixels as superpixels_module
from d2ext_projects.r2o.superpixels import SuperpixelCache, consecutive_labels
from d2ext_projects.r2o.views import R2OViews, gaussian_kernel_size, random_resized_crop_params

H, W, S, G = 48, 64, 32, 64
KEYS = {"view1", "view2", "whole", "boxes", "flips", "superpixels"}
# Photometric steps off: a view is then its crop of the image, resized and maybe flipped.
GEOMETRIC = dict(color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=(0.0, 0.0), solarize_prob=(0.0, 0.0))


def rectangles(h=H, w=W) -> np.ndarray:
    """(h, w, 3) uint8 RGB: a few coloured rectangles on a beige ground."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (200, 180, 160)
    img[4 * h // 48 : 24 * h // 48, 6 * w // 64 : 30 * w // 64] = (230, 20, 20)
    img[28 * h // 48 : 44 * h // 48, 20 * w // 64 : 50 * w // 64] = (20, 20, 230)
    img[8 * h // 48 : 40 * h // 48, 46 * w // 64 : 60 * w // 64] = (20, 200, 20)
    return img


def smooth(h=H, w=W) -> np.ndarray:
    """(h, w, 3) uint8 RGB of low-frequency ramps, asymmetric left-right: resampling
    by two different paths agrees closely, and a wrong flip shows."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 30 + 200 * x / w
    g = 40 + 180 * y / h
    b = 128 + 90 * np.sin(2 * np.pi * (0.6 * x / w + 0.3 * y / h))
    return np.clip(np.stack([r, g, b], -1), 0, 255).round().astype(np.uint8)


def context(image: np.ndarray, image_format="RGB", file_name="img.png") -> TargetContext:
    settings = MapperSettings(True, image_format, 255, "polygon", False, -1)
    return TargetContext(
        image=image, original_image=image, transforms=None, image_size=image.shape[:2],
        sem_seg=None, pan_ids=None, dataset_dict={"file_name": file_name}, settings=settings,
    )


def build(image, image_format="RGB", file_name="img.png", **kw) -> dict:
    kw = {"crop_size": S, "whole_size": G, "slic_segments": 50, **kw}
    out = {}
    R2OViews(**kw)(context(image, image_format, file_name), out)
    return out["r2o_views"]


def test_output_contract():
    np.random.seed(0)
    out = build(rectangles())
    assert set(out) == KEYS
    for key in ("view1", "view2"):
        assert out[key].dtype == torch.uint8 and tuple(out[key].shape) == (3, S, S)
    assert out["whole"].dtype == torch.uint8 and tuple(out["whole"].shape) == (3, G, G)
    assert out["boxes"].dtype == torch.float32 and tuple(out["boxes"].shape) == (2, 4)
    assert out["flips"].dtype == torch.bool and tuple(out["flips"].shape) == (2,)
    assert out["superpixels"].dtype == torch.int64 and tuple(out["superpixels"].shape) == (G, G)


def test_whole_is_the_resized_original_in_the_input_format():
    rgb = rectangles()
    out_rgb = build(rgb)
    out_bgr = build(np.ascontiguousarray(rgb[..., ::-1]), image_format="BGR")
    # Independent resize: PIL's bilinear (antialiased like torchvision's); equal up to rounding.
    expected = np.asarray(Image.fromarray(rgb).resize((G, G), Image.BILINEAR)).transpose(2, 0, 1)
    diff = np.abs(out_rgb["whole"].numpy().astype(int) - expected.astype(int))
    assert diff.mean() < 1.0 and diff.max() <= 40  # edges of the rectangles may differ
    assert torch.equal(out_bgr["whole"], out_rgb["whole"].flip(0))
    # The red rectangle is red in channel 0 of RGB and channel 2 of BGR.
    cy, cx = 14 * G // 48, 18
    assert out_rgb["whole"][:, cy, cx].tolist() == [230, 20, 20]
    assert out_bgr["whole"][:, cy, cx].tolist() == [20, 20, 230]


@pytest.mark.parametrize("image_format", ["RGB", "BGR"])
def test_views_are_their_box_of_the_whole_image(image_format):
    rgb = smooth()
    image = rgb if image_format == "RGB" else np.ascontiguousarray(rgb[..., ::-1])
    worst, margins = 0.0, []
    for seed in range(12):
        np.random.seed(seed)
        out = build(image, image_format, **GEOMETRIC)
        whole = out["whole"][None].float()
        boxes = out["boxes"]
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= G).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        rois = torch.cat([torch.zeros(2, 1), boxes], 1)
        crops = roi_align(whole, rois, output_size=S, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        for i in range(2):
            view = out[f"view{i + 1}"].float()
            as_recorded = crops[i].flip(-1) if out["flips"][i] else crops[i]
            other_flip = crops[i] if out["flips"][i] else crops[i].flip(-1)
            err = (view - as_recorded).abs().mean().item()
            worst = max(worst, err)
            margins.append((view - other_flip).abs().mean().item() - err)
    assert worst < 1.0, worst  # a box 1 px off in the whole frame gives ~2
    # The comparison can fail: the other flip state is clearly worse (asymmetric image).
    assert min(margins) > 3.0 and np.median(margins) > 10.0, margins


def test_box_scaling_to_the_whole_frame_by_hand():
    # Scale and ratio pinned: 10 tries fail (a 55 x 55 square does not fit a
    # height of 48), so torchvision's fallback: the centred 48 x 48 square.
    np.random.seed(0)
    assert random_resized_crop_params(H, W, (1.0, 1.0), (1.0, 1.0)) == (0, 8, 48, 48)
    out = build(smooth(), crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), **GEOMETRIC)
    expected = [8 * G / W, 0.0, 56 * G / W, 48 * G / H]  # x scaled by G / W, y by G / H
    assert torch.allclose(out["boxes"], torch.tensor([expected, expected]))


def test_crop_sampling_statistics():
    np.random.seed(1)
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    areas = []
    for _ in range(500):
        top, left, h, w = random_resized_crop_params(H, W, scale, ratio)
        assert 0 <= top and top + h <= H and 0 <= left and left + w <= W and h > 0 and w > 0
        # Rounding of w and h to whole pixels moves area and ratio a little.
        assert scale[0] * H * W * 0.8 <= h * w <= H * W
        assert ratio[0] * 0.85 <= w / h <= ratio[1] / 0.85
        areas.append(h * w / (H * W))
    # Uniform area fractions, less those that do not fit: mean well inside the range.
    assert 0.3 < np.mean(areas) < 0.6 and min(areas) < 0.15 and max(areas) > 0.85
    # Degenerate images still give a crop inside them.
    for hh, ww in ((1, 100), (100, 1), (1, 1)):
        top, left, h, w = random_resized_crop_params(hh, ww, scale, ratio)
        assert 0 <= top and top + h <= hh and 0 <= left and left + w <= ww and h >= 1 and w >= 1


def test_flip_statistics():
    image = smooth()
    flips = []
    np.random.seed(2)
    builder = R2OViews(crop_size=8, whole_size=G, slic_segments=10, **GEOMETRIC)
    for _ in range(300):
        out = {}
        builder(context(image), out)
        flips.append(out["r2o_views"]["flips"].numpy())
    flips = np.array(flips)
    assert np.all(np.abs(flips.mean(0) - 0.5) < 0.1), flips.mean(0)
    # Each view draws its own flip (the reference flipped both always).
    assert abs((flips[:, 0] != flips[:, 1]).mean() - 0.5) < 0.1
    for prob in (0.0, 1.0):
        np.random.seed(3)
        out = build(image, flip_prob=prob, **GEOMETRIC)
        assert out["flips"].tolist() == [bool(prob)] * 2


def test_images_smaller_than_the_crop():
    np.random.seed(4)
    out = build(rectangles(12, 20))
    assert tuple(out["view1"].shape) == (3, S, S) and tuple(out["whole"].shape) == (3, G, G)
    assert (out["boxes"][:, 2:] <= G + 1e-4).all()


def test_solarize_inverts_bright_pixels_of_its_view_only():
    image = rectangles()
    np.random.seed(5)
    plain = build(image, **GEOMETRIC)
    np.random.seed(5)  # the same draws: the solarize coin is tossed in both configs
    solar = build(image, **{**GEOMETRIC, "solarize_prob": (0.0, 1.0)})
    assert torch.equal(solar["view1"], plain["view1"])
    v = plain["view2"].int()
    assert torch.equal(solar["view2"].int(), torch.where(v >= 128, 255 - v, v))
    assert torch.equal(solar["boxes"], plain["boxes"]) and torch.equal(solar["whole"], plain["whole"])


def numpy_blur(img: np.ndarray, sigma: float, k: int = 3) -> np.ndarray:
    """(C, h, w) separable Gaussian blur, reflected edges (as torch's "reflect" pad)."""
    x = np.arange(k) - (k - 1) / 2
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    r = k // 2
    padded = np.pad(img, ((0, 0), (r, r), (r, r)), mode="reflect")
    h, w = img.shape[1:]
    rows = sum(kernel[i] * padded[:, i : i + h, :] for i in range(k))
    return sum(kernel[i] * rows[:, :, i : i + w] for i in range(k))


def test_grayscale_blur_and_brightness():
    image = rectangles()
    np.random.seed(6)
    plain = build(image, **GEOMETRIC)
    np.random.seed(6)
    gray = build(image, **{**GEOMETRIC, "grayscale_prob": 1.0})
    for key in ("view1", "view2"):
        g = gray[key].int()
        assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
        # ITU-R 601 luma of the plain view, up to rounding.
        p = plain[key].float()
        luma = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
        assert (g[0].float() - luma).abs().max() <= 1.0

    np.random.seed(6)
    blurred = build(image, **{**GEOMETRIC, "blur_prob": (1.0, 0.0)})
    assert torch.equal(blurred["boxes"][0], plain["boxes"][0])
    # The blurred view is a Gaussian blur (kernel 3 at S = 32, reflected edges) of the
    # plain view with some sigma in [0.1, 2.0]: found by a search, by a numpy blur.
    b, p = blurred["view1"].numpy().astype(float), plain["view1"].numpy().astype(float)
    errors = [np.abs(numpy_blur(p, sigma) - b).max() for sigma in np.arange(0.1, 2.0001, 0.01)]
    assert min(errors) <= 1.0
    assert not np.array_equal(b, p)

    np.random.seed(6)
    bright = build(image, **{**GEOMETRIC, "color_jitter_prob": 1.0, "color_jitter": (0.4, 0.0, 0.0, 0.0)})
    p = plain["view1"].float()
    x = bright["view1"].float()
    unclipped = (x < 255) & (p > 20)
    factor = (x[unclipped] / p[unclipped]).median().item()
    assert 0.6 <= factor <= 1.4
    assert torch.allclose(x, (p * factor).clamp(0, 255), atol=2.0)


def test_color_jitter_order_is_random(monkeypatch):
    # torchvision's ColorJitter applies its four adjustments in a random order:
    # over 40 draws each of the four must come first at least once.
    calls = []
    real = views_module.TF

    class Recorder:
        def __getattr__(self, name):
            fn = getattr(real, name)
            if not name.startswith("adjust_"):
                return fn
            return lambda img, factor: (calls.append(name), fn(img, factor))[1]

    monkeypatch.setattr(views_module, "TF", Recorder())
    builder = R2OViews(crop_size=S, whole_size=G, color_jitter=(0.4, 0.4, 0.2, 0.1))
    all_four = sorted(f"adjust_{n}" for n in ("brightness", "contrast", "saturation", "hue"))
    firsts = set()
    np.random.seed(7)
    for _ in range(40):
        calls.clear()
        builder._color_jitter(torch.rand(3, 8, 8))
        assert sorted(calls) == all_four
        firsts.add(calls[0])
    assert len(firsts) == 4
    # A strength of 0 skips that adjustment, as torchvision's does.
    calls.clear()
    R2OViews(crop_size=S, whole_size=G, color_jitter=(0.4, 0.0, 0.2, 0.0))._color_jitter(torch.rand(3, 8, 8))
    assert sorted(calls) == ["adjust_brightness", "adjust_saturation"]


def test_same_seed_same_views_other_position_other_views():
    image = rectangles()

    def at(position):
        seed_global_rngs(derive_seed(0, Stream.AUGMENTATION, position), cuda=False)
        return build(image)

    a, b, c = at(3), at(3), at(4)
    for key in KEYS:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["boxes"], c["boxes"])


def test_superpixels_are_consecutive_and_of_the_rgb_whole_image(monkeypatch):
    seen = []
    real = superpixels_module.slic
    monkeypatch.setattr(
        superpixels_module, "slic", lambda img, **kw: (seen.append(img.copy()), real(img, **kw))[1]
    )
    rgb = rectangles()
    out = build(np.ascontiguousarray(rgb[..., ::-1]), image_format="BGR", file_name="a.png")
    labels = out["superpixels"]
    n = int(labels.max()) + 1
    assert n > 5 and torch.equal(torch.unique(labels), torch.arange(n))
    # SLIC saw the uint8 RGB whole image, not the BGR one.
    assert len(seen) == 1 and seen[0].dtype == np.uint8
    assert np.array_equal(seen[0], out["whole"].flip(0).permute(1, 2, 0).numpy())


def test_consecutive_labels_by_hand():
    labels = np.array([[5, 5, 9], [2, 9, 2]])
    assert consecutive_labels(labels).tolist() == [[1, 1, 2], [0, 2, 0]]
    assert consecutive_labels(labels).dtype == np.int64


def test_superpixel_cache_in_memory_and_on_disk(tmp_path, monkeypatch):
    calls = []
    real = views_module.slic_superpixels
    monkeypatch.setattr(views_module, "slic_superpixels", lambda *a: (calls.append(1), real(*a))[1])
    cache_dir = tmp_path / "slic"
    image = rectangles()
    kw = dict(
        crop_size=S, whole_size=G, slic_segments=50, slic_compactness=20.0, slic_cache_dir=str(cache_dir)
    )
    builder = R2OViews(**kw)
    first, second = {}, {}
    builder(context(image, file_name="a.png"), first)
    builder(context(image, file_name="a.png"), second)
    assert len(calls) == 1
    assert torch.equal(first["r2o_views"]["superpixels"], second["r2o_views"]["superpixels"])

    key = SuperpixelCache.key("a.png", G, 50, 20.0)
    path = builder.cache.path(key)
    assert os.path.dirname(path) == str(cache_dir)
    assert sorted(os.listdir(cache_dir)) == [os.path.basename(path)]
    assert np.array_equal(np.load(path), first["r2o_views"]["superpixels"].numpy())

    # Another worker (a fresh builder, empty memory) reads the file instead of computing.
    out = {}
    R2OViews(**kw)(context(image, file_name="a.png"), out)
    assert len(calls) == 1
    assert torch.equal(out["r2o_views"]["superpixels"], first["r2o_views"]["superpixels"])

    # Other settings or another file are other entries.
    R2OViews(**{**kw, "slic_segments": 30})(context(image, file_name="a.png"), {})
    R2OViews(**kw)(context(image, file_name="b.png"), {})
    assert len(calls) == 3 and len(os.listdir(cache_dir)) == 3

    # A damaged file is recomputed and rewritten.
    with open(path, "wb") as f:
        f.write(b"not a numpy file")
    out = {}
    R2OViews(**kw)(context(image, file_name="a.png"), out)
    assert len(calls) == 4 and np.array_equal(np.load(path), out["r2o_views"]["superpixels"].numpy())
    assert not [n for n in os.listdir(cache_dir) if n.startswith(".tmp")]


def test_memory_cache_is_bounded():
    cache = SuperpixelCache(max_entries=2)
    for name in "abc":
        cache.get(name, (2, 2), lambda: np.zeros((2, 2), np.int64))
    assert list(cache._memory) == ["b", "c"]


def test_blur_kernel_size():
    assert gaussian_kernel_size(224) == 23  # BYOL's
    assert gaussian_kernel_size(32) == 3 and gaussian_kernel_size(64) == 7 and gaussian_kernel_size(8) == 3
    assert all(gaussian_kernel_size(s) % 2 == 1 for s in range(1, 300))


def _cfg(**views):
    cfg = get_cfg()
    cfg.MODEL.R2O.VIEWS.CROP_SIZE = S
    cfg.MODEL.R2O.VIEWS.WHOLE_SIZE = G
    cfg.MODEL.R2O.VIEWS.SLIC_SEGMENTS = 50
    for key, value in views.items():
        cfg.MODEL.R2O.VIEWS[key] = value
    return cfg


@pytest.mark.parametrize(
    "key, value",
    [
        ("CROP_SCALE", (0.5, 0.2)),
        ("CROP_SCALE", (0.0, 1.0)),
        ("CROP_SCALE", (0.1, 1.5)),
        ("CROP_RATIO", (1.5, 0.5)),
        ("FLIP_PROB", 1.5),
        ("COLOR_JITTER_PROB", -0.1),
        ("GRAYSCALE_PROB", 2.0),
        ("BLUR_PROB", (1.0, -0.1)),
        ("SOLARIZE_PROB", (0.0, 1.2)),
        ("COLOR_JITTER", (0.4, 0.4, 0.2, 0.7)),
        ("WHOLE_SIZE", 48),
        ("CROP_SIZE", 0),
    ],
)
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=re.escape(f"MODEL.R2O.VIEWS.{key}")):
        R2OViews.from_config(_cfg(**{key: value}))


def test_whole_size_must_divide_by_the_paint_stride():
    cfg = _cfg(WHOLE_SIZE=96)
    cfg.MODEL.R2O.KMEANS.PAINT_STRIDE = 5
    with pytest.raises(ValueError, match=re.escape("MODEL.R2O.KMEANS.PAINT_STRIDE")):
        R2OViews.from_config(cfg)
    cfg.MODEL.R2O.KMEANS.PAINT_STRIDE = 4
    assert R2OViews.from_config(cfg).whole_size == 96


def test_from_config_reads_the_views_keys():
    b = R2OViews.from_config(_cfg(BLUR_PROB=(0.5, 0.25), SOLARIZE_PROB=(0.1, 0.3), FLIP_PROB=0.2))
    assert (b.crop_size, b.whole_size, b.flip_prob) == (S, G, 0.2)
    assert b.blur_prob == (0.5, 0.25) and b.solarize_prob == (0.1, 0.3)
    assert b.crop_scale == (0.08, 1.0) and b.color_jitter == (0.4, 0.4, 0.2, 0.1)
    assert TARGET_BUILDERS.get("r2o_views").build is R2OViews


def test_common_mapper_from_config_builds_the_views(tmp_path):
    rgb = rectangles()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    cfg = _cfg(SLIC_CACHE_DIR=str(tmp_path / "cache"))
    cfg.MODEL.META_ARCHITECTURE = "R2O"  # targets from R2O's model I/O
    cfg.INPUT.MIN_SIZE_TRAIN = (32,)
    cfg.INPUT.MAX_SIZE_TRAIN = 64
    mapper = CommonDatasetMapper(cfg, is_train=True)
    assert mapper.targets == ("r2o_views",)
    d = {"file_name": str(tmp_path / "a.png"), "height": H, "width": W, "image_id": 0}

    seed_global_rngs(derive_seed(0, Stream.AUGMENTATION, 0), cuda=False)
    out = mapper(d)
    seed_global_rngs(derive_seed(0, Stream.AUGMENTATION, 0), cuda=False)
    again = mapper(d)
    views = out["r2o_views"]
    assert set(views) == KEYS and tuple(views["view1"].shape) == (3, S, S)
    for key in KEYS:
        assert torch.equal(views[key], again["r2o_views"][key]), key
    # INPUT.FORMAT is BGR by default: the views come in BGR, from the original image.
    assert cfg.INPUT.FORMAT == "BGR"
    assert views["whole"][:, 14 * G // 48, 18].tolist() == [20, 20, 230]
    assert len(os.listdir(tmp_path / "cache")) == 1
    assert not math.isnan(float(views["boxes"].sum()))


def test_unsupported_input_format_names_the_key():
    cfg = _cfg()
    cfg.INPUT.FORMAT = "L"
    with pytest.raises(ValueError, match=re.escape("INPUT.FORMAT")):
        R2OViews.from_config(cfg)
    with pytest.raises(ValueError, match=re.escape("INPUT.FORMAT")):
        build(rectangles()[..., :1], image_format="L")


def test_byol_mode_skips_the_superpixels_and_keeps_the_views():
    """BYOL's training reads no superpixels, so its loader does not run SLIC; the views
    (the same random numbers) are unchanged, and the evaluation can ask for them."""
    cfg = _cfg()
    cfg.MODEL.R2O.MODE = "byol"
    byol, r2o = R2OViews.from_config(cfg), R2OViews.from_config(_cfg())
    forced = R2OViews.from_config(cfg, superpixels=True)
    outs = []
    for builder in (byol, r2o, forced):
        np.random.seed(0)
        out = {}
        builder(context(rectangles()), out)
        outs.append(out["r2o_views"])
    assert set(outs[0]) == KEYS - {"superpixels"} and set(outs[1]) == set(outs[2]) == KEYS
    for key in KEYS - {"superpixels"}:
        assert torch.equal(outs[0][key], outs[1][key])
    assert torch.equal(outs[1]["superpixels"], outs[2]["superpixels"])
