"""Two gloo processes each evaluate half of the Cityscapes fixture's panoptic val
set; every rank saves what it received (used by test_cityscapes_distributed.py).

    python dist_eval_worker.py FIXTURE_ROOT OUTPUT_DIR
"""
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, REPO_ROOT)

import d2ext  # noqa: E402,F401
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from d2ext.config import get_cfg  # noqa: E402
from d2ext.data.datasets.cityscapes import register_cityscapes_panoptic  # noqa: E402
from d2ext.evaluation import build_evaluator  # noqa: E402

NAME = "_test_dist_cityscapes_panoptic_val"


def register(root: str) -> None:
    gt_fine = os.path.join(root, "cityscapes", "gtFine")
    register_cityscapes_panoptic(
        NAME,
        os.path.join(root, "cityscapes", "leftImg8bit", "val"),
        os.path.join(gt_fine, "val"),
        os.path.join(gt_fine, "cityscapes_panoptic_val"),
        os.path.join(gt_fine, "cityscapes_panoptic_val.json"),
    )


def perturbed_outputs(dicts):
    """Ground truth everywhere except image 1 (rank 1's share): there one thing
    is dropped from every output, so only a gathered evaluation sees the miss."""
    from tests.d2ext.evaluation import oracle

    outputs = {}
    for k, d in enumerate(dicts):
        ids, segments = oracle.panoptic_from_dict(d)
        instances = oracle.instances_from_panoptic(d)
        sem_seg = oracle.sem_seg_from_file(d["sem_seg_file_name"], 19)
        if k == 1:
            victim = next(s for s in segments if s["isthing"])
            mask = ids == victim["id"]
            ids = ids.clone()
            ids[mask] = 0
            segments = [s for s in segments if s is not victim]
            instances = instances[1:]
            sem_seg = sem_seg.clone()
            sem_seg[:, mask] = 0  # argmax 0: road
            sem_seg[0, mask] = 1
        outputs[d["file_name"]] = {"panoptic_seg": (ids, segments), "instances": instances, "sem_seg": sem_seg}
    return outputs


def evaluate() -> dict:
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "PanopticFPN"
    dicts = DatasetCatalog.get(NAME)
    outputs = perturbed_outputs(dicts)
    evaluator = build_evaluator(cfg, NAME)
    evaluator.reset()
    for d in dicts[comm.get_rank():: comm.get_world_size()]:
        evaluator.process([d], [outputs[d["file_name"]]])
    return evaluator.evaluate()


def main(rank: int, root: str, out: str, url: str) -> None:
    # A bare gloo group (not d2ext.engine.launch): this tests the evaluators' gather only.
    dist.init_process_group("gloo", init_method=url, world_size=2, rank=rank)
    register(root)
    results = evaluate()
    with open(os.path.join(out, f"eval_rank{comm.get_rank()}.json"), "w") as f:
        json.dump({"world_size": comm.get_world_size(), "results": results}, f)
    dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_processes(root: str, out: str) -> None:
    url = f"tcp://127.0.0.1:{_free_port()}"
    mp.start_processes(main, nprocs=2, args=(root, out, url), start_method="spawn")


if __name__ == "__main__":
    run_two_processes(sys.argv[1], sys.argv[2])
