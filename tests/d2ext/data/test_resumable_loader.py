"""ResumableTrainLoader: after load_state_dict the stream is the continuation of the
uninterrupted one (samples and augmentations), whatever the workers, the rank or
the aspect-ratio buckets pending at the checkpoint."""
import logging
import random

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.common import AspectRatioGroupedDataset
from PIL import Image

import d2ext  # noqa: F401  (compat first)
from d2ext.config import get_cfg
from d2ext.data.batch_planner import LANDSCAPE, PORTRAIT, Orientations
from d2ext.data.data_order import DataOrder, data_order_from_config
from d2ext.data.resumable_loader import ResumableTrainLoader

# 13 dicts, landscape and portrait mixed irregularly, so both buckets fill at different rates
SIZES = [(40, 30), (30, 40), (30, 40), (50, 20), (20, 50), (20, 50), (20, 50),
         (60, 30), (30, 30), (45, 40), (10, 90), (80, 10), (25, 35)]
DICTS = [{"file_name": f"img{i}.png", "image_id": i, "width": w, "height": h} for i, (w, h) in enumerate(SIZES)]


def random_mapper(d: dict) -> dict:
    """An 'augmentation' drawing from every global generator the real mapper may use."""
    return {**d, "aug": (random.random(), float(np.random.rand()), float(torch.rand(())))}


def make_loader(num_workers=0, grouping=True, rank=0, world_size=1, seed=7, batch_per_rank=3, order=None):
    return ResumableTrainLoader(
        DICTS,
        mapper=random_mapper,
        order=order or DataOrder(len(DICTS), seed),
        total_batch_size=batch_per_rank * world_size,
        aspect_ratio_grouping=grouping,
        num_workers=num_workers,
        rank=rank,
        world_size=world_size,
    )


def content(batches):
    return [[(d["image_id"], d["aug"]) for d in batch] for batch in batches]


def take(loader, n):
    return [next(loader) for _ in range(n)]


def run_to_pending(loader, min_batches=3):
    """Batches until both a few were yielded and some position waits in a bucket."""
    out = take(loader, min_batches)
    while not loader.state_dict()["ranks"][loader.rank]["pending"]:
        out.append(next(loader))
    return out


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("grouping", [True, False])
@pytest.mark.parametrize("rank,world_size", [(0, 1), (1, 2)])
def test_stream_after_load_is_the_uninterrupted_continuation(num_workers, grouping, rank, world_size):
    a = make_loader(num_workers, grouping, rank, world_size)
    first = run_to_pending(a) if grouping else take(a, 4)
    state = a.state_dict()
    if grouping:
        assert state["ranks"][rank]["pending"], "the checkpoint should catch samples waiting in a bucket"
    rest = take(a, 6)

    b = make_loader(num_workers, grouping, rank, world_size, seed=123)  # the checkpoint's seed wins
    it = iter(b)  # as detectron2 0.6's SimpleTrainer: iter() before resume_or_load
    b.load_state_dict(state)
    assert content(take(it, 6)) == content(rest)
    assert b.state_dict() == a.state_dict()
    assert len(first) >= 3 and all(len(batch) == 3 for batch in first + rest)


def test_a_loaded_state_replaces_a_running_stream():
    a = make_loader(num_workers=2)
    state = a.state_dict()
    first = take(a, 5)
    a.load_state_dict(state)  # workers are restarted from the loaded position
    assert content(take(a, 5)) == content(first)


def test_the_number_of_workers_does_not_change_the_stream():
    streams = [content(take(make_loader(num_workers=w), 8)) for w in (0, 1, 3)]
    assert streams[0] == streams[1] == streams[2]


