"""AdaptIS outputs in detectron2's formats, at the original image size.

- ``panoptic_seg``: each pixel goes to the argmax of [STUFF_PROB_MULT x (1 -
  sum of thing probabilities), accepted mask probabilities...] (the
  reference's rule); pixels left to the background take the semantic argmax,
  kept when it is a stuff class and void (0) when it is a thing class.
- ``instances``: one per instance visible in the panoptic map: its visible
  pixels as the mask, the box around them, the class of the largest mean
  thing probability inside the instance's mask (p > MASK_THRESH, as the
  reference labels them), and a score (AdaptIS's reference defines none):
  mean mask probability inside the mask x mean probability of the chosen
  class there, both in [0, 1].
- clicks: one mask per point (p > MASK_THRESH), its probabilities, the same
  class rule, score = mean mask probability inside the mask (0 when empty).

Shapes: A masks, T thing classes, K classes, (h, w) input resolution,
(H, W) the original size.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, BitMasks, Instances

__all__ = ["click_instances", "mask_classes", "panoptic_outputs"]


def _resize_probs(probs: torch.Tensor, out_hw: Tuple[int, int]) -> torch.Tensor:
    """(A, h, w) -> (A, H, W) bilinear; the tensor itself when the size matches."""
    if tuple(probs.shape[-2:]) == tuple(out_hw) or probs.shape[0] == 0:
        return probs if probs.shape[0] else probs.new_zeros((0, *out_hw))
    return F.interpolate(probs[None], size=out_hw, mode="bilinear", align_corners=False)[0]


def _resize_labels(labels: torch.Tensor, out_hw: Tuple[int, int]) -> torch.Tensor:
    """(h, w) int -> (H, W) nearest."""
    if tuple(labels.shape) == tuple(out_hw):
        return labels
    return F.interpolate(labels[None, None].float(), size=out_hw, mode="nearest")[0, 0].to(labels.dtype)


def mask_classes(probs: torch.Tensor, thing_prob: torch.Tensor, mask_thresh: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class of each mask by the semantic head.

    Args:
        probs: (A, h, w) mask probabilities; thing_prob: (T, h, w).

    Returns:
        index into the T thing classes (A,), that class's mean probability
        inside the mask (A,), and the masks (A, h, w) bool. An empty mask is
        weighted by its probabilities instead, so it still gets a class.
    """
    masks = probs > mask_thresh
    if thing_prob.shape[0] == 0:  # no thing class: nothing to choose
        zeros = probs.new_zeros(probs.shape[0])
        return zeros.long(), zeros, masks
    weights = masks.to(probs.dtype)
    empty = weights.sum(dim=(1, 2)) == 0
    weights = torch.where(empty[:, None, None], probs, weights)
    weights = weights / weights.sum(dim=(1, 2), keepdim=True).clamp(min=1e-12)
    mean_cls = torch.einsum("ahw,thw->at", weights, thing_prob)  # (A, T)
    cls_prob, cls = mean_cls.max(dim=1)
    return cls, cls_prob, masks


