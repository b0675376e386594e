"""Run by test_resume.py: train_net.py's training, optionally killing itself with SIGKILL.

    python resume_worker.py --config-file X [--num-gpus N] [--resume] [--kill-at ITER] [KEY VALUE ...]

``--kill-at ITER``: every process sends itself SIGKILL when iteration ITER
starts (nothing of ITER is saved; prefetching DataLoader workers are running),
the way an out-of-memory killer or a preempted machine ends a run.
"""
import os
import signal
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, REPO_ROOT)

import d2ext_projects  # noqa: E402,F401  (as train_net.py)
from detectron2.engine import HookBase, default_argument_parser  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from d2ext.engine import Trainer, launch, setup_cfg  # noqa: E402


class SigkillAt(HookBase):
    def __init__(self, iteration: int):
        self.iteration = iteration

    def before_step(self):
        if self.trainer.iter == self.iteration:
            # all ranks here: rank 0 has written the checkpoint of the iterations before
            # (else the launcher could end it mid-write when another rank dies first)
            comm.synchronize()
            os.kill(os.getpid(), signal.SIGKILL)


def main(args) -> None:
    cfg = setup_cfg(args)
    trainer = Trainer(cfg)
    if args.kill_at is not None:
        trainer.register_hooks([SigkillAt(args.kill_at)])
    trainer.resume_or_load(resume=args.resume)
    trainer.train()


if __name__ == "__main__":
    parser = default_argument_parser()
    parser.add_argument("--kill-at", type=int, default=None)
    args = parser.parse_args()
    launch(main, args.num_gpus, dist_url="auto", args=(args,))
