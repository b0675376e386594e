"""AdaptIS losses: normalized focal losses (sigmoid for masks, softmax for
semantics) and the proposal head's BCE at points.

"Normalized" (the reference's NormalizedFocalLoss*): the focal weights
(1 - p_t) ** gamma of one sample are rescaled to sum to its number of valid
pixels, the rescaling treated as a constant (no gradient through it), so the
loss keeps the scale of a cross entropy while focusing on hard pixels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["normalized_sigmoid_focal_loss", "normalized_softmax_focal_loss", "proposal_loss"]


def normalized_sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    alpha: float = 0.5,
    gamma: float = 2.0,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Per-sample normalized sigmoid focal loss.

    Args:
        logits: (P, H, W) mask logits.
        targets: (P, H, W) bool, the object's pixels.
        valid: (P, H, W) bool (or broadcastable): pixels that count (False in padding).
        alpha: weight of the object's pixels (1 - alpha for the others).

    Returns:
        (P,): sum over valid pixels of -alpha_t * w * log(p_t) / (number of valid
        pixels), w = (1 - p_t) ** gamma * (valid pixels / sum of (1 - p_t) ** gamma).
    """
    valid = valid.expand_as(logits)
    log_pt = torch.where(targets, F.logsigmoid(logits), F.logsigmoid(-logits))
    log_pt = torch.where(valid, log_pt, torch.zeros_like(log_pt))
    beta = (1.0 - log_pt.exp()) ** gamma  # 0 on invalid pixels (p_t = 1 there)
    n_valid = valid.sum(dim=(-2, -1)).to(logits.dtype)
    mult = (n_valid / (beta.sum(dim=(-2, -1)) + eps)).detach()
    alpha_t = torch.where(targets, torch.full_like(logits, alpha), torch.full_like(logits, 1.0 - alpha))
    loss = -(alpha_t * beta * log_pt).sum(dim=(-2, -1)) * mult
    return loss / (n_valid + eps)


def normalized_softmax_focal_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_label: int, gamma: float = 1.0, eps: float = 1e-10
) -> torch.Tensor:
    """Per-image normalized softmax focal loss.

    Args:
        logits: (B, K, H, W); labels: (B, H, W) int64 class ids, ``ignore_label``
            where unlabeled or padded.

    Returns:
        (B,): as :func:`normalized_sigmoid_focal_loss` with p_t the softmax
        probability of the pixel's class (no alpha); 0 for an image without labels.
    """
    valid = labels != ignore_label
    log_p = F.log_softmax(logits, dim=1)
    log_pt = log_p.gather(1, torch.where(valid, labels, torch.zeros_like(labels))[:, None])[:, 0]
    log_pt = torch.where(valid, log_pt, torch.zeros_like(log_pt))
    beta = (1.0 - log_pt.exp()) ** gamma
    n_valid = valid.sum(dim=(-2, -1)).to(logits.dtype)
    mult = (n_valid / (beta.sum(dim=(-2, -1)) + eps)).detach()
    loss = -(beta * log_pt).sum(dim=(-2, -1)) * mult
    return loss / (n_valid + eps)


def proposal_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE of the proposal logits at the points against soft labels.

    Args:
        logits: (B, K); labels: (B, K) in [0, 1], or < 0 where ignored.

    Returns:
        scalar: mean over the labelled points (0 when none is).
    """
    keep = labels >= 0
    bce = F.binary_cross_entropy_with_logits(logits, labels.clamp(min=0.0).to(logits.dtype), reduction="none")
    return (bce * keep).sum() / keep.sum().clamp(min=1)
