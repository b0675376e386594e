"""Hungarian matching of predicted (class, mask) pairs to ground-truth segments.

Shapes: B images, Q queries, K + 1 class logits (last = "no object"),
(h, w) predicted mask size, T targets of an image, (H, W) target mask size,
P sampled points.

For each image one (Q, T) cost matrix comes from batched tensor operations,

    C = w_class * (-p(target class)) + w_mask * focal + w_dice * dice,

and ``scipy.optimize.linear_sum_assignment`` solves it. Ground-truth masks are
compared at the prediction's resolution: area-downsampled, i.e. each target
pixel holds the fraction of it the segment covers, so a one-pixel segment
still has a cost. With ``num_points > 0`` both masks are instead compared at
the same ``num_points`` random points of the image (bilinear samples).

Definitions:
- T <= Q: every target gets a distinct query; the other Q - T queries are
  unmatched ("no object" in the loss).
- T > Q: every query gets a distinct target, the Q targets chosen to minimise
  the total cost; the T - Q others go unmatched and give no loss (a warning is
  logged once). Raise NUM_OBJECT_QUERIES if this happens.
- T = 0: no pairs.
- Non-finite costs never reach scipy: a term with a NaN or Inf raises
  :class:`NonFiniteCostError` naming the term, the training iteration, the
  image and the decoder layer. Sanitizing was not chosen because a non-finite
  cost means the predictions themselves diverged; the loss would be NaN too,
  and stopping at once with the reason beats training on garbage.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import log_first_n
from scipy.optimize import linear_sum_assignment
from torch import nn

from d2ext.layers import point_sample

from .losses import mask_loss_params, pairwise_dice, pairwise_sigmoid_focal

__all__ = ["HungarianMatcher", "NonFiniteCostError", "targets_at_resolution"]

Indices = Tuple[torch.Tensor, torch.Tensor]

# cost term -> the config key of its weight, for error messages
_WEIGHT_KEYS = {
    "class": "MODEL.MASK_FORMER.CLASS_WEIGHT",
    "mask": "MODEL.MASK_FORMER.MASK_WEIGHT",
    "dice": "MODEL.MASK_FORMER.DICE_WEIGHT",
}


class NonFiniteCostError(FloatingPointError):
    """A matching cost term holds NaN or Inf."""


def current_iteration() -> Optional[int]:
    """The trainer's iteration, or None outside a training loop."""
    try:
        return get_event_storage().iter
    except AssertionError:  # detectron2 asserts when no EventStorage is active
        return None


