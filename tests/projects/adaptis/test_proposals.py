"""Proposal map and candidates: the box blur against OpenCV's, local maxima by hand."""
import cv2
import numpy as np
import pytest
import torch

from d2ext_projects.adaptis.proposals import box_blur, local_maxima, proposal_map


@pytest.mark.parametrize("kernel", [2, 3, 5])
def test_box_blur_equals_opencv(kernel):
    rng = np.random.default_rng(0)
    x = rng.random((9, 11)).astype(np.float32)
    ours = box_blur(torch.from_numpy(x), kernel).numpy()
    np.testing.assert_allclose(ours, cv2.blur(x, (kernel, kernel)), rtol=1e-5, atol=1e-6)


def test_local_maxima_by_hand():
    pmap = torch.zeros(6, 8)
    pmap[1:4, 1:4] = 0.3
    pmap[2, 2] = 0.8  # a peak with all neighbours above the threshold
    pmap[1:4, 5:8] = 0.2
    pmap[2, 6] = 0.9  # a higher peak
    pmap[5, 0] = 0.95  # an isolated spike: its neighbours are below the threshold
    points, values = local_maxima(pmap, thresh=0.1, kernel=3)
    torch.testing.assert_close(values, torch.tensor([0.9, 0.8]))
    torch.testing.assert_close(points, torch.tensor([[6.5, 2.5], [2.5, 2.5]]))
    # limit keeps the best
    points, _ = local_maxima(pmap, thresh=0.1, kernel=3, limit=1)
    torch.testing.assert_close(points, torch.tensor([[6.5, 2.5]]))
    # above the threshold only
    assert local_maxima(pmap, thresh=0.85)[0].shape == (0, 2)


def test_proposal_map_zeroed_where_no_thing():
    logits = torch.zeros(4, 4)  # sigmoid 0.5 -> squared 0.25
    thing = torch.zeros(2, 4, 4)
    thing[1, :, :2] = 0.5
    pmap = proposal_map(logits, thing, power=2.0, thing_thresh=0.3, blur=1)
    assert pmap[:, :2].eq(0.25).all() and pmap[:, 2:].eq(0).all()
