"""Object-centricity of R2O's cluster masks: IoU with ground-truth panoptic segments.

Per image: the k predicted cluster maps (per-cluster area fractions on the whole
image, ``R2O.predict_masks``) are upsampled to the ground truth's resolution and
turned into one hard cluster per pixel (argmax over k); clusters and the
image's segments are matched one-to-one (Hungarian, scipy's
``linear_sum_assignment``) maximising the summed IoU; each segment scores the
IoU of its cluster, 0 if it got none (more segments than clusters). The
image's score is the mean over its segments (also over things and over stuff
alone); the dataset's score is the mean over images (images without things
leave the things mean, and likewise for stuff).

Pixels outside every segment (void, crowd) are left out of the clusters'
areas: a cluster is not penalised for covering unlabelled pixels.

``slic_color_maps`` is the "SLIC alone" control: the same superpixels and
K-means, on each superpixel's mean colour instead of encoder features.

Shapes: k clusters, (g, g) the painted cluster map, (H, W) the ground truth's
pixels, K ground-truth segments, (G, G) the whole image / superpixel map.
"""
from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from .kmeans import kmeans
from .masks import paint_clusters, region_label_table, superpixel_pool

__all__ = [
    "ImageScore",
    "ObjectCentricity",
    "evaluation_mapper",
    "format_summary",
    "hard_clusters",
    "image_score",
    "load_eval_inputs",
    "matched_ious",
    "evaluate_object_centricity",
    "score_object_centricity",
    "slic_color_maps",
    "thing_flags",
]

logger = logging.getLogger(__name__)


