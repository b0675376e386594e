#!/usr/bin/env python
"""Export a d2ext model to ONNX or TorchScript (detectron2's tools/deploy/export_model.py CLI).

    python tools/export_model.py --config-file CFG --format {onnx,torchscript} \\
        --export-method {tracing,scripting} --output DIR [--sample-image F | --input-size H W] \\
        [--task {sem_seg,instances}] [--opset N] [--no-fold-bn] [--no-verify] [KEY VALUE ...]

Writes DIR/model.onnx (or model.ts) and DIR/export.json (input shape and values,
output names, classes, config). The graph is for one input size: the sample
image after the config's test-time resize, or ``--input-size`` (default: the
config's MIN_SIZE_TEST square, capped by MAX_SIZE_TEST) with a random image.
Batch norms are folded into the convolutions first (``--no-fold-bn`` keeps them).

Inputs of the exported graph: raw pixels in [0, 255], float32, channels in
INPUT.FORMAT order; (1, 3, H, W) for sem_seg, (3, H, W) for instances.
Outputs: "sem_seg" (1, K, H, W) (logits; MaskFormer: class scores), or
pred_boxes / pred_classes / pred_masks (D, 1, M, M) / scores / image_size before
mask pasting (``d2ext.deploy.instances_from_outputs`` pastes them).

Afterwards the export is run on the sample (ONNX Runtime or torch.jit.load) and
compared with the eager model; the result goes to export.json ("verify") and the
log. Run it with ``d2ext.deploy.load_exported(DIR)``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import d2ext_projects  # noqa: F401  (d2ext first, then every method's registration)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402

from d2ext.deploy import FORMATS, METHODS, TASKS, export_model, load_exported  # noqa: E402
from d2ext.deploy.check import compare_semantic, compare_tensors  # noqa: E402
from d2ext.deploy.export import METADATA_FILE, ExportError, default_task  # noqa: E402
from d2ext.deploy.adapters import UnsupportedModelError  # noqa: E402
from d2ext.layers import fold_batch_norms  # noqa: E402
from d2ext.tool_logging import setup_tool_logging  # noqa: E402

logger = logging.getLogger("d2ext.export_model")


class UsageError(ValueError):
    """A bad argument: reported without a traceback."""


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--format", choices=FORMATS, default="onnx")
    parser.add_argument("--export-method", choices=METHODS, default="tracing")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--sample-image", default=None, metavar="FILE",
                        help="an image; the export takes its size after the test-time resize")
    parser.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="export size when there is no --sample-image (a random image)")
    parser.add_argument("--task", choices=TASKS, default=None,
                        help="default: sem_seg if the model outputs it, else instances")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 16)")
    parser.add_argument("--no-fold-bn", action="store_true", help="keep the batch norms")
    parser.add_argument("--no-verify", action="store_true", help="skip the eager-vs-export check")
    parser.add_argument("opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return parser


def sample_image(cfg, path: Optional[str], input_size: Optional[Sequence[int]], augmentations) -> torch.Tensor:
    """(3, H, W) float32 raw pixels in INPUT.FORMAT: the file after the test-time
    augmentations (as the Predictor does), or a random image of ``input_size``."""
    if path:
        if not os.path.isfile(path):
            raise UsageError(f"--sample-image {path!r}: no such file")
        image = read_image(path, format=cfg.INPUT.FORMAT)
        aug = T.AugInput(image)
        augmentations(aug)
        return torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1))).float()
    if input_size is None:
        side = min(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        input_size = (side, side)
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, *input_size), generator=g).float()


def _classes(cfg) -> Dict[str, List[str]]:
    if not cfg.DATASETS.TEST:
        return {}
    meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
    return {k: list(getattr(meta, k)) for k in ("thing_classes", "stuff_classes") if hasattr(meta, k)}


def _eager(model, image: torch.Tensor, task: str) -> Dict[str, torch.Tensor]:
    from d2ext.deploy.export import _adapter

    module, inputs, names = _adapter(model, image, task)
    with torch.no_grad():
        out = module(*inputs)
    out = (out,) if isinstance(out, torch.Tensor) else out
    return dict(zip(names, out))


def verify(model, image: torch.Tensor, task: str, directory: str) -> Dict[str, Any]:
    """Runs the export on ``image`` and compares it with the eager model."""
    exported = load_exported(directory)
    inputs = image[None] if task == "sem_seg" else image
    out = exported(inputs)
    ref = _eager(model, image, task)
    result: Dict[str, Any] = {"backend": exported.backend, "providers": exported.providers}
    if task == "sem_seg":
        result.update(compare_semantic(ref["sem_seg"], out["sem_seg"]))
    else:
        result["max_abs_diff"] = compare_tensors(ref, out)
    return result


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = get_parser().parse_args(argv)
    setup_tool_logging()
    if not os.path.isfile(args.config_file):
        raise UsageError(f"--config-file {args.config_file!r}: no such file")
    if args.sample_image and args.input_size:
        raise UsageError("give --sample-image or --input-size, not both")
    from d2ext.engine import Predictor, load_cfg

    cfg = load_cfg(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])
    cfg.freeze()
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: exporting random weights")
    predictor = Predictor(cfg)
    model = predictor.model.eval()
    folded = 0 if args.no_fold_bn else fold_batch_norms(model)
    logger.info("Folded %d batch norms into convolutions", folded)
    task = args.task or default_task(cfg)
    image = sample_image(cfg, args.sample_image, args.input_size, predictor.augmentations)
    meta = export_model(
        model, image, args.output, fmt=args.format, method=args.export_method, task=task,
        opset=args.opset,
        extra_metadata={
            "config_file": args.config_file, "opts": list(args.opts), "weights": cfg.MODEL.WEIGHTS,
            "input_format": cfg.INPUT.FORMAT, "batch_norms_folded": folded, **_classes(cfg),
        },
    )
    if not args.no_verify:
        meta["verify"] = verify(model, image, task, args.output)
        logger.info("Export vs eager on the sample: %s", meta["verify"])
        with open(os.path.join(args.output, METADATA_FILE), "w") as f:
            json.dump(meta, f, indent=2)
    return meta


if __name__ == "__main__":
    try:
        main()
    except (UsageError, UnsupportedModelError, ExportError) as e:
        get_parser().exit(2, f"export_model.py: error: {e}\n")