def test_grouping_equals_detectron2_aspect_ratio_grouping_of_the_same_order():
    order = DataOrder(len(DICTS), 7)
    for rank, world_size in [(0, 1), (0, 2), (1, 2)]:
        ours = take(make_loader(rank=rank, world_size=world_size, order=order), 10)
        sequence = [DICTS[order[k]] for k in range(rank, 400, world_size)]
        theirs = iter(AspectRatioGroupedDataset(sequence, 3))
        assert [[d["image_id"] for d in b] for b in ours] == [[d["image_id"] for d in next(theirs)] for _ in ours]
        for batch in ours:
            assert len({d["width"] > d["height"] for d in batch}) == 1


def test_without_grouping_ranks_share_the_stream_position_by_position():
    order = DataOrder(len(DICTS), 7)
    r0, r1 = (take(make_loader(grouping=False, rank=r, world_size=2, order=order), 4) for r in (0, 1))
    for rank, batches in enumerate((r0, r1)):
        flat = [d["image_id"] for batch in batches for d in batch]
        assert flat == [order[k] for k in range(rank, 24, 2)]


def test_rank0_state_holds_the_other_ranks_positions():
    # detectron2 checkpoints on the main process only: its state must resume rank 1 too
    r0, r1 = make_loader(rank=0, world_size=2), make_loader(rank=1, world_size=2)
    take(r0, 7)
    take(r1, 7)
    assert r0.state_dict() == r1.state_dict()
    state = r0.state_dict()
    assert state["ranks"][1]["next_position"] % 2 == 1 and all(k % 2 == 1 for k in state["ranks"][1]["pending"])
    rest = take(r1, 5)
    resumed = make_loader(rank=1, world_size=2)
    resumed.load_state_dict(state)
    assert content(take(resumed, 5)) == content(rest)


def test_mapping_in_the_training_process_leaves_its_generators_alone():
    loader = make_loader(num_workers=0)
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    take(loader, 3)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_a_mapper_returning_none_gets_a_seeded_substitute():
    def picky(d):
        return None if d["image_id"] % 2 else random_mapper(d)

    streams = []
    for _ in range(2):
        loader = ResumableTrainLoader(DICTS, mapper=picky, order=DataOrder(len(DICTS), 3), total_batch_size=2,
                                      aspect_ratio_grouping=False, rank=0, world_size=1)
        streams.append(content(take(loader, 6)))
    assert streams[0] == streams[1]
    assert all(i % 2 == 0 for batch in streams[0] for i, _ in batch)


def test_another_world_size_continues_after_the_furthest_position(caplog):
    a = make_loader()
    take(a, 4)
    state = a.state_dict()
    b = make_loader(rank=1, world_size=2)
    with caplog.at_level(logging.WARNING, logger="d2ext.data.resumable_loader"):
        b.load_state_dict(state)
    assert "not as the saved run would have" in caplog.text
    furthest = state["ranks"][0]["next_position"]
    assert b.state_dict()["ranks"][1] == {"next_position": furthest + (1 - furthest) % 2, "pending": []}


