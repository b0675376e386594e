#!/usr/bin/env python
"""Train or evaluate any d2ext model: detectron2's command line, driven by the config.

    python train_net.py --config-file configs/.../x.yaml [--num-gpus N] [--resume] [KEY VALUE ...]
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS path/to/model.pth

``--eval-only`` also writes OUTPUT_DIR/eval_results.json (the weights and the
flattened results, e.g. "panoptic_seg/PQ"), which tools/summarize_runs.py reads.
``--num-gpus N`` starts N processes per machine (gloo on CPU, nccl on GPU);
``torchrun`` works as well. Nothing here is specific to a method.
"""
import json
import os

import d2ext_projects  # noqa: F401  (imports d2ext first, registers every method)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.utils import comm

from d2ext.engine import Trainer, launch, setup_cfg


def write_eval_results(cfg, results) -> str:
    """OUTPUT_DIR/eval_results.json: {"weights": MODEL.WEIGHTS, "results": {"task/metric": value}}; -> its path."""
    path = os.path.join(cfg.OUTPUT_DIR, "eval_results.json")
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"weights": cfg.MODEL.WEIGHTS, "results": flatten_results_dict(results)}, f, indent=1, default=float)
    return path


def main(args):
    cfg = setup_cfg(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
            write_eval_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