def hard_clusters(maps: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(k, g, g) per-cluster area fractions -> (H, W) int64 cluster of each pixel.

    Bilinear upsampling (half-pixel centres, as the map's cells are areas of the
    whole image) to ``size``, then argmax over k (ties: the lowest index).
    """
    if maps.dim() != 3:
        raise ValueError(f"hard_clusters: expected (k, g, g) cluster maps, got {tuple(maps.shape)}")
    up = F.interpolate(maps[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]
    return up.argmax(dim=0)


def matched_ious(gt_masks: torch.Tensor, clusters: torch.Tensor, k: int) -> torch.Tensor:
    """IoU of each ground-truth segment with the cluster matched to it.

    Args:
        gt_masks: (K, H, W) bool, non-overlapping segments.
        clusters: (H, W) int64 in [0, k), the hard cluster of each pixel.
        k: the number of clusters.

    Returns:
        (K,) float64: per segment the IoU of its Hungarian-matched cluster
        (matching maximises the summed IoU), 0 for a segment left unmatched.
        Cluster areas count only pixels inside some segment (void ignored).
    """
    if gt_masks.dim() != 3 or clusters.shape != gt_masks.shape[1:]:
        raise ValueError(
            f"matched_ious: masks (K, H, W) and clusters (H, W) must share (H, W), got "
            f"{tuple(gt_masks.shape)} and {tuple(clusters.shape)}"
        )
    num_gt = gt_masks.shape[0]
    if num_gt == 0:
        return torch.zeros(0, dtype=torch.float64)
    gt = gt_masks.flatten(1).to(torch.float64)  # (K, HW)
    labelled = gt_masks.any(dim=0).flatten()
    onehot = F.one_hot(clusters.flatten().clamp(0, k - 1), k).to(torch.float64)  # (HW, k)
    onehot = onehot * labelled[:, None]
    inter = gt @ onehot  # (K, k) pixel counts
    union = gt.sum(1, keepdim=True) + onehot.sum(0, keepdim=True) - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
    rows, cols = linear_sum_assignment(iou.numpy(), maximize=True)
    out = torch.zeros(num_gt, dtype=torch.float64)
    out[torch.as_tensor(rows, dtype=torch.long)] = iou[rows, cols]
    return out


@dataclass
class ImageScore:
    """Mean matched IoU of one image over all / thing / stuff segments (None: none of that kind)."""

    all: Optional[float]
    things: Optional[float]
    stuff: Optional[float]
    num_segments: int
    num_things: int
    num_stuff: int


def _mean(x: torch.Tensor) -> Optional[float]:
    return float(x.mean()) if x.numel() else None


def image_score(ious: torch.Tensor, isthing: torch.Tensor) -> ImageScore:
    """Per-image means of (K,) matched IoUs, split by the (K,) bool ``isthing``."""
    isthing = isthing.bool()
    return ImageScore(
        all=_mean(ious),
        things=_mean(ious[isthing]),
        stuff=_mean(ious[~isthing]),
        num_segments=int(ious.numel()),
        num_things=int(isthing.sum()),
        num_stuff=int((~isthing).sum()),
    )


@dataclass
class ObjectCentricity:
    """Accumulates per-image scores; ``summary()`` gives the dataset's means."""

    scores: List[ImageScore] = field(default_factory=list)
    file_names: List[str] = field(default_factory=list)

    def add(self, score: ImageScore, file_name: str = "") -> None:
        self.scores.append(score)
        self.file_names.append(file_name)

    @staticmethod
    def _mean_of(values: Iterable[Optional[float]]) -> Optional[float]:
        present = [v for v in values if v is not None]
        return statistics.fmean(present) if present else None

    def summary(self) -> Dict[str, object]:
        s = self.scores
        return {
            "miou": self._mean_of(x.all for x in s),
            "miou_things": self._mean_of(x.things for x in s),
            "miou_stuff": self._mean_of(x.stuff for x in s),
            "num_images": len(s),
            "num_images_with_things": sum(x.things is not None for x in s),
            "num_images_with_stuff": sum(x.stuff is not None for x in s),
            "num_segments": sum(x.num_segments for x in s),
            "num_things": sum(x.num_things for x in s),
            "num_stuff": sum(x.num_stuff for x in s),
        }

    def per_image(self) -> List[Dict[str, object]]:
        return [
            {"file_name": f, "miou": x.all, "miou_things": x.things, "miou_stuff": x.stuff,
             "num_segments": x.num_segments}
            for f, x in zip(self.file_names, self.scores)
        ]


@torch.no_grad()
def slic_color_maps(
    whole: torch.Tensor,
    superpixels: torch.Tensor,
    k: int,
    stride: int,
    num_iters: int,
    seed: int = 0,
) -> List[torch.Tensor]:
    """The "SLIC alone" control: per image, K-means of its superpixels' mean colours.

    Args:
        whole: (B, 3, G, G) uint8 whole images (any channel order: the
            distance between colours does not depend on it).
        superpixels: (B, G, G) int64 SLIC labels.
        k: clusters per image (capped at its superpixels; the missing ones all-zero).
        stride: the painted map's stride (MODEL.R2O.KMEANS.PAINT_STRIDE).
        num_iters: Lloyd iterations (MODEL.R2O.KMEANS.NUM_ITERS).
        seed: of each image's K-means generator (as ``predict_masks``'s).

    Returns:
        per image a (k, G / stride, G / stride) float map of per-cluster area fractions.
    """
    out = []
    for i in range(whole.shape[0]):
        colours = whole[i : i + 1].float() / 255.0  # pooled at full resolution: exact means
        emb, image_index, region_index = superpixel_pool(colours, superpixels[i : i + 1])
        labels, centroids = kmeans(emb, k, num_iters, torch.Generator().manual_seed(seed))
        num = centroids.shape[0]
        table = region_label_table(labels, image_index, region_index, 1, int(superpixels[i].max()) + 1)
        maps = paint_clusters(superpixels[i : i + 1], table, num, stride)[0]
        if num < k:
            maps = F.pad(maps, (0, 0, 0, 0, 0, k - num))
        out.append(maps)
    return out


def thing_flags(gt_classes: torch.Tensor, segments_info: Sequence[dict], thing_ids: Iterable[int]) -> torch.Tensor:
    """(K,) bool: is each segment's class a thing. From the image's own
    segments_info ("isthing") where it says, else from the metadata's thing ids."""
    by_class = {int(s["category_id"]): bool(s["isthing"]) for s in segments_info if "isthing" in s}
    things = set(int(t) for t in thing_ids)
    return torch.tensor([by_class.get(int(c), int(c) in things) for c in gt_classes.tolist()], dtype=torch.bool)


def format_summary(summary: Dict[str, object]) -> str:
    def f(v):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"

    return (
        f"mIoU {f(summary['miou'])} (things {f(summary['miou_things'])}, stuff {f(summary['miou_stuff'])}) "
        f"over {summary['num_images']} images, {summary['num_segments']} segments"
    )



def evaluation_mapper(cfg):
    """The common mapper with no augmentation and the targets "r2o_views" (the
    whole image and its superpixels, as training makes them; the random views
    are made too and ignored) and "segments" (ground truth at the image's
    own resolution)."""
    from d2ext.data.mapper import CommonDatasetMapper
    from d2ext.data.targets import TARGET_BUILDERS

    from .views import R2OViews

    # superpixels in BYOL mode too: BYOL's checkpoints are clustered here as R2O's are
    views = TARGET_BUILDERS.get("r2o_views")._replace(build=R2OViews.from_config(cfg, superpixels=True))
    return CommonDatasetMapper(
        is_train=True,  # the mapper builds targets only in training mode
        augmentations=[],
        image_format=cfg.INPUT.FORMAT,
        targets=[views, TARGET_BUILDERS.get("segments")],
        size_divisibility=-1,
    )


def load_eval_inputs(cfg, dataset_name: str, num_images: int = 100, log_period: int = 20) -> List[dict]:
    """The first ``num_images`` images (<= 0: all) of a panoptic dataset, mapped once
    for any number of models and k: per image a dict with "file_name",
    "r2o_views" ({"whole": (3, G, G) uint8, "superpixels": (G, G) int64}, what
    ``predict_masks`` reads), "gt_masks" (K, H, W) bool and "isthing" (K,) bool."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    dicts = DatasetCatalog.get(dataset_name)
    if not dicts or "segments_info" not in dicts[0]:
        raise ValueError(
            f"{dataset_name}: needs panoptic ground truth (pan_seg_file_name + segments_info), "
            "e.g. toy_panoptic_val"
        )
    dicts = dicts[: num_images if num_images > 0 else len(dicts)]
    thing_ids = MetadataCatalog.get(dataset_name).get("thing_dataset_id_to_contiguous_id", {}).values()
    mapper = evaluation_mapper(cfg)
    out = []
    for i, d in enumerate(dicts):
        x = mapper(d)
        views, segments = x["r2o_views"], x["segments"]
        out.append({
            "file_name": x.get("file_name", ""),
            "r2o_views": {"whole": views["whole"], "superpixels": views["superpixels"]},
            "gt_masks": segments.gt_masks,
            "isthing": thing_flags(segments.gt_classes, x.get("segments_info", ()), thing_ids),
        })
        if (i + 1) % log_period == 0 or i + 1 == len(dicts):
            logger.info(
                "object-centricity: mapped %d / %d images of %s (SLIC included)", i + 1, len(dicts), dataset_name
            )
    return out


@torch.no_grad()
def score_object_centricity(
    inputs: Sequence[dict],
    k: int,
    model: Optional[torch.nn.Module] = None,
    paint_stride: int = 4,
    kmeans_iters: int = 10,
    seed: int = 0,
    batch_size: int = 4,
    log_period: int = 20,
) -> ObjectCentricity:
    """Scores ``load_eval_inputs``'s images.

    Args:
        k: clusters per image.
        model: an R2O model in eval mode whose ``predict_masks(batched_inputs, k, seed=)``
            gives the clusters; None: the SLIC-alone control, clustered with
            ``paint_stride`` and ``kmeans_iters`` (MODEL.R2O.KMEANS.*).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    result = ObjectCentricity()
    for start in range(0, len(inputs), batch_size):
        batch = list(inputs[start : start + batch_size])
        if model is None:
            whole = torch.stack([x["r2o_views"]["whole"] for x in batch])
            superpixels = torch.stack([x["r2o_views"]["superpixels"] for x in batch])
            maps = slic_color_maps(whole, superpixels, k, paint_stride, kmeans_iters, seed)
        else:
            maps = model.predict_masks(batch, k, seed=seed)
        for x, m in zip(batch, maps):
            gt = x["gt_masks"]
            clusters = hard_clusters(m.cpu(), tuple(gt.shape[-2:]))
            result.add(image_score(matched_ious(gt, clusters, m.shape[0]), x["isthing"]), x["file_name"])
        done = start + len(batch)
        if done // log_period > start // log_period or done == len(inputs):
            logger.info("object-centricity: %d / %d images, %s", done, len(inputs), format_summary(result.summary()))
    return result


def evaluate_object_centricity(
    cfg,
    model: Optional[torch.nn.Module],
    dataset_name: str,
    k: int,
    num_images: int = 100,
    seed: int = 0,
    batch_size: int = 4,
    log_period: int = 20,
) -> ObjectCentricity:
    """``load_eval_inputs`` + ``score_object_centricity`` for one model (None: SLIC alone) and k."""
    inputs = load_eval_inputs(cfg, dataset_name, num_images, log_period)
    r = cfg.MODEL.R2O.KMEANS
    return score_object_centricity(inputs, k, model, r.PAINT_STRIDE, r.NUM_ITERS, seed, batch_size, log_period)
