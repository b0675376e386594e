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
    assert record["num_images"] == 2 and len(record["results"]) == 1
    (r,) = record["results"]
    assert r["mode"] == mode and r["k"] == 4 and r["num_images"] == 2
    assert len(r["per_image"]) == 2 and 0.0 <= r["miou"] <= 1.0
    label = "SLIC alone" if mode == "slic" else "random init"
    assert f"{label}, k=4, toy_panoptic_val: mIoU" in capsys.readouterr().out


def test_several_checkpoints_and_k_on_the_same_images(tiny_toy, tmp_path):
    """A saved R2O checkpoint and random init, k = 2 and 4: four results; a checkpoint's
    iteration is recorded, and the same weights and k give the same score as alone."""
    import d2ext_projects  # noqa: F401
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from d2ext.engine.setup import load_cfg

    model = build_model(load_cfg(R2O_TOY, SMALL))
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model_0000009", iteration=9)
    ckpt = str(tmp_path / "model_0000009.pth")
    out = tmp_path / "oc.json"
    common = ["--config-file", R2O_TOY, "--num-images", "2", "--output", str(out)]
    assert tool.main([*common, "--weights", ckpt, "", "--k", "2", "4", "--", *SMALL]) == 0
    results = json.loads(out.read_text())["results"]
    assert [(r["mode"], r["k"], r["iteration"]) for r in results] == [
        ("model", 2, 9), ("model", 4, 9), ("random_init", 2, None), ("random_init", 4, None)
    ]
    assert tool.main([*common, "--weights", ckpt, "--k", "4", "--", *SMALL]) == 0
    assert json.loads(out.read_text())["results"][0]["miou"] == pytest.approx(results[1]["miou"])


def test_a_config_without_predict_masks_is_refused(tiny_toy):
    semantic = os.path.join(REPO_ROOT, "configs", "baselines", "toy", "semantic_fpn_R18_toy.yaml")
    with pytest.raises(SystemExit, match="has no predict_masks"):
        tool.main(["--config-file", semantic, "--num-images", "1"])
