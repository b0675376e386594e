"""R2O config keys, all under ``MODEL.R2O``.

Defaults are the reference's (KKallidromitis/r2o, ImageNet R50) where it has
one, unless a comment says otherwise; the toy values go into the toy yaml.
Nothing outside ``MODEL.R2O`` is added or changed: the backbone
(``MODEL.BACKBONE`` / ``MODEL.RESNETS``), solver and schedule are the yaml
files' business.
"""
from __future__ import annotations

from detectron2.config import CfgNode as CN

__all__ = ["add_r2o_config"]


def add_r2o_config(cfg: CN) -> None:
    """Adds MODEL.R2O.*; changes no existing default."""
    r = cfg.MODEL.R2O = CN()
    # "r2o": masks from clustering the momentum encoder's region features;
    # "byol": one whole-view mask per image, no clustering (the image-level baseline).
    r.MODE = "r2o"
    # Backbone features: region embeddings for clustering come from MASK_FEATURE
    # of the momentum encoder on the whole image; the loss pools FEATURE of each view.
    r.MASK_FEATURE = "res4"
    r.FEATURE = "res5"

    # --- views (the "r2o_views" target builder of the common mapper) ---
    r.VIEWS = CN()
    r.VIEWS.CROP_SIZE = 224  # each augmented view, square, pixels
    r.VIEWS.CROP_SCALE = (0.08, 1.0)  # random resized crop: area fraction range
    r.VIEWS.CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # aspect ratio range
    r.VIEWS.WHOLE_SIZE = 224  # the whole image, resized to a square (masks are predicted here)
    r.VIEWS.FLIP_PROB = 0.5
    # colour jitter brightness, contrast, saturation, hue, applied with COLOR_JITTER_PROB
    r.VIEWS.COLOR_JITTER = (0.4, 0.4, 0.2, 0.1)
    r.VIEWS.COLOR_JITTER_PROB = 0.8
    r.VIEWS.GRAYSCALE_PROB = 0.2
    r.VIEWS.BLUR_PROB = (1.0, 0.1)  # view 1, view 2
    r.VIEWS.SOLARIZE_PROB = (0.0, 0.2)  # view 1, view 2
    # SLIC superpixels of the whole image (scikit-image, on the uint8 RGB image).
    # The reference: 100 segments, skimage's default compactness 10. On the toy
    # scenes those give only ~20-40 segments; the toy yaml sets 256 and 20 (~240).
    r.VIEWS.SLIC_SEGMENTS = 100
    r.VIEWS.SLIC_COMPACTNESS = 10.0
    # Superpixels are cached per image (the whole view is deterministic) in
    # this folder; "" = in memory of each loader worker only.
    r.VIEWS.SLIC_CACHE_DIR = ""

    # --- mask prediction by clustering (no gradient) ---
    r.KMEANS = CN()
    # K follows a cosine curriculum from K_START to K_END over SOLVER.MAX_ITER,
    # changed every K_UPDATE_PERIOD iterations (the reference: once per epoch;
    # 128 -> 4 over 300 epochs); capped at the number of regions of the batch.
    r.KMEANS.K_START = 128
    r.KMEANS.K_END = 4
    r.KMEANS.K_UPDATE_PERIOD = 1
    r.KMEANS.NUM_ITERS = 10  # Lloyd iterations after k-means++ init
    # Cluster maps are painted at WHOLE_SIZE // PAINT_STRIDE as per-cluster area fractions.
    r.KMEANS.PAINT_STRIDE = 4
    # A mask takes part in the loss when it covers at least this fraction of
    # both views' FEATURE grids. Not the reference's: it keeps any mask whose
    # RoIAligned area exceeds 1e-3 of one cell of its 7 x 7 grid (a fraction of
    # 2e-5), so slivers of a few hundredths of a cell count as a mask pair.
    r.MIN_MASK_AREA = 0.01

    # --- networks ---
    r.PROJECTOR_HIDDEN = 4096
    r.PROJECTOR_DIM = 256
    r.PREDICTOR_HIDDEN = 4096
    # Batch norm of the projector / predictor MLPs: "naiveSyncBN" averages the
    # statistics over all processes (the reference syncs every BN), "BN" per process.
    r.HEAD_NORM = "naiveSyncBN"
    # Target network momentum: 1 - (1 - m0) * (cos(pi * k / K) + 1) / 2 over SOLVER.MAX_ITER.
    r.BASE_MOMENTUM = 0.99
    # The reference multiplies the learning rate of every parameter group by
    # K / 16 (K = the curriculum's current cluster count, uncapped), at every
    # step, warm-up included; 0 = off, otherwise the divisor (the reference: 16).
    # Kept off by default here: with K_START 128 it starts at 8x SOLVER.BASE_LR.
    r.LR_SCALE_K_DIVISOR = 0
