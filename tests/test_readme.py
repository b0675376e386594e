"""The README's dataset-registration examples run as written (Python and yaml)."""
import os
import re

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2ext.data import ensure_toy_dataset, register_from_config
from d2ext.engine import load_cfg
from tests.conftest import REPO_ROOT

NAMES = ("my_instances_val", "my_panoptic_val", "my_sem_seg_val")


def _block(language: str, containing: str) -> str:
    text = open(os.path.join(REPO_ROOT, "README.md")).read()
    blocks = re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)
    matching = [b for b in blocks if containing in b]
    assert matching, f"no ```{language} block with {containing!r} in README.md"
    return matching[0]


@pytest.fixture
def in_repo_root(monkeypatch):
    ensure_toy_dataset(os.path.join(REPO_ROOT, "datasets"))
    monkeypatch.chdir(REPO_ROOT)
    yield
    for name in NAMES:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def _check_registered():
    assert len(DatasetCatalog.get("my_instances_val")) == 50
    panoptic = DatasetCatalog.get("my_panoptic_val")
    assert all("sem_seg_file_name" in d and "segments_info" in d for d in panoptic)
    assert MetadataCatalog.get("my_sem_seg_val").stuff_classes == ["disc", "block", "bar", "grass", "water"]


def test_python_registration_example(in_repo_root):
    exec(_block("python", "register_coco_instances"), {})
    _check_registered()


def test_yaml_registration_example(in_repo_root, tmp_path):
    config = tmp_path / "registration.yaml"
    config.write_text(_block("yaml", "D2EXT:"))
    cfg = load_cfg(str(config))
    assert cfg.DATASETS.TEST == ("my_panoptic_val",)
    _check_registered()
    register_from_config(cfg)  # again, as every process does: a no-op
