"""Linear probe of a frozen backbone for semantic segmentation.

The quality of pretrained features without fine-tuning: the backbone of a
downstream semantic config (e.g. Semantic FPN R18), initialised from
``MODEL.WEIGHTS`` (an R2O / BYOL export, or "" for the random-init control),
is frozen in eval mode; its maps at ``features`` (e.g. res4 and res5) are
computed once per image, the coarser ones bilinearly resized to the finest
and concatenated, each channel standardised with the training set's
statistics; then one 1×1 convolution to the classes is trained with
cross-entropy. Its logits are upsampled bilinearly to the label's resolution
in the loss and at inference, so the whole predictor before the softmax is
linear in the frozen features. Scored by the config's evaluator (the
``sem_seg`` outputs of the test set at the original resolution).

The standardisation changes nothing a linear layer could not express; it
only makes one learning rate fit every backbone (random-init features and
pretrained ones differ in scale by orders of magnitude).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


@dataclass
class ProbeImage:
    """One image's frozen features and, for training images, its label map."""

    file_name: str
    features: torch.Tensor  # (C, h, w): the concatenated maps over the image's resized, unpadded extent
    height: int  # original size: logits are upsampled to it
    width: int
    label: torch.Tensor = None  # (height, width) int64, ignore_label where unlabelled


