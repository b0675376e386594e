"""MaskFormer's set loss: Hungarian matching, then class and mask losses on the pairs.

Shapes: B images, Q queries, K classes (index K = "no object"), (h, w)
predicted mask size, T_b targets of image b, (H, W) target mask size (the
same for every image of the batch: the padded input size), M matched pairs
in the batch, P points.

Per decoder layer (the last one, and with deep supervision every earlier one,
each matched on its own):

- ``loss_ce``: cross-entropy over the K + 1 classes of all B * Q queries;
  unmatched queries have target "no object", weighted ``eos_coef`` (0.1).
  Weighted mean, as ``F.cross_entropy`` with class weights.
- ``loss_mask``: sigmoid focal loss (MaskFormer) or binary cross-entropy (Mask2Former) of the M matched masks (predictions
  bilinearly upsampled to the targets' size; or targets area-downsampled to
  the predictions' size, as in matching; or both sampled at P points),
  averaged over pixels, summed over masks, divided by the number of target
  masks (averaged over processes, at least 1).
- ``loss_dice``: dice loss, summed and normalized the same way.

Losses of earlier layers get the suffix ``_i`` (i = 0 for the first layer).
Returned values are already multiplied by their weights.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from torch import nn

from d2ext.layers import binary_uncertainty, point_sample

from .losses import dice_loss, mask_loss_params, sigmoid_focal_loss
from .matcher import HungarianMatcher, Indices, targets_at_resolution

__all__ = ["SetCriterion", "num_masks_across_processes"]


def num_masks_across_processes(targets: Sequence[Dict[str, torch.Tensor]], device) -> float:
    """Number of target masks in the batch, averaged over processes, at least 1."""
    n = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    world = comm.get_world_size()
    if world > 1:
        torch.distributed.all_reduce(n)
        n = n / world
    return max(float(n.item()), 1.0)


class SetCriterion(nn.Module):
    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        *,
        class_weight: float = 1.0,
        mask_weight: float = 20.0,
        dice_weight: float = 1.0,
        eos_coef: float = 0.1,
        num_points: int = 0,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        at_target_resolution: bool = True,
        mask_loss: str = "focal",
    ):
        """
        Args:
            num_classes: K, without "no object".
            class_weight, mask_weight, dice_weight: loss weights.
            eos_coef: cross-entropy weight of the "no object" class.
            num_points: 0 = dense mask losses; > 0 = at this many points per
                mask, chosen by uncertainty (PointRend's importance sampling).
            at_target_resolution: dense losses at the targets' size (True) or
                at the predictions' size (False).
            mask_loss: "loss_mask" is MaskFormer's sigmoid focal loss ("focal") or
                Mask2Former's sigmoid binary cross-entropy ("bce").
        """
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.eos_coef = eos_coef
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.at_target_resolution = at_target_resolution
        self.mask_loss = mask_loss
        self.mask_alpha, self.mask_gamma = mask_loss_params(mask_loss)
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        # Persistent, as the official SetCriterion's: its checkpoints have the key.
        self.register_buffer("empty_weight", empty_weight)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # empty_weight follows the config (NO_OBJECT_WEIGHT), not the checkpoint: the
        # official code would take the checkpoint's value instead (README), and d2ext's
        # earlier checkpoints lack the key. Either way the key counts as loaded.
        state_dict[prefix + "empty_weight"] = self.empty_weight.detach().clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _flat_indices(indices: List[Indices], device) -> Tuple[torch.Tensor, torch.Tensor]:
        """-> (image index, query index) of the M matched pairs, each (M,)."""
        batch = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
        query = torch.cat([src for src, _ in indices])
        return batch.to(device), query.to(device)

    def loss_labels(
        self, logits: torch.Tensor, targets: Sequence[Dict[str, torch.Tensor]], indices: List[Indices]
    ) -> torch.Tensor:
        """logits (B, Q, K + 1) -> scalar weighted cross-entropy."""
        batch, query = self._flat_indices(indices, logits.device)
        classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        matched = [t["labels"][tgt.to(t["labels"].device)] for t, (_, tgt) in zip(targets, indices)]
        classes[batch, query] = torch.cat(matched).to(logits.device)
        return F.cross_entropy(logits.transpose(1, 2).float(), classes, self.empty_weight.to(logits.device))

    def _uncertain_coords(self, logits: torch.Tensor) -> torch.Tensor:
        """(M, 1, h, w) logits -> (M, P, 2) points in [0, 1]: the most uncertain of
        ``oversample_ratio * P`` uniform ones, then uniform ones (PointRend's training
        sampling, as ``d2ext.layers.uncertain_points_with_randomness``, the official's
        ``get_uncertain_point_coords_with_randomness``).

        The same random numbers in the same order and the same set of points; only
        their order within the uncertain part differs (an unsorted top-k, twice as
        fast on CPU), which no loss depends on (each is a mean or sum over points).
        """
        if self.oversample_ratio < 1:
            raise ValueError(f"oversample_ratio must be >= 1, got {self.oversample_ratio}")
        if not 0 <= self.importance_sample_ratio <= 1:
            raise ValueError(f"importance_sample_ratio must be in [0, 1], got {self.importance_sample_ratio}")
        n, device, dtype = logits.shape[0], logits.device, logits.dtype
        num_sampled = int(self.num_points * self.oversample_ratio)
        num_uncertain = int(self.importance_sample_ratio * self.num_points)
        num_random = self.num_points - num_uncertain
        coords = torch.rand(n, num_sampled, 2, device=device, dtype=dtype)
        uncertainty = binary_uncertainty(point_sample(logits, coords)).reshape(n, num_sampled)
        idx = uncertainty.topk(num_uncertain, dim=1, sorted=False).indices
        coords = coords.gather(1, idx.unsqueeze(-1).expand(-1, -1, 2))
        if num_random > 0:
            coords = torch.cat([coords, torch.rand(n, num_random, 2, device=device, dtype=dtype)], 1)
        return coords

    def _point_pairs(self, src: torch.Tensor, tgt: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(M, h, w) logits, (M, H, W) targets -> both sampled at P points, (M, P) each."""
        with torch.no_grad():
            coords = self._uncertain_coords(src[:, None])
            tgt = point_sample(tgt[:, None].to(src.dtype), coords, align_corners=False)[:, 0]
        src = point_sample(src[:, None], coords, align_corners=False)[:, 0]
        return src, tgt

    def loss_masks(
        self,
        pred_masks: torch.Tensor,
        targets: Sequence[Dict[str, torch.Tensor]],
        indices: List[Indices],
        num_masks: float,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """pred_masks (B, Q, h, w) -> (mask loss, dice) scalars, each summed over pairs / num_masks.

        Dense losses compare at the targets' size: predictions are upsampled
        when the targets are larger.
        """
        batch, query = self._flat_indices(indices, pred_masks.device)
        if batch.numel() == 0:
            # Nothing matched: zero, but still a function of the predictions, so
            # every parameter gets a (zero) gradient, as DDP expects.
            zero = pred_masks.sum() * 0.0
            return zero, zero
        src = pred_masks[batch, query]  # (M, h, w)
        tgt = torch.cat([t["masks"][j.to(t["masks"].device)] for t, (_, j) in zip(targets, indices)])
        tgt = tgt.to(src.device)
        if self.num_points > 0:
            src, tgt = self._point_pairs(src, tgt)
        else:
            if tgt.shape[-2:] != src.shape[-2:]:
                src = F.interpolate(src[:, None], size=tgt.shape[-2:], mode="bilinear", align_corners=False)
            src, tgt = src.flatten(1), tgt.flatten(1)
        src = src.float()
        mask = sigmoid_focal_loss(src, tgt, self.mask_alpha, self.mask_gamma).sum() / num_masks
        dice = dice_loss(src, tgt).sum() / num_masks
        return mask, dice

    # ------------------------------------------------------------------ forward
    def forward(
        self, outputs: Dict[str, object], targets: Sequence[Dict[str, torch.Tensor]]
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            outputs: TransformerPredictor's outputs ("pred_logits", "pred_masks",
                optional "aux_outputs").
            targets: B dicts with "labels" (T_b,) int64 and "masks" (T_b, H, W) bool.

        Returns:
            weighted losses: loss_ce, loss_mask, loss_dice (+ "_i" per earlier layer).
        """
        num_masks = num_masks_across_processes(targets, outputs["pred_logits"].device)
        if self.num_points == 0:
            # Downsample the targets once for all layers' matching (and losses).
            size = outputs["pred_masks"].shape[-2:]
            small = [dict(t, masks=targets_at_resolution(t["masks"], size)) for t in targets]
            match_targets = small
            loss_targets = targets if self.at_target_resolution else small
        else:
            # Point sampling reads float masks: convert once for all layers and images
            # (the matcher and the mask loss would each convert them per layer).
            dtype = outputs["pred_masks"].dtype
            match_targets = loss_targets = [dict(t, masks=t["masks"].to(dtype)) for t in targets]
        aux = list(outputs.get("aux_outputs", []))
        layers = [("", outputs, f"decoder layer {len(aux) + 1} of {len(aux) + 1} (final)")]
        layers += [(f"_{i}", a, f"decoder layer {i + 1} of {len(aux) + 1}") for i, a in enumerate(aux)]
        losses: Dict[str, torch.Tensor] = {}
        for suffix, out, where in layers:
            indices = self.matcher(out, match_targets, where)
            mask, dice = self.loss_masks(out["pred_masks"], loss_targets, indices, num_masks)
            ce = self.loss_labels(out["pred_logits"], targets, indices)
            raw = {"loss_ce": ce, "loss_mask": mask, "loss_dice": dice}
            losses.update({k + suffix: v * self.weights[k] for k, v in raw.items()})
        return losses
