"""Per-image inference state: what is computed once per image, and the three
uses of it (candidates from the proposal map, masks for points, outputs).

Shapes: (h, w) the image at input resolution, (Hp, Wp) the padded batch,
(H, W) the original size, K classes; points xy in input pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import Instances

from d2ext.postprocessing import sem_seg_postprocess

from .assembly import AssemblyResult
from .heads import HeadState, InstanceSelectionHead
from .postprocess import click_instances, panoptic_outputs
from .proposals import local_maxima, proposal_map

__all__ = ["ImageContext"]


@dataclass
class ImageContext:
    head: InstanceSelectionHead
    state: HeadState  # of this image only (batch of 1)
    image_hw: Tuple[int, int]  # (h, w)
    padded_hw: Tuple[int, int]  # (Hp, Wp)
    out_hw: Tuple[int, int]  # (H, W)
    sem_prob: torch.Tensor  # (K, Hp, Wp) softmax probabilities
    proposal_logits: torch.Tensor  # (h, w)
    thing_ids: torch.Tensor  # (T,) int64

    @property
    def sem_prob_image(self) -> torch.Tensor:
        """(K, h, w): the probabilities inside the padding."""
        h, w = self.image_hw
        return self.sem_prob[:, :h, :w]

    def predict(self, points: torch.Tensor) -> torch.Tensor:
        """(m, 2) -> (m, h, w) mask probabilities: one forward of the head's point part."""
        h, w = self.image_hw
        logits = self.head.predict(self.state, points, torch.zeros(points.shape[0], dtype=torch.int64, device=points.device))
        if tuple(logits.shape[-2:]) != tuple(self.padded_hw):
            logits = F.interpolate(logits, size=self.padded_hw, mode="bilinear", align_corners=False)
        return torch.sigmoid(logits[:, 0, :h, :w])

    def candidates(
        self,
        *,
        power: float,
        thing_thresh: float,
        blur: int,
        thresh: float,
        kernel: int,
        limit: int,
        mode: str = "proposals",
        seed: int = 0,
    ) -> torch.Tensor:
        """(n, 2) candidates, at most ``limit``: the proposal map's local maxima, best
        first (``mode="proposals"``), or (``"random"``, for a model without a trained
        proposal head) random pixels where the largest thing probability is at least
        ``thing_thresh``, in random order, the same for the same ``seed`` and image."""
        if mode == "random":
            h, w = self.image_hw
            where = (self.sem_prob_image[self.thing_ids].max(dim=0).values >= thing_thresh).flatten()
            if self.thing_ids.numel() == 0:
                where = torch.zeros_like(where)
            flat = where.nonzero()[:, 0]
            g = torch.Generator().manual_seed(seed)
            flat = flat[torch.randperm(flat.numel(), generator=g)[: max(limit, 0)].to(flat.device)]
            return torch.stack([flat % w, flat // w], dim=1).float() + 0.5
        if mode != "proposals":
            raise ValueError(f"MODEL.ADAPTIS.TEST.CANDIDATES={mode!r}: expected 'proposals' or 'random'")
        pmap = proposal_map(
            self.proposal_logits, self.sem_prob_image[self.thing_ids], power=power, thing_thresh=thing_thresh, blur=blur
        )
        points, _ = local_maxima(pmap, thresh, kernel, limit)
        return points

    def clicks(self, points: torch.Tensor, mask_thresh: float, chunk_size: int) -> Instances:
        """(N, 2) clicks -> Instances at (H, W), one per click (chunks of the head's forward)."""
        h, w = self.image_hw
        if points.shape[0] == 0:
            probs = self.sem_prob.new_zeros((0, h, w))
        else:
            step = max(chunk_size, 1)
            probs = torch.cat([self.predict(points[i : i + step]) for i in range(0, points.shape[0], step)])
        return click_instances(probs, self.sem_prob_image, self.thing_ids.tolist(), self.out_hw, mask_thresh=mask_thresh)

    def outputs(self, assembly: AssemblyResult, mask_thresh: float, stuff_prob_mult: float) -> dict:
        """-> {"panoptic_seg", "instances", "sem_seg"} at (H, W)."""
        panoptic, instances = panoptic_outputs(
            assembly.probs,
            self.sem_prob_image,
            self.thing_ids.tolist(),
            self.out_hw,
            mask_thresh=mask_thresh,
            stuff_prob_mult=stuff_prob_mult,
        )
        sem_seg = sem_seg_postprocess(self.sem_prob, self.image_hw, *self.out_hw)
        return {"panoptic_seg": panoptic, "instances": instances, "sem_seg": sem_seg}
