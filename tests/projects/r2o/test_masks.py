"""Superpixel pooling, cluster painting and view masks against direct
computations: numpy means over upsampled features, hand-counted area
fractions, and explicit crops of the whole-image map."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from d2ext_projects.r2o.masks import paint_clusters, region_label_table, superpixel_pool, view_masks


def random_superpixels(b, size, n, seed=0, block=2):
    """(B, H, W) labels: random labels 0..n-1 (some possibly absent) on blocks of block x block pixels."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, n, (b, 1, size // block, size // block), generator=g).float()
    return F.interpolate(coarse, scale_factor=block, mode="nearest")[:, 0].long()


# --- superpixel_pool ---------------------------------------------------------------------------


def numpy_pool(features, superpixels):
    """The direct computation: features upsampled nearest to the label map (exact
    for an integer stride), then the mean over each label's pixels."""
    b, c, h, w = features.shape
    height, width = superpixels.shape[1:]
    rows = []
    for i in range(b):
        ys = np.arange(height) * h // height
        xs = np.arange(width) * w // width
        up = features[i].numpy()[:, ys][:, :, xs]  # (C, H, W)
        labels = superpixels[i].numpy()
        for r in np.unique(labels):
            rows.append((i, r, up[:, labels == r].mean(1)))
    return rows


@pytest.mark.parametrize("size, grid", [(32, 4), (32, 8), (30, 4)])  # 30 / 4 is not an integer stride
def test_superpixel_pool_equals_mean_over_pixels(size, grid):
    torch.manual_seed(0)
    features = torch.randn(2, 5, grid, grid)
    superpixels = random_superpixels(2, size, 40)
    superpixels[1][superpixels[1] == 3] = 39  # label 3 absent from image 1
    emb, image_index, region_index = superpixel_pool(features, superpixels)
    expected = numpy_pool(features, superpixels)
    assert emb.shape == (len(expected), 5)
    assert image_index.tolist() == [e[0] for e in expected]
    assert region_index.tolist() == [e[1] for e in expected]
    assert 3 not in region_index[image_index == 1].tolist()
    np.testing.assert_allclose(emb.numpy(), np.stack([e[2] for e in expected]), rtol=1e-5, atol=1e-6)


def test_superpixel_pool_area_weights_by_hand():
    # 4x4 labels over a 2x2 feature map (stride 2). Superpixel 1 covers 3 pixels of
    # cell (0, 0) and 1 pixel of cell (0, 1): its mean is (3 * 1 + 1 * 10) / 4.
    features = torch.tensor([[[[1.0, 10.0], [100.0, 1000.0]]]])
    superpixels = torch.tensor([[[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]])
    emb, _, region_index = superpixel_pool(features, superpixels)
    assert region_index.tolist() == [0, 1]
    assert emb[1].item() == pytest.approx(13.0 / 4)
    assert emb[0].item() == pytest.approx((1 * 1 + 3 * 10 + 4 * 100 + 4 * 1000) / 12)


def test_superpixel_pool_keeps_superpixels_smaller_than_a_cell():
    features = torch.arange(4.0).view(1, 1, 2, 2)
    superpixels = torch.zeros(1, 32, 32, dtype=torch.long)
    superpixels[0, 20, 5] = 1  # one pixel in cell (1, 0)
    emb, _, region_index = superpixel_pool(features, superpixels)
    assert region_index.tolist() == [0, 1] and emb[1].item() == 2.0


# --- paint_clusters ----------------------------------------------------------------------------


def test_paint_clusters_by_hand():
    # 4x4 image, stride 2 -> 2x2 cells; superpixels 0..2, clusters: 0 -> 1, 1 -> 0, 2 -> 1
    superpixels = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 2, 1], [2, 2, 1, 1]]])
    table = torch.tensor([[1, 0, 1]])
    maps = paint_clusters(superpixels, table, k=3, stride=2)
    assert maps.shape == (1, 3, 2, 2)
    expected = torch.tensor(
        [
            [[0.25, 1.0], [0.0, 0.75]],  # cluster 0 (superpixel 1)
            [[0.75, 0.0], [1.0, 0.25]],  # cluster 1 (superpixels 0 and 2)
            [[0.0, 0.0], [0.0, 0.0]],  # cluster 2 unused
        ]
    )
    torch.testing.assert_close(maps[0], expected)


def test_paint_clusters_rows_sum_to_one_and_table_from_rows():
    superpixels = random_superpixels(3, 32, 30, seed=1)
    features = torch.randn(3, 4, 4, 4)
    _, image_index, region_index = superpixel_pool(features, superpixels)
    labels = torch.randint(0, 5, image_index.shape, generator=torch.Generator().manual_seed(0))
    table = region_label_table(labels, image_index, region_index, 3, int(superpixels.max()) + 1)
    assert table[image_index, region_index].tolist() == labels.tolist()
    maps = paint_clusters(superpixels, table, k=5, stride=4)
    assert maps.shape == (3, 5, 8, 8)
    torch.testing.assert_close(maps.sum(1), torch.ones(3, 8, 8))
    # stride 1: the one-hot of each pixel's cluster
    one_hot = paint_clusters(superpixels, table, k=5, stride=1)
    pixel_cluster = torch.gather(table, 1, superpixels.flatten(1)).view(3, 32, 32)
    torch.testing.assert_close(one_hot, F.one_hot(pixel_cluster, 5).permute(0, 3, 1, 2).float())


