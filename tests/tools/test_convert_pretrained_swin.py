"""tools/convert_pretrained.py --source swin: microsoft's Swin ImageNet checkpoints (here made
from d2ext's own D2SwinTransformer with random weights, no download, in microsoft's
layout: a final norm, a classifier head, attention-mask buffers, no output norms)
to a detectron2 pickle that MODEL.WEIGHTS loads into the Swin configs' backbone."""
import os
import pickle

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model

import d2ext_projects  # noqa: F401
from d2ext.config import get_cfg
from d2ext.engine.setup import load_cfg
from d2ext.modeling.backbone.swin import D2SwinTransformer

from .conftest import REPO_ROOT, load_tool

tool = load_tool("convert_pretrained")

MASKFORMER_SWIN_T = os.path.join(REPO_ROOT, "configs", "maskformer", "ade20k-150", "swin", "maskformer_swin_tiny_bs16_160k.yaml")
MASK2FORMER_SWIN_T = os.path.join(
    REPO_ROOT, "configs", "mask2former", "coco", "panoptic-segmentation", "swin", "maskformer2_swin_tiny_bs16_50ep.yaml"
)
MASKFORMER_SWIN_S = os.path.join(REPO_ROOT, "configs", "maskformer", "ade20k-150", "swin", "maskformer_swin_small_bs16_160k.yaml")
SMALL = {"EMBED_DIM": 16, "DEPTHS": [2, 2, 2, 2], "NUM_HEADS": [1, 2, 4, 4]}


def _swin(settings: dict, seed: int = 0) -> D2SwinTransformer:
    cfg = get_cfg()
    for key, value in settings.items():
        cfg.MODEL.SWIN[key] = value
    torch.manual_seed(seed)
    model = D2SwinTransformer(cfg, ShapeSpec(channels=3))
    with torch.no_grad():  # non-trivial norms and biases: a swapped name would show
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _microsoft_checkpoint(model: D2SwinTransformer, path: str, ape_tokens: bool = False) -> dict:
    """``model``'s weights as microsoft's classification checkpoint holds them."""
    state = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("norm")}
    channels = model.num_features[-1]
    state.update({"norm.weight": torch.rand(channels), "norm.bias": torch.rand(channels),
                  "head.weight": torch.rand(1000, channels), "head.bias": torch.rand(1000),
                  "layers.0.blocks.1.attn_mask": torch.zeros(64, 49, 49)})
    if ape_tokens:  # classification Swin: (1, L, C)
        state["absolute_pos_embed"] = state["absolute_pos_embed"].flatten(2).transpose(1, 2).contiguous()
    torch.save({"model": state, "optimizer": {}, "epoch": 300}, path)
    return state


def _run(capsys, *argv):
    rc = tool.main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_converted_swin_loads_into_a_swin_config_through_model_weights(tmp_path, capsys):
    model = _swin(SMALL)
    pth, pkl = str(tmp_path / "swin_small_test.pth"), str(tmp_path / "swin.pkl")
    _microsoft_checkpoint(model, pth)
    rc, out, err = _run(capsys, "--source", "swin", "--input", pth, "--output", pkl)
    assert rc == 0, err
    assert '    NAME: "D2SwinTransformer"' in out and "EMBED_DIM: 16" in out and "DEPTHS: [2, 2, 2, 2]" in out
    assert "NUM_HEADS: [1, 2, 4, 4]" in out and "WINDOW_SIZE: 7" in out and 'FORMAT: "RGB"' in out
    assert "dropped 5" in out

    data = pickle.load(open(pkl, "rb"))
    assert data["__author__"] == "Swin-Transformer" and data["matching_heuristics"] is True
    arrays = data["model"]
    assert not any(k.startswith(("head.", "norm.")) or k.endswith("attn_mask") for k in arrays)
    assert set(arrays) == set(model.state_dict())
    for i in range(4):  # LayerNorm's init, as the official recipe starts them
        assert (arrays[f"norm{i}.weight"] == 1).all() and (arrays[f"norm{i}.bias"] == 0).all()

    opts = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", pkl]
    for key, value in SMALL.items():
        opts += [f"MODEL.SWIN.{key}", str(value)]
    cfg = load_cfg(MASKFORMER_SWIN_T, opts)
    d2 = build_model(cfg)
    checkpointer = DetectionCheckpointer(d2)
    incompatible = checkpointer._load_model(checkpointer._load_file(cfg.MODEL.WEIGHTS))
    assert not [k for k in incompatible.missing_keys if k.startswith("backbone.")]
    assert incompatible.unexpected_keys == []
    loaded = {k[len("backbone."):]: v for k, v in d2.state_dict().items() if k.startswith("backbone.")}
    assert set(loaded) == set(arrays)
    assert all(torch.equal(loaded[k], torch.as_tensor(a)) for k, a in arrays.items())
    reference = model.state_dict()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference if not k.startswith("norm"))


