"""d2ext's datasets: builtin names, toy data, user datasets (from code or the config), checks.

- ``register_all_builtin(root=None)``: detectron2's COCO / ADE20K names with
  validating loaders, the toy datasets, and Cityscapes when available.
- ``register_coco_instances`` / ``register_coco_panoptic`` / ``register_sem_seg``:
  your own data; ``register_from_config(cfg)`` does the same from ``cfg.D2EXT.DATASETS``.
- ``check_panoptic_png`` / ``check_label_size`` / ``check_label_values``: the
  per-image checks that need pixels, for the mapper.
- Every data problem raises ``DatasetError`` naming the file and the id.
"""

from .builtin import register_all_builtin
from .catalog import get_datasets_root, register_dataset, registered_spec, unregister_dataset
from .checks import DatasetError, check_label_size, check_label_values, check_panoptic_png
from .from_config import register_from_config
from .metadata import (
    instances_metadata,
    panoptic_metadata,
    panoptic_separated_metadata,
    semantic_metadata,
)
from .toy import (
    TOY_CATEGORIES,
    ensure_toy_dataset,
    generate_toy_dataset,
    register_toy_datasets,
)
from .user import (
    load_coco_instances,
    load_coco_panoptic,
    load_coco_panoptic_separated,
    load_sem_seg,
    register_coco_instances,
    register_coco_panoptic,
    register_coco_panoptic_separated,
    register_sem_seg,
)

__all__ = [
    "DatasetError",
    "TOY_CATEGORIES",
    "check_label_size",
    "check_label_values",
    "check_panoptic_png",
    "ensure_toy_dataset",
    "generate_toy_dataset",
    "get_datasets_root",
    "instances_metadata",
    "load_coco_instances",
    "load_coco_panoptic",
    "load_coco_panoptic_separated",
    "load_sem_seg",
    "panoptic_metadata",
    "panoptic_separated_metadata",
    "register_all_builtin",
    "register_coco_instances",
    "register_coco_panoptic",
    "register_coco_panoptic_separated",
    "register_dataset",
    "register_from_config",
    "register_sem_seg",
    "register_toy_datasets",
    "registered_spec",
    "semantic_metadata",
    "unregister_dataset",
]