def test_data_order_epochs_are_seeded_permutations():
    order = DataOrder(5, 11)
    epochs = [[order[k] for k in range(5 * e, 5 * e + 5)] for e in range(4)]
    assert all(sorted(e) == list(range(5)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1
    assert [DataOrder(5, 11)[k] for k in range(20)] == [i for e in epochs for i in e]
    assert [DataOrder(5, 12)[k] for k in range(20)] != [i for e in epochs for i in e]
    # any position can be read first: no replay of what came before
    assert DataOrder(5, 11)[17] == epochs[3][2]


def test_repeat_factor_epochs_round_each_factor_up_or_down():
    factors = torch.tensor([1.0, 2.0, 1.5, 3.25])
    order = DataOrder(4, 5, repeat_factors=factors)
    counts = []
    for e in range(200):
        indices = order.epoch_indices(e)
        c = np.bincount(indices, minlength=4)
        assert np.all(c >= np.floor(factors.numpy())) and np.all(c <= np.ceil(factors.numpy()))
        counts.append(c)
    assert np.allclose(np.mean(counts, axis=0), factors.numpy(), atol=0.1)
    # epochs of different lengths are laid end to end
    flat = [i for e in range(10) for i in order.epoch_indices(e)]
    fresh = DataOrder(4, 5, repeat_factors=factors)
    assert [fresh[k] for k in range(len(flat) - 1, -1, -1)] == flat[::-1]


def test_random_subset_is_fixed_and_permuted_per_epoch():
    order = DataOrder(10, 2, subset_size=4)
    epochs = [order.epoch_indices(e) for e in range(6)]
    assert len({frozenset(e) for e in epochs}) == 1 and len(epochs[0]) == 4
    assert len({tuple(e) for e in epochs}) > 1


def _cfg(**dataloader):
    cfg = get_cfg()
    for key, value in dataloader.items():
        cfg.DATALOADER[key] = value
    return cfg


def test_samplers_from_config():
    dicts = [{"annotations": [{"category_id": c}]} for c in [0, 0, 0, 0, 1]]
    assert data_order_from_config(_cfg(), dicts, 0).kind == "TrainingSampler"
    order = data_order_from_config(_cfg(SAMPLER_TRAIN="RepeatFactorTrainingSampler", REPEAT_THRESHOLD=0.8), dicts, 0)
    assert order.kind == "RepeatFactorTrainingSampler"
    assert sum(np.bincount(order.epoch_indices(0), minlength=5)[:4]) == 4  # frequent class: once each
    with pytest.raises(ValueError, match="DATALOADER.SAMPLER_TRAIN='Nope'"):
        data_order_from_config(_cfg(SAMPLER_TRAIN="Nope"), dicts, 0)


def test_from_config_filters_empty_annotations_and_seeds(isolated_catalogs):
    dicts = [{**d, "annotations": [{"iscrowd": 0, "category_id": 0, "bbox": [0, 0, 1, 1], "bbox_mode": 1}]}
             for d in DICTS[:5]] + [{**d, "annotations": []} for d in DICTS[5:]]
    DatasetCatalog.register("resumable_loader_test", lambda: dicts)
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("resumable_loader_test",)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SEED = 5
    loader = ResumableTrainLoader(cfg, mapper=random_mapper)
    assert loader.state_dict()["dataset_size"] == 5 and loader.seed == 5
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    assert ResumableTrainLoader(cfg, mapper=random_mapper).state_dict()["dataset_size"] == len(DICTS)
    # SEED < 0: a random seed, saved, and the resumed loader takes it
    cfg.SEED = -1
    a, b = ResumableTrainLoader(cfg, mapper=random_mapper), ResumableTrainLoader(cfg, mapper=random_mapper)
    assert a.seed != b.seed
    take(a, 2)
    b.load_state_dict(a.state_dict())
    assert b.seed == a.seed and content(take(b, 3)) == content(take(a, 3))
    cfg.SOLVER.IMS_PER_BATCH = 3
    with pytest.raises(ValueError, match="SOLVER.IMS_PER_BATCH=3"):
        ResumableTrainLoader(cfg, mapper=random_mapper, world_size=2, rank=0)


def test_orientation_from_the_image_header_with_exif(tmp_path):
    from detectron2.data.detection_utils import read_image

    files = []
    for name, size, exif_orientation in [("wide.png", (30, 20), None), ("tall.png", (20, 30), None),
                                         ("rotated.jpg", (30, 20), 6)]:  # stored wide, shown tall
        path = str(tmp_path / name)
        image = Image.new("RGB", size)
        if exif_orientation is None:
            image.save(path)
        else:
            exif = Image.Exif()
            exif[0x0112] = exif_orientation
            image.save(path, exif=exif)
        files.append(path)
    orientations = Orientations([{"file_name": f} for f in files] + [{"file_name": "x", "width": 5, "height": 9}])
    assert [orientations(i) for i in range(4)] == [LANDSCAPE, PORTRAIT, PORTRAIT, PORTRAIT]
    h, w = read_image(files[2]).shape[:2]
    assert (w > h) is False  # what the mapper's width/height would say
