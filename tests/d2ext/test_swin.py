"""d2ext.modeling.backbone.swin: the official MaskFormer Swin backbone's config keys,
parameter names and outputs (a committed fixture made by the official code:
tests/fixtures/make_swin_official.py), and checkpoint loading in both official layouts."""
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg as detectron2_get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone

from d2ext.config import add_d2ext_config, get_cfg
from d2ext.modeling.backbone.swin import D2SwinTransformer, DropPath, add_swin_config

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "swin_official.pt")

# The official defaults (MaskFormer's add_mask_former_config; USE_CHECKPOINT is Mask2Former's).
OFFICIAL_DEFAULTS = {
    "PRETRAIN_IMG_SIZE": 224, "PATCH_SIZE": 4, "EMBED_DIM": 96, "DEPTHS": [2, 2, 6, 2],
    "NUM_HEADS": [3, 6, 12, 24], "WINDOW_SIZE": 7, "MLP_RATIO": 4.0, "QKV_BIAS": True, "QK_SCALE": None,
    "DROP_RATE": 0.0, "ATTN_DROP_RATE": 0.0, "DROP_PATH_RATE": 0.3, "APE": False, "PATCH_NORM": True,
    "OUT_FEATURES": ["res2", "res3", "res4", "res5"], "USE_CHECKPOINT": False,
}


@pytest.fixture(scope="module")
def official():
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


def _backbone(settings: dict) -> D2SwinTransformer:
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    for key, value in settings.items():
        cfg.MODEL.SWIN[key] = value
    return build_backbone(cfg)


def _official_state(entry: dict) -> dict:
    """The stored state dict as the official model holds it (float32, int64 index buffers)."""
    return {k: v.float() if v.dtype == torch.float16 else v.long() for k, v in entry["state_dict"].items()}


def test_registered_with_the_official_keys_and_defaults():
    assert BACKBONE_REGISTRY.get("D2SwinTransformer") is D2SwinTransformer
    assert dict(get_cfg().MODEL.SWIN) == OFFICIAL_DEFAULTS


def test_add_d2ext_config_keeps_an_existing_swin_node_and_adds_only_it():
    cfg = detectron2_get_cfg()
    add_swin_config(cfg)
    cfg.MODEL.SWIN.EMBED_DIM = 128
    add_d2ext_config(cfg)
    assert cfg.MODEL.SWIN.EMBED_DIM == 128
    plain, with_swin = detectron2_get_cfg(), detectron2_get_cfg()
    add_swin_config(with_swin)
    assert set(with_swin.MODEL) - set(plain.MODEL) == {"SWIN"}
    assert with_swin.MODEL.RESNETS == plain.MODEL.RESNETS and with_swin.SOLVER == plain.SOLVER


def test_swin_tiny_has_the_official_keys_and_shapes(official):
    backbone = _backbone(official["swin_tiny_settings"])
    keys = {k: list(v.shape) for k, v in backbone.state_dict().items()}
    assert keys == official["swin_tiny_keys"]
    assert len(keys) == 189
    assert sum(p.numel() for p in backbone.parameters()) / 1e6 == pytest.approx(27.5, abs=0.1)


@pytest.mark.parametrize("name", ["tiny", "tiny_ape"])
def test_official_state_dict_loads_strict_and_gives_the_official_outputs(official, name):
    entry = official["models"][name]
    backbone = _backbone(entry["swin_settings"]).eval()
    incompatible = backbone.load_state_dict(_official_state(entry), strict=True)
    assert incompatible.missing_keys == [] and incompatible.unexpected_keys == []
    assert {k: [s.channels, s.stride] for k, s in backbone.output_shape().items()} == entry["output_shape"]
    assert backbone.size_divisibility == 32
    with torch.no_grad():
        outputs = backbone(entry["input"].float())
    assert sorted(outputs) == sorted(entry["outputs"])
    for key, want in entry["outputs"].items():
        assert outputs[key].shape == want.shape
        torch.testing.assert_close(outputs[key], want, atol=1e-4, rtol=0)
        assert want.abs().max() > 0.5  # not a degenerate reference


def test_published_maskformer_pkl_layout_loads_with_no_missing_or_unexpected_keys(official, tmp_path):
    """The published MaskFormer / Mask2Former .pkl hold the backbone as ``backbone.<official name>``."""
    entry = official["models"]["tiny"]
    model = torch.nn.Module()
    model.backbone = _backbone(entry["swin_settings"])
    arrays = {f"backbone.{k}": v.numpy() for k, v in _official_state(entry).items()}
    path = str(tmp_path / "model_final.pkl")
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "MaskFormer"}, f)
    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(path))
    assert incompatible.missing_keys == [] and incompatible.unexpected_keys == []
    state = model.state_dict()
    assert all(np.array_equal(state[k].numpy(), a) for k, a in arrays.items())


