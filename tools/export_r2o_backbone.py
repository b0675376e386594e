#!/usr/bin/env python
"""Export an R2O encoder as a pretrained backbone that MODEL.WEIGHTS loads into any detectron2 model.

    python tools/export_r2o_backbone.py --checkpoint output/r2o/RUN/model_final.pth \\
        --output r2o_R18.pkl [--encoder online|target] [--check-config CFG.yaml ...]

The output is a detectron2 model-zoo pickle of the encoder's ResNet under plain
ResNet names ("stem.conv1.weight", "res2.0.conv1.norm.running_mean", ...), which
DetectionCheckpointer maps by name suffix onto backbone.bottom_up.* (FPN models),
backbone.* (plain ResNet backbones, e.g. MaskFormer) or backbone.resnet.* (ICNet).
Use it as ``MODEL.WEIGHTS r2o_R18.pkl`` of a config with the same ResNet depth
and widths (MODEL.RESNETS.DEPTH / RES2_OUT_CHANNELS / STEM_OUT_CHANNELS).

Each --check-config is built on the CPU, the export is loaded into it with
DetectionCheckpointer and checked: every key of the model's ResNet filled, every
exported key used, no shape mismatch (which detectron2 would only log and
skip), loaded values equal to the exported arrays. One table per config on
stdout; the exit status is non-zero on any failure, naming the config and keys.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

import d2ext_projects  # noqa: F401  (d2ext first, then every method's registration)

from detectron2.modeling import build_model  # noqa: E402

from d2ext.engine.setup import load_cfg  # noqa: E402
from d2ext.tool_logging import quiet_checkpoint_loading, setup_tool_logging  # noqa: E402
from d2ext_projects.r2o.export import (  # noqa: E402
    ENCODER_PREFIXES,
    ExportCheck,
    ExportError,
    check_export,
    export_backbone,
    format_check,
)

logger = logging.getLogger("d2ext.export_r2o_backbone")


def check_config(config_file: str, export_path: str) -> ExportCheck:
    """Builds ``config_file``'s model on the CPU (random init) and checks the export loads into it."""
    if not os.path.isfile(config_file):
        raise ExportError(f"--check-config {config_file}: no such config file")
    cfg = load_cfg(config_file, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    model = build_model(cfg)
    return check_export(model, export_path, config=config_file)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="an R2O model_final.pth (or any model_XXXX.pth)")
    parser.add_argument("--output", required=True, help="the .pkl to write (the extension tells detectron2 its format)")
    parser.add_argument("--encoder", choices=sorted(ENCODER_PREFIXES), default="online",
                        help="online: backbone.* (default); target: the momentum encoder target_backbone.*")
    parser.add_argument("--check-config", nargs="+", action="extend", default=[], metavar="CFG",
                        help="config files to load the export into and verify")
    parser.add_argument("--verbose", action="store_true",
                        help="keep detectron2's table of matched weights and fvcore's list of "
                        "the (head) keys left random")
    args = parser.parse_args(argv)
    if not args.output.endswith(".pkl"):
        parser.error(
            f"--output {args.output}: must end with .pkl (DetectionCheckpointer picks the format by extension)"
        )
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_tool_logging()
    with quiet_checkpoint_loading(enabled=not args.verbose):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        arrays = export_backbone(args.checkpoint, args.output, args.encoder)
        print(f"exported {len(arrays)} arrays of the {args.encoder} encoder of {args.checkpoint} to {args.output}")
        failures = []
        for config_file in args.check_config:
            check = check_config(config_file, args.output)
            print(format_check(check))
            if not check.ok:
                failures.append(f"{config_file}: " + "; ".join(check.problems()))
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if failures:
        print(f"error: {args.output} does not load cleanly into:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