def frozen_backbone(model: nn.Module) -> nn.Module:
    """The ResNet a downstream model's weights landed on (``backbone.bottom_up`` of FPN
    models, else ``backbone``), in eval mode with gradients off."""
    backbone = getattr(model.backbone, "bottom_up", model.backbone)
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    image: torch.Tensor,
    pixel_mean: torch.Tensor,
    pixel_std: torch.Tensor,
    features: Sequence[str],
) -> torch.Tensor:
    """(3, H, W) image as the mapper gives it -> (sum C_f, h, w) maps at the finest of
    ``features`` over the unpadded extent (the image is padded to the backbone's
    size divisibility, as the downstream model does)."""
    x = (image.float() - pixel_mean) / pixel_std
    h, w = x.shape[-2:]
    div = max(1, getattr(backbone, "size_divisibility", 0) or 32)
    x = F.pad(x, (0, (-w) % div, 0, (-h) % div))
    maps = backbone(x[None])
    missing = [f for f in features if f not in maps]
    if missing:
        raise ValueError(f"--features {missing}: the backbone outputs only {sorted(maps)}")
    strides = backbone.output_shape()
    finest = min(features, key=lambda f: strides[f].stride)
    stride = strides[finest].stride
    size = maps[finest].shape[-2:]
    out = [
        maps[f] if maps[f].shape[-2:] == size
        else F.interpolate(maps[f], size=size, mode="bilinear", align_corners=False)
        for f in features
    ]
    valid_h, valid_w = -(-h // stride), -(-w // stride)  # cells covering the unpadded image
    return torch.cat(out, dim=1)[0, :, :valid_h, :valid_w].contiguous()


def read_label(path: str, num_classes: int, ignore_label: int) -> torch.Tensor:
    """A semantic label png -> (H, W) int64; values must be class ids or ignore_label."""
    from detectron2.utils.file_io import PathManager
    from PIL import Image

    with PathManager.open(path, "rb") as f:
        label = np.asarray(Image.open(f), dtype=np.int64)
    if label.ndim != 2:
        raise ValueError(f"{path}: a semantic label map must have one channel, got shape {label.shape}")
    bad = (label >= num_classes) & (label != ignore_label)
    if bad.any():
        raise ValueError(
            f"{path}: label values {sorted(np.unique(label[bad]).tolist())[:10]} are neither class ids "
            f"(< {num_classes}) nor the ignore label {ignore_label}"
        )
    return torch.from_numpy(label)


def channel_statistics(images: Sequence[ProbeImage]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the features over every cell of ``images``: (C,), (C,)."""
    flat = torch.cat([im.features.flatten(1) for im in images], dim=1)  # (C, cells)
    return flat.mean(dim=1), flat.std(dim=1).clamp(min=1e-6)


class LinearProbe(nn.Module):
    """Standardised features -> 1×1 convolution -> logits upsampled to the label size."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, num_classes: int):
        super().__init__()
        self.register_buffer("mean", mean[:, None, None].clone())
        self.register_buffer("std", std[:, None, None].clone())
        self.classifier = nn.Conv2d(mean.numel(), num_classes, kernel_size=1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """(C, h, w) -> (K, H, W) logits at ``size``."""
        logits = self.classifier(((features - self.mean) / self.std)[None])
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0]


def train_probe(
    train: Sequence[ProbeImage],
    num_classes: int,
    ignore_label: int,
    iters: int = 1000,
    batch_size: int = 8,
    lr: float = 0.1,
    weight_decay: float = 1e-4,
    seed: int = 0,
    log_period: int = 100,
) -> LinearProbe:
    """SGD (momentum 0.9, cosine to 0) on the mean per-pixel cross-entropy of random
    batches of ``train``; returns the probe in eval mode."""
    if not train:
        raise ValueError("the linear probe needs at least one training image")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the classifier's init
    mean, std = channel_statistics(train)
    probe = LinearProbe(mean, std, num_classes)
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, iters))
    for it in range(iters):
        batch = torch.randint(len(train), (min(batch_size, len(train)),), generator=gen).tolist()
        loss = sum(
            F.cross_entropy(
                probe(train[i].features, (train[i].height, train[i].width))[None],
                train[i].label[None], ignore_index=ignore_label,
            )
            for i in batch
        ) / len(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if (it + 1) % log_period == 0 or it + 1 == iters:
            logger.info("linear probe: iter %d / %d, loss %.4f", it + 1, iters, loss.item())
    return probe.eval()


@torch.no_grad()
def evaluate_probe(probe: LinearProbe, images: Sequence[ProbeImage], evaluator) -> Dict[str, Dict[str, float]]:
    """Runs a detectron2 evaluator (reset / process / evaluate) on the probe's
    ``sem_seg`` outputs of ``images``; returns its results."""
    evaluator.reset()
    for im in images:
        inputs = [{"file_name": im.file_name, "height": im.height, "width": im.width}]
        evaluator.process(inputs, [{"sem_seg": probe(im.features, (im.height, im.width))}])
    return evaluator.evaluate()


def mapped_images(cfg, dataset_name: str, with_labels: bool, num_classes: int, ignore_label: int,
                  backbone: nn.Module, pixel_mean: torch.Tensor, pixel_std: torch.Tensor,
                  features: Sequence[str], log_period: int = 50) -> List[ProbeImage]:
    """Every image of ``dataset_name`` through the inference mapper (the config's test
    resize) and the frozen backbone; labels read from ``sem_seg_file_name``."""
    from detectron2.data import DatasetCatalog

    from d2ext.data.mapper import CommonDatasetMapper

    dicts = DatasetCatalog.get(dataset_name)
    if with_labels:
        unlabeled = [d["file_name"] for d in dicts if "sem_seg_file_name" not in d]
        if unlabeled:
            raise ValueError(
                f"{dataset_name}: the linear probe trains on semantic labels, but {len(unlabeled)} images "
                f"have no sem_seg_file_name (e.g. {unlabeled[0]})"
            )
    mapper = CommonDatasetMapper(cfg, is_train=False)
    out = []
    for i, d in enumerate(dicts):
        x = mapper(dict(d))
        out.append(ProbeImage(
            file_name=d["file_name"],
            features=extract_features(backbone, x["image"], pixel_mean, pixel_std, features),
            height=int(d.get("height") or x["height"]),
            width=int(d.get("width") or x["width"]),
            label=read_label(d["sem_seg_file_name"], num_classes, ignore_label) if with_labels else None,
        ))
        if with_labels and out[-1].label.shape != (out[-1].height, out[-1].width):
            raise ValueError(
                f"{d['sem_seg_file_name']}: label size {tuple(out[-1].label.shape)} differs from the image's "
                f"({out[-1].height}, {out[-1].width}) in {dataset_name}"
            )
        if (i + 1) % log_period == 0 or i + 1 == len(dicts):
            logger.info("linear probe: features of %d / %d images of %s", i + 1, len(dicts), dataset_name)
    return out
