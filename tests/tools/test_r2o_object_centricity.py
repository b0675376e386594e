"""tools/r2o_object_centricity.py on 2 images of the tiny toy set: random init and SLIC alone."""
import json
import os

import pytest

from .conftest import REPO_ROOT, load_tool

tool = load_tool("r2o_object_centricity")
tool.setup_logging()  # outside any capsys: detectron2's setup_logger keeps the first stdout it sees

R2O_TOY = os.path.join(REPO_ROOT, "configs", "r2o", "toy", "r2o_R18_toy.yaml")
SMALL = [
    "MODEL.R2O.VIEWS.WHOLE_SIZE", "64",
    "MODEL.R2O.VIEWS.CROP_SIZE", "32",
    "MODEL.R2O.VIEWS.SLIC_SEGMENTS", "32",
    "MODEL.R2O.PROJECTOR_HIDDEN", "32",
    "MODEL.R2O.PREDICTOR_HIDDEN", "32",
    "MODEL.R2O.PROJECTOR_DIM", "16",
]


@pytest.mark.parametrize("mode", ["random_init", "slic"])
def test_tool_writes_json(tiny_toy, tmp_path, capsys, mode):
    out = tmp_path / "oc.json"
    extra = ["--slic-only"] if mode == "slic" else ["--weights", ""]
    argv = ["--config-file", R2O_TOY, *extra, "--k", "4", "--num-images", "2", "--output", str(out), *SMALL]
    assert tool.main(argv) == 0
    record = json.loads(out.read_text())
    assert record["mode"] == mode and record["k"] == 4 and record["num_images"] == 2
    assert len(record["per_image"]) == 2 and 0.0 <= record["miou"] <= 1.0
    label = "SLIC alone" if mode == "slic" else "random init"
    assert f"{label}, k=4, toy_panoptic_val: mIoU" in capsys.readouterr().out


def test_a_config_without_predict_masks_is_refused(tiny_toy):
    semantic = os.path.join(REPO_ROOT, "configs", "baselines", "toy", "semantic_fpn_R18_toy.yaml")
    with pytest.raises(SystemExit, match="has no predict_masks"):
        tool.main(["--config-file", semantic, "--num-images", "1"])
