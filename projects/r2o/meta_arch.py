"""R2O meta-architecture (``MODEL.META_ARCHITECTURE: "R2O"``), and its BYOL mode.

Online: ``backbone`` (a detectron2 ResNet from ``build_backbone``) -> mask
pooling of the FEATURE map -> ``projector`` -> ``predictor``. Target:
``target_backbone`` + ``target_projector``, deep copies that get no gradient
and follow the online networks as an EMA (``hooks.R2OTargetUpdate``).

A training step (``MODEL.R2O.MODE: "r2o"``), without gradient first:
the target encoder's MASK_FEATURE map of each whole image -> area-weighted
mean per superpixel -> L2-normalised -> K-means over all regions of the batch
(K from the cosine curriculum at the event storage's iteration, the generator
seeded by (SEED, iteration), so a resumed run clusters as an uninterrupted
one) -> per-cluster area fractions painted on the whole image at
1 / PAINT_STRIDE -> each view's soft masks by RoIAlign of that map with the
view's box (and flip) on the view's FEATURE grid. Then both views through
both encoders, every mask pooled; the loss compares the online prediction of
a mask in one view with the target projection of the same mask in the other
view (``loss.r2o_loss``), for the masks covering at least MIN_MASK_AREA of
both views. ``"byol"``: one all-ones mask per view, no clustering.

Inference: the model declares no outputs (``d2ext.model_io``); ``forward`` in
eval mode returns one empty dict per image, so generic loops (an evaluation
with no evaluators, a benchmark) run. Its products are the exported encoder
(``export.py``) and the cluster masks of :meth:`R2O.predict_masks`.

Shapes: B images, S view size, G whole-image size, g = G / PAINT_STRIDE,
(h, w) a view's FEATURE grid, R regions (superpixels) of the batch, K
clusters, M masks in the loss, C encoder channels, D projection channels.
"""
from __future__ import annotations

import contextlib
import copy
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.modeling.backbone import ResNet
from detectron2.utils.events import get_event_storage
from torch import nn

from d2ext.seeding import Stream, derive_seed

from .heads import MLPHead
from .kmeans import kmeans
from .loss import mask_pool, r2o_loss, valid_mask_pairs
from .masks import paint_clusters, region_label_table, superpixel_pool, view_masks
from .schedules import k_schedule

__all__ = ["R2O", "MODES"]

logger = logging.getLogger(__name__)

MODES = ("r2o", "byol")
# The third counter of the K-means seed: keeps it apart from the trainer's
# TRAINING_STEP seeds, whose counters are (iteration, rank).
_KMEANS_COUNTER = 2


def _check_features(backbone: Backbone, names: Sequence[str]) -> None:
    have = list(backbone.output_shape())
    for key, name in names:
        if name not in have:
            raise ValueError(
                f"{key}={name!r} is not an output of the backbone, whose outputs are {have}: "
                f"add it to MODEL.RESNETS.OUT_FEATURES (R2O needs MODEL.R2O.MASK_FEATURE and "
                f"MODEL.R2O.FEATURE there)"
            )


def backbone_features(backbone: Backbone, x: torch.Tensor, names: Sequence[str]) -> Dict[str, torch.Tensor]:
    """The ``names`` outputs of ``backbone`` on ``x`` (N, 3, H, W).

    A detectron2 ResNet stops after the last stage asked for (the whole image
    needs only res4 for clustering; its res5 would be a quarter of the
    encoder's work for nothing); any other backbone runs in full.
    """
    if not isinstance(backbone, ResNet):
        out = backbone(x)
        return {n: out[n] for n in names}
    wanted, out = set(names), {}
    x = backbone.stem(x)
    if "stem" in wanted:
        out["stem"] = x
    for name, stage in zip(backbone.stage_names, backbone.stages):
        if wanted <= set(out):
            break
        x = stage(x)
        if name in wanted:
            out[name] = x
    return out


