"""From one image's Q (class, mask) predictions to detectron2's output formats.

Shapes: Q queries, K classes (+1 "no object", last), (H, W) output size.
Inputs are ``mask_cls`` (Q, K + 1) class logits and ``mask_pred`` (Q, H, W)
mask logits already at the output size.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances

__all__ = [
    "instance_inference", "mask_boxes", "panoptic_inference", "semantic_inference",
    "upsampled_semantic_inference",
]


# On CPU, semantic_inference's (K, Q) x (Q, H * W) product is faster in blocks of
# pixel columns than as one GEMM over the whole image: a block's operands and
# result stay in cache, and the sigmoid (and, in upsampled_semantic_inference, the
# upsampling) is done per block for the same reason. The official code's path
# (bilinear upsampling of every query's mask to the padded image, sigmoid, one
# einsum) writes and reads Q full-resolution masks through memory.
CPU_PIXELS_PER_BLOCK = 2048


def _blocked_path(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> bool:
    """Whether the CPU block loop applies: not differentiable and not traceable as one
    node, so autograd, tracing (ONNX export) and GPUs take the single einsum."""
    needs_grad = torch.is_grad_enabled() and (mask_cls.requires_grad or mask_pred.requires_grad)
    return (
        mask_pred.device.type == "cpu" and not needs_grad and not torch.jit.is_tracing()
        and mask_pred.dtype == torch.float32 and mask_cls.dtype == torch.float32
    )


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """-> (K, H, W): sum over queries of p(class) (no-object column dropped) x sigmoid(mask)."""
    prob = F.softmax(mask_cls, dim=-1)[:, :-1]
    if not _blocked_path(mask_cls, mask_pred):
        return torch.einsum("qc,qhw->chw", prob, mask_pred.sigmoid())
    q, h, w = mask_pred.shape
    masks = mask_pred.reshape(q, h * w)
    weights = prob.t().contiguous()  # (K, Q)
    out = masks.new_empty((weights.shape[0], h * w))
    for start in range(0, h * w, CPU_PIXELS_PER_BLOCK):
        block = slice(start, start + CPU_PIXELS_PER_BLOCK)
        torch.mm(weights, masks[:, block].sigmoid(), out=out[:, block])
    return out.view(-1, h, w)


def _linear_source_rows(in_size: int, out_size: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear (align_corners=False) resampling of ``in_size`` rows to ``out_size``,
    with the coordinates F.interpolate computes (float32: source = (dst + 0.5) *
    in / out - 0.5, clamped at 0): -> (first row, second row, its weight), each (out_size,)."""
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    src = ((torch.arange(out_size, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    first = src.long()
    weight = src - first
    second = torch.where(first < in_size - 1, first + 1, first)
    return first, second, weight


def upsampled_semantic_inference(
    mask_cls: torch.Tensor, mask_pred: torch.Tensor, size: Tuple[int, int], crop: Tuple[int, int]
) -> torch.Tensor:
    """``semantic_inference`` of the masks upsampled to ``size`` and cropped to ``crop``.

    Equal, up to float rounding, to ``semantic_inference(mask_cls, F.interpolate(
    mask_pred[None], size, mode="bilinear", align_corners=False)[0][:, :ch, :cw])``,
    which is what it computes off the CPU block path. On it, the upsampling is
    separable: columns once for all rows (Q, h, cw), then each block of output rows
    from its two source rows, so that Q full-resolution masks never exist.

    Args:
        mask_cls: (Q, K + 1) class logits.
        mask_pred: (Q, h, w) mask logits (1/4 of the padded image in MaskFormer).
        size: (H, W), the padded image size the masks are upsampled to.
        crop: (ch, cw) <= (H, W), the image inside the padding.

    Returns:
        (K, ch, cw) semantic scores.
    """
    (height, width), (ch, cw) = size, crop
    if not _blocked_path(mask_cls, mask_pred):
        masks = F.interpolate(mask_pred[None], size=size, mode="bilinear", align_corners=False)[0]
        return semantic_inference(mask_cls, masks[:, :ch, :cw])
    q, h, _ = mask_pred.shape
    columns = F.interpolate(mask_pred[None], size=(h, width), mode="bilinear", align_corners=False)[0]
    columns = columns[:, :, :cw].contiguous()  # (Q, h, cw)
    first, second, weight = _linear_source_rows(h, height)
    weights = F.softmax(mask_cls, dim=-1)[:, :-1].t().contiguous()  # (K, Q)
    out = mask_pred.new_empty((weights.shape[0], ch * cw))
    rows_per_block = max(1, CPU_PIXELS_PER_BLOCK // cw)
    block = mask_pred.new_empty((q, rows_per_block, cw))  # reused: no allocation per block
    for r0 in range(0, ch, rows_per_block):
        r1 = min(r0 + rows_per_block, ch)
        rows = block[:, : r1 - r0]
        torch.lerp(
            columns.index_select(1, first[r0:r1]), columns.index_select(1, second[r0:r1]),
            weight[r0:r1, None], out=rows,
        )  # (Q, rows, cw)
        torch.mm(weights, rows.view(q, -1).sigmoid_(), out=out[:, r0 * cw : r1 * cw])
    return out.view(-1, ch, cw)


def panoptic_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    *,
    thing_ids: Optional[torch.Tensor],
    object_mask_threshold: float,
    overlap_threshold: float,
    mask_on_pixels_only: bool = False,
) -> Tuple[torch.Tensor, List[Dict]]:
    """MaskFormer's panoptic merge, without a loop over queries.

    ``mask_on_pixels_only``: Mask2Former's rule (its official merge): a pixel
    goes to its query's segment only where that query's sigmoid(mask) >= 0.5
    (else void), and a query with no such pixel gives no segment.

    1. Keep the queries whose most likely class is not "no object" and whose
       score (that class's probability) is above ``object_mask_threshold``.
    2. Each pixel goes to the kept query with the largest score x sigmoid(mask).
    3. A query whose visible area is 0, whose mask (sigmoid >= 0.5) is empty,
       or whose visible area is below ``overlap_threshold`` of its mask area
       gives no segment (its pixels stay 0, void).
    4. Stuff queries of one class form one segment; a thing query is a segment.
       Segment ids are 1, 2, ... in the order of each segment's first query.

    Args:
        thing_ids: (T,) int64 contiguous ids of thing classes; None: all stuff.

    Returns:
        panoptic_seg (H, W) int32 segment ids (0 = void) and segments_info,
        one dict per segment: "id", "category_id" (contiguous), "isthing".
    """
    num_classes = mask_cls.shape[-1] - 1
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    scores, labels, masks = scores[keep], labels[keep], mask_pred[keep].sigmoid()
    h, w = mask_pred.shape[-2:]
    panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=mask_pred.device)
    n = labels.shape[0]
    if n == 0:
        return panoptic_seg, []

    owner = (scores[:, None, None] * masks).argmax(0)  # (H, W) in [0, n)
    visible = torch.bincount(owner.flatten(), minlength=n)
    full = (masks >= 0.5).flatten(1).sum(1)
    ratio = visible.float() / full.clamp(min=1).float()
    ok = (visible > 0) & (full > 0) & (ratio >= overlap_threshold)
    if mask_on_pixels_only:
        on = masks.gather(0, owner[None])[0] >= 0.5  # (H, W): the owner's mask is on
        ok &= torch.bincount(owner[on], minlength=n) > 0

    idx = torch.arange(n, device=labels.device)
    is_thing = (
        torch.isin(labels, thing_ids.to(labels.device)) if thing_ids is not None else torch.zeros_like(ok)
    )
    # one key per segment: the class for stuff, a key of its own for each thing query
    key = torch.where(is_thing, num_classes + idx, labels)
    first = torch.full((num_classes + n,), n, dtype=torch.int64, device=labels.device)
    first = first.scatter_reduce(0, key[ok], idx[ok], reduce="amin")
    rep = first[key]  # the segment's first query, for the ok queries
    is_first = ok & (rep == idx)
    seg_id_of_first = torch.cumsum(is_first.long(), 0)  # ids 1, 2, ... in query order
    seg_of_query = torch.where(ok, seg_id_of_first[rep.clamp(max=n - 1)], torch.zeros_like(idx))
    panoptic_seg = seg_of_query[owner].to(torch.int32)
    if mask_on_pixels_only:
        panoptic_seg[~on] = 0

    firsts = is_first.nonzero()[:, 0]
    ids, classes, things = (v[firsts].tolist() for v in (seg_id_of_first, labels, is_thing))
    segments_info = [
        {"id": int(i), "category_id": int(c), "isthing": bool(t)} for i, c, t in zip(ids, classes, things)
    ]
    return panoptic_seg, segments_info


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) XYXY tight boxes (pixel edges), zeros for empty masks."""
    n, h, w = masks.shape

    def extent(any_along: torch.Tensor, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
        first = any_along.int().argmax(1)
        last = size - 1 - any_along.flip(1).int().argmax(1)
        return first, last + 1

    x0, x1 = extent(masks.any(1), w)
    y0, y1 = extent(masks.any(2), h)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return boxes * masks.flatten(1).any(1, keepdim=True)


def instance_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    *,
    topk: int,
    thing_ids: Optional[torch.Tensor],
    things_after_topk: bool = False,
) -> Instances:
    """Top-k (query, class) pairs by class probability; masks are the queries' masks.

    Each query may give several instances (one per class). With ``thing_ids``
    only thing classes give instances: by default only they compete for the
    top k (k instances whenever Q x T >= k); with ``things_after_topk``, as
    Mask2Former's official inference does, all Q x K pairs compete and the
    stuff ones are then dropped (fewer than k instances). Score = class
    probability x the mean sigmoid of the mask over its pixels (mask logit > 0).

    Returns:
        Instances of size (H, W) with pred_masks (k', H, W) bool, pred_boxes
        (tight boxes of the masks; the official Mask2Former gives zero boxes),
        scores (k',), pred_classes (k',) contiguous ids, in descending order of
        the class probability.
    """
    num_classes = mask_cls.shape[-1] - 1
    h, w = mask_pred.shape[-2:]
    prob = F.softmax(mask_cls, dim=-1)[:, :-1]  # (Q, K)
    classes = torch.arange(num_classes, device=prob.device)
    if thing_ids is not None and not things_after_topk:
        classes = thing_ids.to(prob.device)
        prob = prob[:, classes]
    k = min(topk, prob.numel())
    top_scores, flat = prob.flatten().topk(k)
    labels = classes[flat % prob.shape[1]]
    query = torch.div(flat, prob.shape[1], rounding_mode="floor")
    if thing_ids is not None and things_after_topk:
        keep = torch.isin(labels, thing_ids.to(labels.device))
        top_scores, labels, query = top_scores[keep], labels[keep], query[keep]
    masks = mask_pred[query]
    binary = masks > 0
    area = binary.flatten(1).sum(1)
    mask_scores = (masks.sigmoid() * binary).flatten(1).sum(1) / (area + 1e-6)

    result = Instances((h, w))
    result.pred_masks = binary
    result.pred_boxes = Boxes(mask_boxes(binary))
    result.scores = top_scores * mask_scores
    result.pred_classes = labels
    return result