def test_paint_clusters_errors():
    superpixels = torch.zeros(1, 6, 6, dtype=torch.long)
    with pytest.raises(ValueError, match="PAINT_STRIDE"):
        paint_clusters(superpixels, torch.zeros(1, 1, dtype=torch.long), k=1, stride=4)
    with pytest.raises(ValueError, match="k = 2"):
        paint_clusters(superpixels, torch.tensor([[3]]), k=2, stride=2)


# --- view_masks --------------------------------------------------------------------------------


def cropped_masks(maps, box, flip, whole, out_size):
    """The exact computation: crop the map to the box (integer-aligned in map
    cells), average-pool to out_size, flip."""
    g = maps.shape[-1]
    x0, y0, x1, y1 = (int(v) * g // whole for v in box.tolist())
    crop = maps[:, y0:y1, x0:x1]
    out = F.avg_pool2d(crop[None], kernel_size=((y1 - y0) // out_size[0], (x1 - x0) // out_size[1]))[0]
    return out.flip(-1) if flip else out


@pytest.mark.parametrize("flips", [[[False, False], [False, False]], [[True, False], [False, True]],
                                   [[True, True], [True, True]]])
def test_view_masks_equal_cropped_and_flipped_whole_image_masks(flips):
    whole, stride, out_size = 64, 4, (2, 3)
    superpixels = random_superpixels(2, whole, 25, seed=2)
    table = torch.randint(0, 6, (2, 25), generator=torch.Generator().manual_seed(1))
    maps = paint_clusters(superpixels, table, k=6, stride=stride)  # (2, 6, 16, 16)
    # boxes in whole-image pixels, on the map's cell grid, sizes multiples of out_size cells
    boxes = torch.tensor(
        [[[0, 0, 48, 32], [16, 8, 40, 32]], [[4, 24, 64, 64], [28, 40, 52, 48]]], dtype=torch.float32
    )
    flips = torch.tensor(flips)
    masks = view_masks(maps, boxes, flips, whole, out_size)
    assert masks.shape == (2, 2, 6, 2, 3)
    for i in range(2):
        for v in range(2):
            expected = cropped_masks(maps[i], boxes[i, v], bool(flips[i, v]), whole, out_size)
            torch.testing.assert_close(masks[i, v], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(masks.sum(2), torch.ones(2, 2, 2, 3), rtol=0, atol=1e-5)


def test_view_masks_equal_masks_painted_from_the_cropped_view():
    # The end-to-end statement: painting the superpixels of the cropped, flipped
    # view directly onto its grid gives the view's masks.
    whole, stride = 64, 4
    superpixels = random_superpixels(1, whole, 30, seed=3)
    table = torch.randint(0, 4, (1, 30), generator=torch.Generator().manual_seed(2))
    maps = paint_clusters(superpixels, table, k=4, stride=stride)
    box = torch.tensor([[[8, 16, 56, 40], [0, 0, 64, 64]]], dtype=torch.float32)
    flips = torch.tensor([[True, False]])
    masks = view_masks(maps, box, flips, whole, (3, 6))
    crop = superpixels[:, 16:40, 8:56].flip(-1)  # (1, 24, 48): cells of 8 x 8 pixels on a 3 x 6 grid
    direct = paint_clusters(crop.contiguous(), table, k=4, stride=8)
    torch.testing.assert_close(masks[:, 0], direct, rtol=0, atol=1e-5)
    # the whole image as a view, not flipped: 64 x 64 pixels on a 3 x 6 grid is
    # not cell-aligned, so only the sums are exact here
    torch.testing.assert_close(masks[:, 1].sum(1), torch.ones(1, 3, 6), rtol=0, atol=1e-5)
    box2 = torch.tensor([[[16, 8, 64, 32], [8, 16, 56, 40]]], dtype=torch.float32)
    masks2 = view_masks(maps, box2, torch.tensor([[False, True]]), whole, (3, 6))
    direct2 = paint_clusters(superpixels[:, 8:32, 16:64].contiguous(), table, k=4, stride=8)
    torch.testing.assert_close(masks2[:, 0], direct2, rtol=0, atol=1e-5)
    torch.testing.assert_close(masks2[:, 1], direct, rtol=0, atol=1e-5)


def test_view_masks_unaligned_boxes_stay_close_to_the_area_average():
    # A box off the cell grid: RoIAlign's bilinear samples approximate the area average.
    whole = 64
    superpixels = random_superpixels(1, whole, 20, seed=4, block=8)
    table = torch.randint(0, 3, (1, 20), generator=torch.Generator().manual_seed(3))
    maps = paint_clusters(superpixels, table, k=3, stride=4)
    box = torch.tensor([[[5.0, 7.0, 45.0, 47.0], [0.0, 0.0, 64.0, 64.0]]])
    masks = view_masks(maps, box, torch.tensor([[False, False]]), whole, (4, 4))
    # the exact area average at pixel resolution: the one-hot pixel map cropped and pooled by 10
    pixels = paint_clusters(superpixels, table, k=3, stride=1)[0, :, 7:47, 5:45]
    exact = F.avg_pool2d(pixels[None], 10)[0]
    assert (masks[0, 0] - exact).abs().max() < 0.06  # measured 0.03 here
    torch.testing.assert_close(masks[0, 0].sum(0), torch.ones(4, 4), rtol=0, atol=1e-5)