@META_ARCH_REGISTRY.register()
class R2O(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        projector: nn.Module,
        predictor: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        max_iter: int,
        mode: str = "r2o",
        mask_feature: str = "res4",
        feature: str = "res5",
        k_start: int = 128,
        k_end: int = 4,
        k_update_period: int = 1,
        kmeans_iters: int = 10,
        paint_stride: int = 4,
        min_mask_area: float = 0.01,
        seed: int = 0,
    ):
        """
        Args:
            backbone: the online encoder (its target copy is made here).
            projector: (N, C) -> (N, D); predictor: (N, D) -> (N, D). The target
                projector is a copy of ``projector``.
            pixel_mean, pixel_std: per-channel normalisation, in the input's channel order.
            max_iter: SOLVER.MAX_ITER, the length of the K curriculum.
            mode: "r2o" or "byol".
            mask_feature: backbone output clustered for masks (r2o mode).
            feature: backbone output pooled by the masks for the loss.
            k_start, k_end, k_update_period: the K curriculum (``schedules.k_schedule``).
            kmeans_iters: Lloyd iterations.
            paint_stride: the whole-image cluster map is at G / paint_stride.
            min_mask_area: a mask takes part in the loss when it covers at least
                this fraction of both views' feature grids.
            seed: of the K-means generator (with the iteration); < 0: drawn once
                here at random (then a resumed run does not reproduce the clusters).
        """
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"MODEL.R2O.MODE={mode!r}: expected one of {MODES}")
        needed = [("MODEL.R2O.FEATURE", feature)]
        if mode == "r2o":
            needed.append(("MODEL.R2O.MASK_FEATURE", mask_feature))
        _check_features(backbone, needed)
        if not 0.0 <= min_mask_area <= 1.0:
            raise ValueError(f"MODEL.R2O.MIN_MASK_AREA={min_mask_area}: expected a fraction in [0, 1]")
        if paint_stride < 1:
            raise ValueError(f"MODEL.R2O.KMEANS.PAINT_STRIDE={paint_stride}: expected >= 1")
        self.backbone = backbone
        self.projector = projector
        self.predictor = predictor
        # Deep copies: the target starts equal to the online networks. Frozen, so
        # that the optimizer (which takes parameters with requires_grad) leaves them alone.
        self.target_backbone = copy.deepcopy(backbone)
        self.target_projector = copy.deepcopy(projector)
        for p in self.target_parameters():
            p.requires_grad_(False)
        self.mode = mode
        self.mask_feature = mask_feature
        self.feature = feature
        self.max_iter = max_iter
        self.k_start, self.k_end, self.k_update_period = k_start, k_end, k_update_period
        if mode == "r2o":
            self.k_at(0)  # a bad MODEL.R2O.KMEANS.K_* fails here, naming the key, not at the first step
        self.kmeans_iters = kmeans_iters
        self.paint_stride = paint_stride
        self.min_mask_area = min_mask_area
        if seed < 0:
            seed = int(np.random.SeedSequence().entropy % (2**63))
            logger.info("R2O: SEED < 0, K-means seed drawn at random: %d", seed)
        self.seed = seed
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        # part_timer(name) -> a context manager around each part of a training step;
        # a no-op unless a profiler sets it (tools/benchmark_r2o.py's per-part timings).
        self.part_timer = lambda name: contextlib.nullcontext()

    @classmethod
    def from_config(cls, cfg):
        r = cfg.MODEL.R2O
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        if r.FEATURE not in shapes:
            _check_features(backbone, [("MODEL.R2O.FEATURE", r.FEATURE)])
        channels = shapes[r.FEATURE].channels
        return {
            "backbone": backbone,
            "projector": MLPHead(channels, r.PROJECTOR_HIDDEN, r.PROJECTOR_DIM, r.HEAD_NORM),
            "predictor": MLPHead(r.PROJECTOR_DIM, r.PREDICTOR_HIDDEN, r.PROJECTOR_DIM, r.HEAD_NORM),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "max_iter": cfg.SOLVER.MAX_ITER,
            "mode": r.MODE,
            "mask_feature": r.MASK_FEATURE,
            "feature": r.FEATURE,
            "k_start": r.KMEANS.K_START,
            "k_end": r.KMEANS.K_END,
            "k_update_period": r.KMEANS.K_UPDATE_PERIOD,
            "kmeans_iters": r.KMEANS.NUM_ITERS,
            "paint_stride": r.KMEANS.PAINT_STRIDE,
            "min_mask_area": r.MIN_MASK_AREA,
            "seed": cfg.SEED,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # -- the target networks ---------------------------------------------------
    def target_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        """(target, online) module pairs the EMA updates, in a fixed order."""
        return [(self.target_backbone, self.backbone), (self.target_projector, self.projector)]

    def target_parameters(self):
        for target, _ in self.target_pairs():
            yield from target.parameters()

    # -- inputs ----------------------------------------------------------------
    def _stack(self, batched_inputs: List[dict], key: str) -> torch.Tensor:
        return torch.stack([x["r2o_views"][key] for x in batched_inputs]).to(self.device)

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 -> float, normalised by PIXEL_MEAN / PIXEL_STD."""
        return (images.float() - self.pixel_mean) / self.pixel_std

    @staticmethod
    def _check_inputs(batched_inputs: List[dict]) -> None:
        missing = [i for i, x in enumerate(batched_inputs) if "r2o_views" not in x]
        if missing:
            raise KeyError(
                f"R2O trains on the common mapper's 'r2o_views' target; input dicts {missing} lack it "
                "(is projects/r2o/views.py registered, and D2EXT.TARGETS empty or naming 'r2o_views'?)"
            )

    # -- schedule and clustering -----------------------------------------------
    def k_at(self, iteration: int) -> int:
        """K of the curriculum at ``iteration`` (before capping at the region count)."""
        return k_schedule(iteration, self.max_iter, self.k_start, self.k_end, self.k_update_period)

    def kmeans_generator(self, iteration: int) -> torch.Generator:
        """A CPU generator seeded by (seed, iteration): the clusters of a step
        depend on its iteration alone. Ranks share it (their regions differ)."""
        seed = derive_seed(self.seed, Stream.TRAINING_STEP, iteration, _KMEANS_COUNTER)
        return torch.Generator().manual_seed(seed % (2**63))

    @torch.no_grad()
    def cluster_maps(
        self, whole: torch.Tensor, superpixels: torch.Tensor, k: int, generator: torch.Generator
    ) -> Tuple[torch.Tensor, int]:
        """Cluster the batch's regions jointly.

        Args:
            whole: (B, 3, G, G) normalised whole images.
            superpixels: (B, G, G) int64 labels.
            k: clusters asked for (capped at the distinct regions of the batch).

        Returns:
            (B, k', g, g) per-cluster area fractions, k' the clusters K-means returned.
        """
        with self.part_timer("target forward, whole images"):
            feats = backbone_features(self.target_backbone, whole, [self.mask_feature])[self.mask_feature]
        with self.part_timer("clustering (pool, K-means, paint)"):
            return self._cluster(feats, superpixels, k, generator)

    def _cluster(
        self, feats: torch.Tensor, superpixels: torch.Tensor, k: int, generator: torch.Generator
    ) -> Tuple[torch.Tensor, int]:
        """(B, C, h, w) MASK_FEATURE maps -> (B, k', g, g) cluster maps and k'."""
        embeddings, image_index, region_index = superpixel_pool(feats, superpixels)
        embeddings = F.normalize(embeddings.float(), dim=-1)
        labels, centroids = kmeans(embeddings, k, self.kmeans_iters, generator)
        num_clusters = centroids.shape[0]
        num_regions = int(superpixels.max()) + 1
        table = region_label_table(labels, image_index, region_index, feats.shape[0], num_regions)
        return paint_clusters(superpixels, table, num_clusters, self.paint_stride), num_clusters

    @torch.no_grad()
    def predict_masks(
        self, batched_inputs: List[dict], k: int, joint: bool = False, seed: int = 0
    ) -> List[torch.Tensor]:
        """Cluster masks of each image by the target encoder, as training predicts them.

        Args:
            batched_inputs: dicts with "r2o_views" (only "whole" and "superpixels" are read).
            k: clusters per image (``joint=False``) or of the batch (``joint=True``,
                as training clusters); capped at the regions available.
            seed: of the K-means generator (the same seed gives the same masks;
                each image's clustering starts from a generator seeded by it).

        Returns:
            per image, a (k, G / PAINT_STRIDE, G / PAINT_STRIDE) float map of
            per-cluster area fractions (summing to 1 over k at every cell);
            clusters K-means could not form (fewer distinct regions than k) are all-zero.

        The target encoder runs in the modules' current mode: call ``model.eval()``
        first for running batch-norm statistics (in train mode its normalisation
        depends on the batch, as in training).
        """
        whole = self._normalize(self._stack(batched_inputs, "whole"))
        superpixels = self._stack(batched_inputs, "superpixels")
        feats = backbone_features(self.target_backbone, whole, [self.mask_feature])[self.mask_feature]
        n = len(batched_inputs)
        groups = [list(range(n))] if joint else [[i] for i in range(n)]
        out: List[Optional[torch.Tensor]] = [None] * n
        for group in groups:
            generator = torch.Generator().manual_seed(seed)
            maps, num = self._cluster(feats[group], superpixels[group], k, generator)
            if num < k:
                maps = F.pad(maps, (0, 0, 0, 0, 0, k - num))
            for j, i in enumerate(group):
                out[i] = maps[j]
        return out

    # -- training --------------------------------------------------------------
    @torch.no_grad()
    def view_masks(self, batched_inputs: List[dict], views_hw: Tuple[int, int], iteration: int):
        """(B, 2, K, h, w) soft masks of both views, and the K used (r2o mode:
        K of the curriculum capped at the batch's regions; byol: 1)."""
        b = len(batched_inputs)
        if self.mode == "byol":
            return torch.ones(b, 2, 1, *views_hw, device=self.device), 1
        whole = self._normalize(self._stack(batched_inputs, "whole"))
        superpixels = self._stack(batched_inputs, "superpixels")
        maps, num = self.cluster_maps(whole, superpixels, self.k_at(iteration), self.kmeans_generator(iteration))
        boxes = self._stack(batched_inputs, "boxes").float()
        flips = self._stack(batched_inputs, "flips").bool()
        return view_masks(maps, boxes, flips, whole.shape[-1], views_hw), num

    def forward(self, batched_inputs: List[dict]):
        """Training: {"loss_r2o": scalar}, inside detectron2's EventStorage (its
        iteration picks K and seeds K-means). Eval: one empty dict per image
        (see the module docstring)."""
        if not self.training:
            return [{} for _ in batched_inputs]
        self._check_inputs(batched_inputs)
        storage = get_event_storage()
        iteration = storage.iter
        b = len(batched_inputs)
        views = torch.cat([self._stack(batched_inputs, "view1"), self._stack(batched_inputs, "view2")])
        views = self._normalize(views)  # (2B, 3, S, S): view 1 of every image, then view 2

        with self.part_timer("online forward"):
            online = self.backbone(views)[self.feature]  # (2B, C, h, w)
        masks, num_clusters = self.view_masks(batched_inputs, tuple(online.shape[-2:]), iteration)
        with torch.no_grad(), self.part_timer("target forward, views"):
            target = backbone_features(self.target_backbone, views, [self.feature])[self.feature]

        pooled1, area1 = mask_pool(online[:b], masks[:, 0])
        pooled2, area2 = mask_pool(online[b:], masks[:, 1])
        valid = valid_mask_pairs(area1, area2, self.min_mask_area)  # (B, K)
        num_masks = int(valid.sum())
        k = self.k_at(iteration) if self.mode == "r2o" else 1
        storage.put_scalar("r2o/k", float(k), smoothing_hint=False)
        storage.put_scalar("r2o/clusters", float(num_clusters), smoothing_hint=False)
        storage.put_scalar("r2o/masks_per_image", num_masks / b)

        if num_masks == 0:
            logger.warning("R2O: no mask covers MODEL.R2O.MIN_MASK_AREA of both views at iteration %d", iteration)
        # The heads run even on no masks ((0, C) rows): the loss is then 0 but every
        # trainable parameter is in the graph, as DistributedDataParallel needs, and a
        # synchronised batch norm's collective is not skipped on one rank only.
        with self.part_timer("online forward"):
            z = torch.cat([pooled1[valid], pooled2[valid]])  # (2M, C)
            q = self.predictor(self.projector(z))
        with torch.no_grad(), self.part_timer("target forward, views"):
            t_pooled1, _ = mask_pool(target[:b], masks[:, 0])
            t_pooled2, _ = mask_pool(target[b:], masks[:, 1])
            t = self.target_projector(torch.cat([t_pooled1[valid], t_pooled2[valid]]))
        loss = r2o_loss(q[:num_masks], q[num_masks:], t[:num_masks], t[num_masks:])
        return {"loss_r2o": loss}
