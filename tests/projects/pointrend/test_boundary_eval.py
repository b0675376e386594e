"""Boundary metrics: hand-checked boundary bands; ground truth as predictions scores 100."""
import json

import d2ext  # noqa: F401

import numpy as np
import pycocotools.mask as mask_util

from d2ext_projects.pointrend.boundary_eval import boundary_mask, evaluate_files


def test_boundary_band_of_a_square():
    mask = np.zeros((50, 50), np.uint8)  # diagonal 70.7 -> d = round(1.41) = 1
    mask[10:30, 10:30] = 1
    band = boundary_mask(mask)
    expected = mask.copy()
    expected[11:29, 11:29] = 0
    assert np.array_equal(band, expected)
    full = np.ones((50, 50), np.uint8)  # the image border is a contour
    assert boundary_mask(full).sum() == 50 * 50 - 48 * 48


def _write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


def test_ground_truth_scores_100_and_eroded_masks_lose_more_boundary_ap(tmp_path):
    masks = []
    for y, x in ((5, 5), (40, 60)):
        m = np.zeros((100, 120), np.uint8)
        m[y : y + 40, x : x + 50] = 1
        masks.append(m)
    anns, results, shrunk = [], [], []
    for i, m in enumerate(masks, start=1):
        rle = mask_util.encode(np.asfortranarray(m))
        rle["counts"] = rle["counts"].decode()
        bbox = [float(v) for v in mask_util.toBbox(rle)]
        anns.append({"id": i, "image_id": 1, "category_id": 1, "segmentation": rle, "area": float(m.sum()),
                     "bbox": bbox, "iscrowd": 0})
        results.append({"image_id": 1, "category_id": 1, "segmentation": rle, "score": 1.0})
        s = np.zeros_like(m)
        ys, xs = np.nonzero(m)
        s[ys.min() + 2 : ys.max() - 1, xs.min() + 2 : xs.max() - 1] = 1  # 2 px thinner on each side
        srle = mask_util.encode(np.asfortranarray(s))
        srle["counts"] = srle["counts"].decode()
        shrunk.append({"image_id": 1, "category_id": 1, "segmentation": srle, "score": 1.0})
    gt = _write(tmp_path, "gt.json", {
        "images": [{"id": 1, "height": 100, "width": 120, "file_name": "x.png"}],
        "annotations": anns, "categories": [{"id": 1, "name": "thing"}],
    })
    perfect = evaluate_files(gt, _write(tmp_path, "perfect.json", results))
    assert all(abs(v - 100) < 1e-6 for v in perfect.values()), perfect
    off = evaluate_files(gt, _write(tmp_path, "shrunk.json", shrunk))
    # mask IoU of the thinner masks is ~0.83 (> 0.80), their boundary IoU much lower
    assert off["boundary_AP"] < off["AP"] and off["AP_strict"] < off["AP"]
