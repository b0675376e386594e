"""tools/benchmark_r2o.py on 4 tiny unlabelled toy images: every part of a step is timed."""
import json
import os

import pytest

from d2ext.data.datasets import toy

from .conftest import REPO_ROOT, load_tool

tool = load_tool("benchmark_r2o")

TINY = [
    "MODEL.R2O.VIEWS.WHOLE_SIZE", "64",
    "MODEL.R2O.VIEWS.CROP_SIZE", "32",
    "MODEL.R2O.VIEWS.SLIC_SEGMENTS", "24",
    "MODEL.R2O.PROJECTOR_HIDDEN", "32",
    "MODEL.R2O.PROJECTOR_DIM", "16",
    "MODEL.R2O.PREDICTOR_HIDDEN", "32",
    "SOLVER.IMS_PER_BATCH", "2",
    "D2EXT.TOY_UNLABELED_NUM_IMAGES", "4",
]


@pytest.mark.parametrize("mode", ["r2o", "byol"])
def test_every_part_is_timed(mode, isolated_catalogs, tmp_path, capsys):
    toy.register_toy_unlabeled(str(tmp_path / "data"), 4)
    config = os.path.join(REPO_ROOT, "configs", "r2o", "toy", f"{mode}_R18_toy.yaml")
    out = tmp_path / "r2o.json"
    result = tool.main(["--config-file", config, "--k", "3", "--warmup", "0", "--iters", "2",
                        "--output", str(out), *TINY])
    parts = result["parts_ms_median"]
    model_parts = ["online forward", "target forward, views", "backward", "optimizer step", "EMA of the target"]
    if mode == "r2o":
        model_parts += ["target forward, whole images", "clustering (pool, K-means, paint)"]
        assert result["k"] == 3
    else:  # no mask prediction in BYOL mode
        assert "clustering (pool, K-means, paint)" not in parts and result["k"] == 1
    assert all(parts[p] > 0 for p in model_parts + [tool.DATA, tool.SLIC])
    assert parts[tool.SLIC] < parts[tool.DATA]  # SLIC is a part of the data's time
    model_ms = sum(v for k, v in parts.items() if k not in (tool.DATA, tool.SLIC))
    assert result["model_step_ms"] == pytest.approx(model_ms)
    assert result["images_per_s_model_step"] == pytest.approx(2000 / model_ms)
    assert json.loads(out.read_text())["results"]["parts_ms_median"] == pytest.approx(parts)
    assert "| clustering" in capsys.readouterr().out or mode == "byol"


@pytest.mark.parametrize("mode", ["r2o", "byol"])
def test_flops_estimate_adds_up(mode, isolated_catalogs, tmp_path):
    toy.register_toy_unlabeled(str(tmp_path / "data"), 4)
    config = os.path.join(REPO_ROOT, "configs", "r2o", "toy", f"{mode}_R18_toy.yaml")
    # The whole image at the views' size through res5: the target's count must equal the online's.
    same_size = ["MODEL.R2O.VIEWS.WHOLE_SIZE", "32", "MODEL.R2O.MASK_FEATURE", "res5"]
    result = tool.main(["--config-file", config, "--k", "3", "--warmup", "0", "--iters", "1", "--flops",
                        *TINY, *same_size])
    g = result["gflops"]
    assert g["online_per_view"] > 0
    whole = g["target_whole_per_image"]
    assert whole == (pytest.approx(g["online_per_view"]) if mode == "r2o" else 0.0)
    assert g["step_estimate"] == pytest.approx(2 * (8 * g["online_per_view"] + whole))  # 2 images per step