def test_full_size_swin_t_checks_the_official_configs_and_names_a_swin_s_one(tmp_path, capsys):
    model = _swin({})
    pth, pkl = str(tmp_path / "swin_tiny_patch4_window7_224.pth"), str(tmp_path / "swin_t.pkl")
    _microsoft_checkpoint(model, pth)
    rc, out, err = _run(capsys, "--source", "swin", "--input", pth, "--output", pkl, "--arch", "swin_tiny",
                        "--check-config", MASKFORMER_SWIN_T, MASK2FORMER_SWIN_T)
    assert rc == 0, err
    assert f"{MASKFORMER_SWIN_T}: OK" in out and f"{MASK2FORMER_SWIN_T}: OK" in out and "FAILED" not in out
    assert "| backbone keys            | 189 |" in out and "| loaded with equal values | 189 |" in out

    rc, out, err = _run(capsys, "--source", "swin", "--input", pth, "--output", pkl, "--check-config", MASKFORMER_SWIN_S)
    assert rc == 1
    assert "MODEL.SWIN.DEPTHS is [2, 2, 18, 2]; the weights have [2, 2, 6, 2]" in err
    assert "error: ValueError: Cannot match one checkpoint key to multiple keys" in err  # detectron2 refuses it


def test_absolute_position_embedding_and_no_qkv_bias(tmp_path, capsys):
    settings = {**SMALL, "APE": True, "PRETRAIN_IMG_SIZE": 64, "QKV_BIAS": False, "PATCH_NORM": False}
    model = _swin(settings)
    pth, pkl = str(tmp_path / "ape.pth"), str(tmp_path / "ape.pkl")
    _microsoft_checkpoint(model, pth, ape_tokens=True)
    rc, out, err = _run(capsys, "--source", "swin", "--input", pth, "--output", pkl)
    assert rc == 0, err
    assert "APE: True" in out and "PRETRAIN_IMG_SIZE: 64" in out and "QKV_BIAS: False" in out and "PATCH_NORM: False" in out
    arrays = pickle.load(open(pkl, "rb"))["model"]
    assert arrays["absolute_pos_embed"].shape == (1, 16, 16, 16)
    assert torch.equal(torch.as_tensor(arrays["absolute_pos_embed"]), model.absolute_pos_embed.detach())
    assert set(arrays) == set(model.state_dict())


def test_foreign_incomplete_and_wrong_arch_inputs_are_refused(tmp_path, capsys):
    model = _swin(SMALL)
    good = _microsoft_checkpoint(model, str(tmp_path / "good.pth"))
    out_pkl = str(tmp_path / "o.pkl")

    extra = dict(good, **{"layers.0.blocks.0.attn.cpb_mlp.0.weight": torch.zeros(2, 2)})  # a Swin V2 key
    torch.save({"model": extra}, str(tmp_path / "extra.pth"))
    rc, _, err = _run(capsys, "--source", "swin", "--input", str(tmp_path / "extra.pth"), "--output", out_pkl)
    assert rc == 2 and "layers.0.blocks.0.attn.cpb_mlp.0.weight" in err

    incomplete = {k: v for k, v in good.items() if k != "layers.1.blocks.1.mlp.fc2.bias"}
    torch.save({"model": incomplete}, str(tmp_path / "incomplete.pth"))
    rc, _, err = _run(capsys, "--source", "swin", "--input", str(tmp_path / "incomplete.pth"), "--output", out_pkl)
    assert rc == 2 and "missing layers.1.blocks.1.mlp.fc2.bias" in err

    rc, _, err = _run(capsys, "--source", "swin", "--input", str(tmp_path / "good.pth"), "--output", out_pkl,
                      "--arch", "swin_tiny")
    assert rc == 2 and "--arch swin_tiny" in err and "(16, (2, 2, 2, 2))" in err
    assert not os.path.exists(out_pkl)

    resnet = torch.nn.Conv2d(3, 4, 1).state_dict()
    torch.save(resnet, str(tmp_path / "conv.pth"))
    rc, _, err = _run(capsys, "--source", "swin", "--input", str(tmp_path / "conv.pth"), "--output", out_pkl)
    assert rc == 2 and "not part of a microsoft Swin Transformer" in err
