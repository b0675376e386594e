"""Box point features and point labels against dense references."""
import d2ext  # noqa: F401

import pytest
import torch
from detectron2.structures import BitMasks, PolygonMasks

from d2ext.layers import point_sample
from d2ext_projects.pointrend.point_features import (
    box_to_image_coords,
    point_labels,
    regular_grid_coords,
    sample_bool_masks,
    sample_box_features,
)


def test_regular_grid_is_row_major_cell_centres():
    g = regular_grid_coords(2, 3)
    assert g.shape == (3, 4, 2)
    torch.testing.assert_close(g[0], torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]))


def test_box_to_image_coords():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    xy = box_to_image_coords(boxes, torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.5, 0.25]]]))
    torch.testing.assert_close(xy, torch.tensor([[[10.0, 20.0], [30.0, 60.0], [20.0, 30.0]]]))


def test_box_features_on_aligned_boxes_equal_indexing():
    """A box covering k x k cells of a stride-s map, sampled on a k x k grid, reads those cells."""
    torch.manual_seed(0)
    s, k = 4, 3
    feats = torch.randn(2, 5, 10, 12, dtype=torch.float64)
    p3 = torch.randn(2, 7, 5, 6, dtype=torch.float64)  # a second level, stride 8
    boxes = [
        torch.tensor([[1 * s, 2 * s, 4 * s, 5 * s], [6 * s, 0, 9 * s, 3 * s]], dtype=torch.float64),
        torch.zeros(0, 4, dtype=torch.float64),  # an image without boxes
    ]
    grid = regular_grid_coords(k, 2, dtype=torch.float64)
    out = sample_box_features([feats, p3], [s, 2 * s], boxes, grid)
    assert out.shape == (2, 12, k * k)
    ref0 = feats[0, :, 2:5, 1:4].reshape(5, -1)
    ref1 = feats[0, :, 0:3, 6:9].reshape(5, -1)
    torch.testing.assert_close(out[0, :5], ref0)
    torch.testing.assert_close(out[1, :5], ref1)
    # the second level is interpolated: compare with point_sample on image-normalized coords
    xy = box_to_image_coords(boxes[0], grid) / torch.tensor([6 * 8.0, 5 * 8.0], dtype=torch.float64)
    torch.testing.assert_close(out[:, 5:], point_sample(p3[:1].expand(2, -1, -1, -1), xy))


def test_box_features_follow_their_image():
    torch.manual_seed(1)
    feats = torch.randn(3, 2, 8, 8)
    boxes = [torch.tensor([[0.0, 0.0, 32.0, 32.0]]), torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 32.0, 32.0]] * 2)]
    out = sample_box_features([feats], [4], boxes, regular_grid_coords(8, 3))
    torch.testing.assert_close(out[0], feats[0].reshape(2, -1))
    torch.testing.assert_close(out[1], feats[2].reshape(2, -1))
    torch.testing.assert_close(out[2], feats[2].reshape(2, -1))


def test_box_features_without_autograd_equal_the_autograd_path_bit_for_bit():
    """Inference samples each image's map broadcast to its boxes, in channels-last
    layout; training samples it once per image (contiguous): the same values exactly."""
    torch.manual_seed(2)
    p2, p3 = torch.randn(3, 6, 20, 24), torch.randn(3, 4, 10, 12)
    boxes = [torch.tensor([[3.0, 5.0, 60.0, 70.0], [10.0, 1.0, 90.0, 40.0]]), torch.zeros(0, 4),
             torch.tensor([[-4.0, 0.0, 96.0, 80.0]])]  # an image without boxes; one past the edge
    coords = torch.rand(3, 17, 2)
    for levels, strides in (([p2], [4]), ([p2, p3], [4, 8])):
        trained = [f.clone().requires_grad_() for f in levels]
        ref = sample_box_features(trained, strides, boxes, coords)
        assert ref.requires_grad  # the per-image path
        with torch.no_grad():
            out = sample_box_features(levels, strides, boxes, coords)
            out_cl = sample_box_features(
                [f.contiguous(memory_format=torch.channels_last) for f in levels], strides, boxes, coords)
        assert torch.equal(out, ref.detach()) and torch.equal(out_cl, ref.detach())
        # one box in one image: the broadcast path without any copy
        with torch.no_grad():
            one = sample_box_features([levels[0][:1]], strides[:1], [boxes[0]], coords[:2])
        torch.testing.assert_close(one, ref.detach()[:2, :6], rtol=0, atol=0)


def test_sample_bool_masks_equals_point_sample_of_float_masks():
    torch.manual_seed(2)
    masks = torch.rand(4, 9, 13) > 0.5
    coords = torch.rand(4, 50, 2, dtype=torch.float64) * 1.2 - 0.1  # some outside the mask
    ref = point_sample(masks[:, None].double(), coords)[:, 0]
    torch.testing.assert_close(sample_bool_masks(masks, coords), ref)


def test_point_labels_of_bitmasks_at_pixel_centres_and_one_pixel_object():
    masks = torch.zeros(1, 20, 30, dtype=torch.bool)
    masks[0, 7, 11] = True  # a one-pixel object
    boxes = torch.tensor([[10.0, 6.0, 13.0, 9.0]])  # 3 x 3 pixels around it
    labels = point_labels(BitMasks(masks), boxes, regular_grid_coords(3, 1))
    torch.testing.assert_close(labels, torch.tensor([[0.0, 0, 0, 0, 1, 0, 0, 0, 0]]))


def test_point_labels_of_polygons_match_bitmasks():
    square = [[4.0, 4.0, 16.0, 4.0, 16.0, 12.0, 4.0, 12.0]]
    bit = torch.zeros(1, 20, 24, dtype=torch.bool)
    bit[0, 4:12, 4:16] = True
    boxes = torch.tensor([[2.0, 2.0, 18.0, 14.0]])
    coords = torch.rand(1, 200, 2)
    from_poly = point_labels(PolygonMasks([square]), boxes, coords)
    from_bits = point_labels(BitMasks(bit), boxes, coords)
    # both are right away from the edge; within a pixel of it the rasterizations differ
    xy = box_to_image_coords(boxes, coords)[0]
    far = ((xy[:, 0] - 4).abs() > 1) & ((xy[:, 0] - 16).abs() > 1) & ((xy[:, 1] - 4).abs() > 1) & ((xy[:, 1] - 12).abs() > 1)
    torch.testing.assert_close(from_poly[0, far], from_bits[0, far])
    assert far.sum() > 100


def test_point_labels_refuse_other_mask_types():
    with pytest.raises(TypeError, match="MASK_FORMAT"):
        point_labels(torch.zeros(1, 4, 4), torch.zeros(1, 4), torch.zeros(1, 2, 2))
