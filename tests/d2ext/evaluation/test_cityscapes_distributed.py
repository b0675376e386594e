"""Two CPU processes (gloo): the Cityscapes evaluators gather every rank's
predictions on rank 0 and score them as one process would."""
import json
import pytest

from d2ext.data.datasets.catalog import unregister_dataset
from tests.d2ext.evaluation import dist_eval_worker as worker
from tests.fixtures.cityscapes_fixture import make_cityscapes


def test_two_processes_gather_to_the_single_process_result(tmp_path):
    root = make_cityscapes(str(tmp_path / "data"))
    out = tmp_path / "out"
    out.mkdir()
    worker.run_two_processes(root, str(out))  # raises if a rank fails
    rank0 = json.loads((out / "eval_rank0.json").read_text())
    rank1 = json.loads((out / "eval_rank1.json").read_text())
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank1["results"] == {}  # only the main process gets results

    worker.register(root)
    try:
        single = worker.evaluate()
    finally:
        unregister_dataset(worker.NAME)
    gathered = rank0["results"]
    # the miss is in rank 1's image: rank 0 sees it only through the gather
    assert gathered["segm"]["AP"] < 100.0 and gathered["sem_seg"]["IoU"] < 100.0
    for task, key in (("segm", "AP"), ("sem_seg", "IoU"), ("sem_seg", "iIoU"), ("panoptic_seg", "PQ")):
        assert gathered[task][key] == pytest.approx(single[task][key], abs=1e-9), (task, key)