def _mean_inside(probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(A, h, w), (A, h, w) bool -> (A,) mean probability inside each mask, 0 when empty."""
    area = masks.sum(dim=(1, 2))
    return (probs * masks).sum(dim=(1, 2)) / area.clamp(min=1)


def panoptic_outputs(
    probs: torch.Tensor,
    sem_prob: torch.Tensor,
    thing_ids: Sequence[int],
    out_hw: Tuple[int, int],
    *,
    mask_thresh: float,
    stuff_prob_mult: float = 1.0,
) -> Tuple[Tuple[torch.Tensor, List[dict]], Instances]:
    """
    Args:
        probs: (A, h, w) accepted mask probabilities.
        sem_prob: (K, h, w) semantic probabilities.
        thing_ids: the T contiguous ids of the thing classes.
        out_hw: (H, W).

    Returns:
        (panoptic (H, W) int32, segments_info) and Instances at (H, W).
    """
    device = sem_prob.device
    thing_ids_t = torch.as_tensor(list(thing_ids), dtype=torch.int64, device=device)
    thing_prob = sem_prob[thing_ids_t]
    num_masks = probs.shape[0]
    background = stuff_prob_mult * (1.0 - thing_prob.sum(dim=0))
    owner = torch.cat([background[None], probs]).argmax(dim=0)  # (h, w): 0 background, a + 1 mask a

    semantic = sem_prob.argmax(dim=0)
    is_thing_class = torch.zeros(sem_prob.shape[0], dtype=torch.bool, device=device)
    is_thing_class[thing_ids_t] = True
    # Panoptic ids at input resolution: 1..A the masks, then one id per stuff class.
    stuff_label = torch.where(is_thing_class[semantic], torch.zeros_like(semantic), semantic + 1 + num_masks)
    ids = torch.where(owner > 0, owner, stuff_label)
    ids = _resize_labels(ids, out_hw)

    cls, cls_prob, masks = mask_classes(probs, thing_prob, mask_thresh)
    scores = _mean_inside(probs, masks) * cls_prob
    present = torch.bincount(ids.flatten(), minlength=num_masks + 1 + sem_prob.shape[0])

    # Renumber the segments that survived (visible, non-empty) 1..N.
    panoptic = torch.zeros(out_hw, dtype=torch.int32, device=device)
    segments_info: List[dict] = []
    visible = [a for a in range(num_masks) if present[a + 1] > 0]
    lut = torch.zeros(present.shape[0], dtype=torch.int32, device=device)
    for a in visible:
        lut[a + 1] = len(segments_info) + 1
        segments_info.append(
            {"id": len(segments_info) + 1, "category_id": int(thing_ids_t[cls[a]]), "isthing": True,
             "score": float(scores[a]), "area": int(present[a + 1])}
        )
    for k in range(sem_prob.shape[0]):
        if is_thing_class[k] or present[num_masks + 1 + k] == 0:
            continue
        lut[num_masks + 1 + k] = len(segments_info) + 1
        segments_info.append(
            {"id": len(segments_info) + 1, "category_id": k, "isthing": False,
             "area": int(present[num_masks + 1 + k])}
        )
    panoptic = lut[ids]

    keep = torch.as_tensor(visible, dtype=torch.int64, device=device)
    seg_ids = lut[keep + 1] if len(visible) else torch.zeros(0, dtype=torch.int32, device=device)
    inst_masks = panoptic[None] == seg_ids[:, None, None]
    instances = Instances(out_hw)
    instances.pred_masks = inst_masks
    instances.pred_boxes = BitMasks(inst_masks).get_bounding_boxes() if len(visible) else Boxes(torch.zeros((0, 4), device=device))
    instances.scores = scores[keep] if len(visible) else scores.new_zeros(0)
    instances.pred_classes = thing_ids_t[cls[keep]] if len(visible) else thing_ids_t.new_zeros(0)
    return (panoptic, segments_info), instances


def click_instances(
    probs: torch.Tensor,
    sem_prob: torch.Tensor,
    thing_ids: Sequence[int],
    out_hw: Tuple[int, int],
    *,
    mask_thresh: float,
) -> Instances:
    """One instance per click, in click order.

    Args:
        probs: (N, h, w) mask probabilities of the N clicks; sem_prob: (K, h, w).

    Returns:
        Instances at (H, W) with pred_masks (N, H, W) bool, mask_probs (N, H, W),
        scores (N,), pred_classes (N,), pred_boxes (N, 4) (zeros for an empty mask).
    """
    device = sem_prob.device
    thing_ids_t = torch.as_tensor(list(thing_ids), dtype=torch.int64, device=device)
    cls, _, _ = mask_classes(probs, sem_prob[thing_ids_t], mask_thresh)
    full = _resize_probs(probs, out_hw)
    masks = full > mask_thresh
    instances = Instances(out_hw)
    instances.pred_masks = masks
    instances.mask_probs = full
    instances.scores = _mean_inside(full, masks)
    instances.pred_classes = thing_ids_t[cls] if thing_ids_t.numel() else cls.new_zeros(cls.shape)
    instances.pred_boxes = BitMasks(masks).get_bounding_boxes() if masks.shape[0] else Boxes(torch.zeros((0, 4), device=device))
    return instances
