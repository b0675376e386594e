"""Run by test_distributed.py: trains a few iterations data-parallel, then every rank
saves its parameters and the evaluation result it received.

    python dist_worker.py OUTPUT_DIR --num-gpus 2        (spawned by d2ext's launch)
    torchrun --nproc_per_node 2 dist_worker.py OUTPUT_DIR (joins torchrun's job)
"""
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import d2ext  # noqa: E402,F401
import torch  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from d2ext.engine import Trainer, launch, load_cfg  # noqa: E402
from toy_train_config import CONFIG, tiny_opts  # noqa: E402


def main(output_dir: str) -> None:
    cfg = load_cfg(CONFIG, tiny_opts(output_dir, max_iter=3))
    cfg.freeze()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    rank = comm.get_rank()
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()},
               os.path.join(output_dir, f"params_rank{rank}.pth"))
    results = Trainer.test(cfg, model)
    with open(os.path.join(output_dir, f"eval_rank{rank}.json"), "w") as f:
        json.dump({"world_size": comm.get_world_size(), "results": results}, f)


if __name__ == "__main__":
    out = sys.argv[1]
    num = int(sys.argv[sys.argv.index("--num-gpus") + 1]) if "--num-gpus" in sys.argv else 1
    launch(main, num, args=(out,))
