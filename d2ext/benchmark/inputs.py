"""Synthetic detectron2 batches for timing without a dataset."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch


def synthetic_inputs(
    batch_size: int,
    height: int,
    width: int,
    *,
    targets: Sequence[str] = (),
    num_classes: int = 1,
    num_sem_seg_classes: int = 1,
    instances_per_image: int = 3,
    seed: int = 0,
) -> List[Dict[str, Any]]:
    """A detectron2 batch of random images, with random ground truth if asked.

    Args:
        targets: subset of {"instances", "sem_seg"} (the common mapper's names):
            "instances" adds ``Instances`` with gt_boxes, gt_classes in
            [0, num_classes) and box-shaped ``BitMasks``; "sem_seg" adds a (H, W)
            long map of labels in [0, num_sem_seg_classes).

    Returns:
        list of dicts with "image" (3, H, W) float32 in [0, 255] on the CPU, as a
        data loader gives it, "height", "width", and the requested targets.
    """
    from detectron2.structures import BitMasks, Boxes, Instances

    unknown = set(targets) - {"instances", "sem_seg"}
    if unknown:
        raise ValueError(
            f"cannot synthesize targets {sorted(unknown)}; only 'instances' and 'sem_seg'. "
            "Benchmark training on the train loader instead (leave out --input-size)."
        )
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(batch_size):
        item: Dict[str, Any] = {
            "image": torch.randint(0, 256, (3, height, width), generator=g).float(),
            "height": height,
            "width": width,
        }
        if "instances" in targets:
            n = instances_per_image
            # Boxes of at least a quarter of the image side, inside the image.
            wh = torch.rand(n, 2, generator=g) * 0.5 + 0.25
            xy0 = torch.rand(n, 2, generator=g) * (1 - wh)
            scale = torch.tensor([width, height], dtype=torch.float32)
            boxes = torch.cat([xy0 * scale, (xy0 + wh) * scale], dim=1)
            masks = torch.zeros(n, height, width, dtype=torch.bool)
            for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
                masks[i, y0:y1, x0:x1] = True
            inst = Instances((height, width))
            inst.gt_boxes = Boxes(boxes)
            inst.gt_classes = torch.randint(0, num_classes, (n,), generator=g)
            inst.gt_masks = BitMasks(masks)
            item["instances"] = inst
        if "sem_seg" in targets:
            item["sem_seg"] = torch.randint(0, num_sem_seg_classes, (height, width), generator=g)
        batch.append(item)
    return batch