def test_officially_converted_imagenet_pkl_fills_every_key_it_has(official, tmp_path):
    """Mask2Former's convert-pretrained-swin-model-to-d2.py pickles microsoft's ``model``
    dict as is (tensors, heuristic matching): every backbone key but the detection
    output norms norm0..norm3 (absent from ImageNet models, default init in the
    official recipe too) is filled; its head / final norm / attn_mask are not used."""
    entry = official["models"]["tiny"]
    model = torch.nn.Module()
    model.backbone = _backbone(entry["swin_settings"])
    state = {k: v for k, v in _official_state(entry).items() if not k.startswith("norm")}
    state.update({"norm.weight": torch.ones(128), "norm.bias": torch.zeros(128), "head.weight": torch.zeros(10, 128),
                  "head.bias": torch.zeros(10), "layers.0.blocks.1.attn_mask": torch.zeros(64, 49, 49)})
    path = str(tmp_path / "swin_official_converted.pkl")
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "third_party", "matching_heuristics": True}, f)
    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(path))
    assert sorted(incompatible.missing_keys) == sorted(f"backbone.norm{i}.{p}" for i in range(4) for p in ("weight", "bias"))
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)


def test_a_batch_gives_each_image_its_own_outputs(official):
    entry = official["models"]["tiny"]
    backbone = _backbone(entry["swin_settings"]).eval()
    backbone.load_state_dict(_official_state(entry))
    x = torch.rand(2, 3, 70, 90, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        both = backbone(x)
        one = [backbone(x[i:i + 1]) for i in range(2)]
    for key, value in both.items():
        assert value.shape == (2, backbone.output_shape()[key].channels, *one[0][key].shape[2:])
        for i in range(2):
            torch.testing.assert_close(value[i:i + 1], one[i][key], atol=1e-5, rtol=0)


def test_out_features_select_the_outputs_and_bad_names_fail():
    backbone = _backbone({"EMBED_DIM": 8, "NUM_HEADS": [1, 1, 1, 1], "DEPTHS": [2, 2, 2, 2],
                          "OUT_FEATURES": ["res4", "res2"]})
    assert list(backbone.output_shape()) == ["res2", "res4"]
    assert {k: (s.channels, s.stride) for k, s in backbone.output_shape().items()} == {"res2": (8, 4), "res4": (32, 16)}
    assert "norm3.weight" in backbone.state_dict()  # every stage keeps its official output norm
    out = backbone(torch.rand(1, 3, 64, 64))
    assert sorted(out) == ["res2", "res4"] and out["res4"].shape == (1, 32, 4, 4)
    with pytest.raises(ValueError, match="res6"):
        _backbone({"OUT_FEATURES": ["res6"]})


def test_gradient_checkpointing_and_drop_path_in_training():
    torch.manual_seed(0)
    settings = {"EMBED_DIM": 8, "NUM_HEADS": [1, 1, 2, 2], "DEPTHS": [2, 2, 2, 2], "DROP_PATH_RATE": 0.0}
    plain = _backbone(settings).train()
    checkpointed = _backbone({**settings, "USE_CHECKPOINT": True}).train()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 48, 40)
    grads = []
    for model in (plain, checkpointed):
        sum(v.square().mean() for v in model(x).values()).backward()
        grads.append(model.patch_embed.proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])

    drop = DropPath(0.5).train()
    y = drop(torch.ones(1000, 3, 2))
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}  # whole samples dropped, the kept ones scaled
    assert (per_sample == per_sample[:, :1]).all() and 300 < (per_sample[:, 0] == 0).sum() < 700
    assert torch.equal(drop.eval()(torch.ones(4, 3)), torch.ones(4, 3))


def test_input_channels_follow_the_input_shape():
    cfg = get_cfg()
    cfg.MODEL.SWIN.EMBED_DIM = 8
    cfg.MODEL.SWIN.NUM_HEADS = [1, 1, 1, 1]
    backbone = D2SwinTransformer(cfg, ShapeSpec(channels=1))
    assert backbone.patch_embed.proj.weight.shape == (8, 1, 4, 4)


def test_runs_under_autocast():
    """Mask2Former's configs train with AMP. The attention bias takes the projections' dtype
    (on CUDA, float16 ones next to float32 LayerNorm outputs; only CPU bfloat16 runs here)."""
    backbone = _backbone({"EMBED_DIM": 8, "NUM_HEADS": [1, 1, 2, 2], "DEPTHS": [2, 2, 2, 2]})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = backbone(torch.rand(1, 3, 40, 52))
    assert out["res5"].shape == (1, 64, 2, 2) and all(torch.isfinite(v.float()).all() for v in out.values())
    sum(v.float().mean() for v in out.values()).backward()
    assert torch.isfinite(backbone.patch_embed.proj.weight.grad).all()
