"""Training points: where the instance head is asked for a mask.

Stage 1: each of an image's K points is a random pixel of a randomly chosen
thing (the reference's ``points_from_one_object=False``); stage 2: all K points
from one random thing of the image (so their masks can be compared with each
other to label the proposal map). Images without things get K placeholder
points with weight 0: every image runs the same computation, and every
parameter gets a gradient (what data-parallel training needs), but they add
nothing to the loss.

Shapes: B images, T_i things in image i, K points per image, (H, W) the padded
input size; points are xy in input pixels (a pixel's centre at +0.5).
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional

import torch

__all__ = ["PointTargets", "sample_training_points"]


class PointTargets(NamedTuple):
    points: torch.Tensor  # (B * K, 2) xy, image by image
    batch_index: torch.Tensor  # (B * K,) int64
    masks: torch.Tensor  # (B * K, H, W) bool: the object each point lies on
    weights: torch.Tensor  # (B * K,) bool: False for the placeholders of thing-less images


def sample_training_points(
    thing_masks: List[torch.Tensor],
    num_points: int,
    one_object: bool,
    image_sizes: List[tuple],
    generator: Optional[torch.Generator] = None,
) -> PointTargets:
    """
    Args:
        thing_masks: per image, (T_i, H, W) bool masks of its things (T_i may be 0),
            all of the same padded size.
        num_points: K.
        one_object: all K points of an image on the same (random) thing.
        image_sizes: per image (h, w) inside the padding; a placeholder point
            sits at the image's centre.

    Returns:
        :class:`PointTargets`.
    """
    points, index, masks, weights = [], [], [], []
    for i, m in enumerate(thing_masks):
        device = m.device
        hp, wp = m.shape[-2:]
        if m.shape[0] == 0:
            h, w = image_sizes[i]
            points.append(torch.tensor([[w / 2.0, h / 2.0]], device=device).expand(num_points, 2))
            masks.append(torch.zeros((num_points, hp, wp), dtype=torch.bool, device=device))
            weights.append(torch.zeros(num_points, dtype=torch.bool, device=device))
        else:
            n = 1 if one_object else num_points
            # A given generator is a CPU one (reproducible tests); without one the
            # global RNG of the masks' device is used (detectron2 seeds it).
            gen_device = "cpu" if generator is not None else device
            obj = torch.randint(m.shape[0], (n,), generator=generator, device=gen_device).to(device)
            obj = obj.expand(num_points)
            chosen = m[obj]  # (K, H, W)
            # One uniform pixel of each chosen mask, all K at once.
            flat = chosen.flatten(1).float()
            pix = torch.multinomial(flat.to(gen_device), 1, generator=generator)[:, 0].to(device)
            y, x = pix // wp, pix % wp
            points.append(torch.stack([x, y], dim=1).float() + 0.5)
            masks.append(chosen)
            weights.append(torch.ones(num_points, dtype=torch.bool, device=device))
        index.append(torch.full((num_points,), i, dtype=torch.int64, device=device))
    return PointTargets(torch.cat(points), torch.cat(index), torch.cat(masks), torch.cat(weights))