def targets_at_resolution(masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(T, H, W) bool/float -> (T, h, w) float in [0, 1], area-averaged to ``size``."""
    masks = masks.to(torch.float32)
    if tuple(masks.shape[-2:]) == tuple(size) or masks.shape[0] == 0:
        return masks if masks.shape[0] else masks.new_zeros((0, *size))
    return F.interpolate(masks[None], size=size, mode="area")[0]


class HungarianMatcher(nn.Module):
    def __init__(
        self,
        cost_class: float = 1.0,
        cost_mask: float = 20.0,
        cost_dice: float = 1.0,
        num_points: int = 0,
        mask_loss: str = "focal",
    ):
        """
        Args:
            cost_class, cost_mask, cost_dice: weights of the three cost terms
                (a zero weight skips its term).
            num_points: 0 compares whole masks; > 0 compares them at this many
                uniformly random points per image (shared by its queries and targets).
            mask_loss: the mask cost, "focal" (MaskFormer's sigmoid focal loss) or
                "bce" (Mask2Former's sigmoid binary cross-entropy); ``losses.MASK_LOSSES``.
        """
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matching costs are 0")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points
        self.mask_loss = mask_loss
        self.mask_alpha, self.mask_gamma = mask_loss_params(mask_loss)

    # ------------------------------------------------------------------ costs
    def _mask_pairs(
        self, pred_masks: torch.Tensor, tgt_masks: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """-> predictions (Q, P) logits and targets (T, P) in [0, 1], compared pixel for pixel."""
        if self.num_points > 0:
            coords = torch.rand(1, self.num_points, 2, device=pred_masks.device)
            # The masks as channels of one map: grid_sample computes the bilinear
            # weights of each point once for all of them (bit for bit the official's
            # per-mask sampling at expanded coordinates, in about half the time).
            pred = point_sample(pred_masks[None], coords, align_corners=False)
            tgt = point_sample(tgt_masks[None].to(pred_masks.dtype), coords, align_corners=False)
            return pred[0], tgt[0]
        tgt = targets_at_resolution(tgt_masks, pred_masks.shape[-2:])
        return pred_masks.flatten(1), tgt.flatten(1).to(pred_masks.dtype)

    @torch.no_grad()
    def cost_terms(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        tgt_labels: torch.Tensor,
        tgt_masks: torch.Tensor,
    ) -> Dict[str, torch.Tensor]:
        """Unweighted (Q, T) cost terms of one image, for the terms with a non-zero weight.

        Args:
            pred_logits: (Q, K + 1); pred_masks: (Q, h, w) logits;
            tgt_labels: (T,) int64 in [0, K); tgt_masks: (T, H, W) bool or float.
        """
        terms: Dict[str, torch.Tensor] = {}
        if self.cost_class != 0:
            prob = pred_logits.float().softmax(-1)
            terms["class"] = -prob[:, tgt_labels]
        if self.cost_mask != 0 or self.cost_dice != 0:
            pred, tgt = self._mask_pairs(pred_masks.float(), tgt_masks)
            if self.cost_mask != 0:
                terms["mask"] = pairwise_sigmoid_focal(pred, tgt, self.mask_alpha, self.mask_gamma)
            if self.cost_dice != 0:
                terms["dice"] = pairwise_dice(pred, tgt)
        return terms

    def cost_matrix(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        tgt_labels: torch.Tensor,
        tgt_masks: torch.Tensor,
        where: str = "",
    ) -> torch.Tensor:
        """The weighted (Q, T) cost of one image; raises NonFiniteCostError (see module doc)."""
        weights = {"class": self.cost_class, "mask": self.cost_mask, "dice": self.cost_dice}
        terms = self.cost_terms(pred_logits, pred_masks, tgt_labels, tgt_masks)
        for name, term in terms.items():
            label = f"mask (sigmoid {'focal' if self.mask_loss == 'focal' else 'BCE'})" if name == "mask" else name
            self._check_finite(term, f"{label} cost (weight {_WEIGHT_KEYS[name]})", where)
        cost = sum(weights[name] * term for name, term in terms.items())
        self._check_finite(cost, "weighted total cost", where)
        return cost

    @staticmethod
    def _check_finite(cost: torch.Tensor, what: str, where: str) -> None:
        finite = torch.isfinite(cost)
        if bool(finite.all()):
            return
        it = current_iteration()
        at = f"iteration {it}" if it is not None else "outside training (no iteration)"
        bad = int((~finite).sum())
        raise NonFiniteCostError(
            f"MaskFormer matcher: the {what} has {bad} "
            f"non-finite (NaN/Inf) entries of {cost.numel()} at {at}, {where or 'in matching'}. "
            "The model's predictions diverged: lower SOLVER.BASE_LR, enable "
            "SOLVER.CLIP_GRADIENTS, or check the input images."
        )

    # ------------------------------------------------------------------ matching
    @torch.no_grad()
    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: Sequence[Dict[str, torch.Tensor]], where: str = ""
    ) -> List[Indices]:
        """
        Args:
            outputs: "pred_logits" (B, Q, K + 1), "pred_masks" (B, Q, h, w).
            targets: B dicts with "labels" (T_b,) int64 and "masks" (T_b, H, W).
            where: names the decoder layer in error messages.

        Returns:
            B pairs (query indices, target indices), int64 CPU tensors of
            length min(Q, T_b), query indices ascending.
        """
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        indices: List[Indices] = []
        for b, target in enumerate(targets):  # per image: scipy solves one matrix at a time
            q, t = masks.shape[1], target["labels"].shape[0]
            if t == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty))
                continue
            where_b = f"image {b} of the batch, {where or 'matching'}"
            cost = self.cost_matrix(logits[b], masks[b], target["labels"], target["masks"], where_b)
            if t > q:
                log_first_n(
                    logging.WARNING,
                    f"MaskFormer matcher: an image has {t} segments but there are only {q} queries; "
                    f"{t - q} segments are left unmatched (no loss). Raise "
                    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES.",
                    n=1,
                    name=__name__,
                )
            rows, cols = linear_sum_assignment(cost.cpu().numpy().astype(np.float64))
            rows, cols = torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
            indices.append((rows, cols))
        return indices

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
            f"num_points={self.num_points}"
        )
