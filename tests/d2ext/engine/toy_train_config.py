"""A very small toy semantic-segmentation training config for engine tests (seconds on CPU)."""
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

CONFIG = os.path.join(REPO_ROOT, "configs", "baselines", "toy", "semantic_fpn_R18_toy.yaml")


def tiny_opts(output_dir: str, max_iter: int, checkpoint_period: int = 1000) -> list:
    return [
        "OUTPUT_DIR", output_dir,
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD", str(checkpoint_period),
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.WARMUP_ITERS", "2",
        "SOLVER.STEPS", "()",
        "INPUT.MIN_SIZE_TRAIN", "(96,)",
        "INPUT.MIN_SIZE_TEST", "96",
        "DATALOADER.NUM_WORKERS", "0",
        "MODEL.FPN.OUT_CHANNELS", "32",
        "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    ]
