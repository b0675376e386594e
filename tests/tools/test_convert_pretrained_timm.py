"""tools/convert_pretrained.py --source timm: randomly initialised timm ResNets and Swins (timm 1.0's
own models, no download) to detectron2 pickles that load into d2ext's backbones with every key
filled and give timm's own features."""
import os
import pickle

import pytest
import torch
import torch.nn.functional as F

timm = pytest.importorskip("timm")  # tools/requirements.txt pins it

import d2ext_projects  # noqa: F401,E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.modeling.backbone import build_resnet_backbone  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from timm.models.swin_transformer import SwinTransformer  # noqa: E402

from d2ext.config import get_cfg  # noqa: E402
from d2ext.engine.setup import load_cfg  # noqa: E402

from .conftest import REPO_ROOT, load_tool  # noqa: E402

tool = load_tool("convert_pretrained")

MASKFORMER_SWIN_T = os.path.join(REPO_ROOT, "configs", "maskformer", "ade20k-150", "swin", "maskformer_swin_tiny_bs16_160k.yaml")
SMALL = {"EMBED_DIM": 16, "DEPTHS": [2, 2, 2, 2], "NUM_HEADS": [1, 2, 4, 4]}
IMAGENET = "PIXEL_MEAN: [123.675, 116.280, 103.530]", "PIXEL_STD: [58.395, 57.120, 57.375]"


def _run(capsys, *argv):
    rc = tool.main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial norms and biases: timm's init leaves norms the identity (and zeroes each
    bottleneck's last batch-norm weight), which would hide a swapped or missing name."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            elif isinstance(m, (torch.nn.LayerNorm, torch.nn.Linear)):
                for name, p in m.named_parameters():
                    if name == "bias" or isinstance(m, torch.nn.LayerNorm):
                        p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def _timm_resnet(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return _perturbed(timm.create_model(name, pretrained=False))


def _small_timm_swin() -> SwinTransformer:
    """Swin-T's layout, narrow: 448 pixels keep every stage larger than the window (at a stage
    no larger than its window, timm stops shifting and the detection backbone does not)."""
    torch.manual_seed(0)
    return _perturbed(SwinTransformer(img_size=448, patch_size=4, window_size=7, embed_dim=16, depths=(2, 2, 2, 2),
                                      num_heads=(1, 2, 4, 4), num_classes=10))


def _d2_resnet(depth: int):
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.RESNETS.DEPTH", str(depth),
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "64" if depth < 50 else "256",
        "MODEL.RESNETS.STRIDE_IN_1X1", "False",
        "MODEL.RESNETS.OUT_FEATURES", '["res2", "res3", "res4", "res5"]',
    ])
    return build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()


@pytest.mark.parametrize("name,depth,ext", [("resnet18", 18, "safetensors"), ("resnet50", 50, "pth")])
def test_timm_resnet_gives_timms_features(tmp_path, capsys, name, depth, ext):
    model = _timm_resnet(name)
    weights, pkl = str(tmp_path / f"{name}.{ext}"), str(tmp_path / f"{name}.pkl")
    if ext == "safetensors":  # as timm's weights on the hub come
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    else:
        torch.save(model.state_dict(), weights)
    rc, out, err = _run(capsys, "--source", "timm", "--input", weights, "--output", pkl, "--arch", name)
    assert rc == 0, err
    assert f"timm ResNet-{depth}" in out and f"DEPTH: {depth}" in out and 'FORMAT: "RGB"' in out
    assert all(line in out for line in IMAGENET) and "timm's ImageNet default" in out
    assert ("STRIDE_IN_1X1: False" in out) == (depth >= 50)
    data = pickle.load(open(pkl, "rb"))
    assert data["__author__"] == "timm" and not any("fc" in k for k in data["model"])

    backbone = _d2_resnet(depth)
    checkpointer = DetectionCheckpointer(backbone)
    incompatible = checkpointer._load_model(checkpointer._load_file(pkl))
    assert incompatible.missing_keys == [] and incompatible.unexpected_keys == []
    assert set(backbone.state_dict()) == set(data["model"])

    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = backbone(x)
        want = model.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)
    for i, w in enumerate(want):
        assert got[f"res{i + 2}"].shape == w.shape
        torch.testing.assert_close(got[f"res{i + 2}"], w, atol=1e-4, rtol=0)


def test_timm_swin_loads_through_model_weights_and_gives_timms_features(tmp_path, capsys):
    model = _small_timm_swin()
    pth, pkl = str(tmp_path / "swin.pth"), str(tmp_path / "swin.pkl")
    state = model.state_dict()
    assert "layers.3.downsample.reduction.weight" in state and "layers.0.downsample.reduction.weight" not in state
    assert not any(k.endswith(("relative_position_index", "attn_mask")) for k in state)  # not persistent in timm
    torch.save(state, pth)
    rc, out, err = _run(capsys, "--source", "timm", "--input", pth, "--output", pkl)
    assert rc == 0, err
    assert "timm Swin (EMBED_DIM 16, DEPTHS [2, 2, 2, 2], window 7)" in out and "dropped 4" in out
    assert "NUM_HEADS: [1, 2, 4, 4]" in out and all(line in out for line in IMAGENET)
    arrays = pickle.load(open(pkl, "rb"))["model"]
    for i in range(3):  # timm's stage-(i+1) merging is microsoft's (the backbone's) end of stage i
        for part in ("reduction.weight", "norm.weight", "norm.bias"):
            assert torch.equal(torch.as_tensor(arrays[f"layers.{i}.downsample.{part}"]),
                               state[f"layers.{i + 1}.downsample.{part}"])
    assert "layers.3.downsample.reduction.weight" not in arrays

    opts = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", pkl]
    for key, value in SMALL.items():
        opts += [f"MODEL.SWIN.{key}", str(value)]
    d2 = build_model(load_cfg(MASKFORMER_SWIN_T, opts)).eval()
    checkpointer = DetectionCheckpointer(d2)
    incompatible = checkpointer._load_model(checkpointer._load_file(pkl))
    assert not [k for k in incompatible.missing_keys if k.startswith("backbone.")]
    assert incompatible.unexpected_keys == []
    assert {k[len("backbone."):] for k in d2.state_dict() if k.startswith("backbone.")} == set(arrays)

    x = torch.rand(1, 3, 448, 448, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = d2.backbone(x)
        h = model.patch_embed(x)  # timm runs NHWC
        for i, stage in enumerate(model.layers):
            h = stage(h)
            # the backbone's output norms, as converted (weight 1, bias 0), normalise timm's stage output
            want = F.layer_norm(h, h.shape[-1:]).permute(0, 3, 1, 2)
            assert got[f"res{i + 2}"].shape == want.shape
            torch.testing.assert_close(got[f"res{i + 2}"], want, atol=1e-4, rtol=0)

    # The same file as --source swin: microsoft's names, which timm's downsample keys are not.
    rc, _, err = _run(capsys, "--source", "swin", "--input", pth, "--output", str(tmp_path / "o.pkl"))
    assert rc == 2 and "layers.3.downsample.reduction.weight" in err and "--source timm" in err


def test_full_size_timm_swin_t_with_its_pretrained_config_checks_the_swin_t_config(tmp_path, capsys):
    torch.manual_seed(0)
    pth, pkl = str(tmp_path / "swin_t.pth"), str(tmp_path / "swin_t.pkl")
    torch.save(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).state_dict(), pth)
    rc, out, err = _run(capsys, "--source", "timm", "--input", pth, "--output", pkl,
                        "--timm-model", "swin_tiny_patch4_window7_224.ms_in1k", "--check-config", MASKFORMER_SWIN_T)
    assert rc == 0, err
    assert "mean / std of swin_tiny_patch4_window7_224.ms_in1k from timm's pretrained config" in out
    assert f"{MASKFORMER_SWIN_T}: OK" in out and "FAILED" not in out
    assert "| backbone keys            | 189 |" in out and "| loaded with equal values | 189 |" in out

    rc, _, err = _run(capsys, "--source", "timm", "--input", pth, "--output", str(tmp_path / "o.pkl"),
                      "--timm-model", "swin_base_patch4_window12_384")
    assert rc == 2 and "expects EMBED_DIM / DEPTHS (128, (2, 2, 18, 2)), the input has (96, (2, 2, 6, 2))" in err


def test_timm_model_gives_the_mean_and_std_of_those_weights(tmp_path, capsys):
    """resnet34.ra4_e3600_r224_in1k was trained with mean = std = 0.5, not the ImageNet ones."""
    pth = str(tmp_path / "resnet34.pth")
    torch.save(_timm_resnet("resnet34").state_dict(), pth)
    out_pkl = str(tmp_path / "o.pkl")
    rc, out, err = _run(capsys, "--source", "timm", "--input", pth, "--output", out_pkl,
                        "--timm-model", "resnet34.ra4_e3600_r224_in1k")
    assert rc == 0, err
    assert "PIXEL_MEAN: [127.500, 127.500, 127.500]" in out and "PIXEL_STD: [127.500, 127.500, 127.500]" in out
    rc, out, err = _run(capsys, "--source", "timm", "--input", pth, "--output", out_pkl, "--timm-model", "resnet34")
    assert rc == 0 and "resnet34.a1_in1k" in out and all(line in out for line in IMAGENET)

    os.remove(out_pkl)
    timm_run = lambda *a: _run(capsys, "--source", "timm", "--input", pth, "--output", out_pkl, *a)  # noqa: E731
    rc, _, err = timm_run("--timm-model", "resnet50.a1_in1k")
    assert rc == 2 and "--timm-model resnet50.a1_in1k" in err and "the input has (34, 1, 64)" in err
    rc, _, err = timm_run("--timm-model", "resnet34.nope")
    assert rc == 2 and "Invalid pretrained tag (nope)" in err
    rc, _, err = timm_run("--timm-model", "vit_tiny_patch16_224")
    assert rc == 2 and "vit_tiny_patch16_224 is no ResNet this tool converts" in err
    assert not os.path.exists(out_pkl)
    with pytest.raises(SystemExit):
        tool.main(["--source", "torchvision", "--input", pth, "--output", out_pkl, "--timm-model", "resnet34"])


def test_renaming_maps_timms_swin_layout_both_ways_and_keeps_microsofts():
    state = _small_timm_swin().state_dict()
    kind, renamed, input_name = tool.timm_to_reference_names(state)
    assert kind == "swin" and len(renamed) == len(state)
    assert "layers.0.downsample.norm.bias" in renamed and "head.weight" in renamed and "head.fc.weight" not in renamed
    assert {input_name(k) for k in renamed} == set(state)
    assert all(renamed[k] is state[input_name(k)] for k in renamed)

    kind, again, input_name = tool.timm_to_reference_names(renamed)  # microsoft's layout: unchanged
    assert kind == "swin" and list(again) == list(renamed)
    assert input_name("layers.0.downsample.norm.bias") == "layers.0.downsample.norm.bias"

    with pytest.raises(tool.ConversionError, match="downsample in both layers.0"):
        tool.timm_to_reference_names({**renamed, "layers.3.downsample.norm.bias": torch.zeros(1)}, source="x.pth")

    resnet = _timm_resnet("resnet18").state_dict()
    kind, same, _ = tool.timm_to_reference_names(resnet)
    assert kind == "resnet" and list(same) == list(resnet)


@pytest.mark.parametrize("keys,message", [
    (["conv1.0.weight", "conv1.1.weight", "layer1.0.conv1.weight"], "a deep-stem timm ResNet (conv1.0.weight"),
    (["conv1.weight", "layer2.0.downsample.1.weight", "layer2.0.downsample.2.weight"], "average-pool shortcuts"),
    (["stages.0.blocks.0.attn.qkv.weight", "head.fc.weight"], "neither a timm ResNet's keys"),
    (["conv1.weight", "patch_embed.proj.weight"], "both a timm ResNet's keys"),
])
def test_timm_variants_detectron2_cannot_build_are_refused(tmp_path, capsys, keys, message):
    pth = str(tmp_path / "variant.pth")
    torch.save({k: torch.zeros(1) for k in keys}, pth)
    rc, _, err = _run(capsys, "--source", "timm", "--input", pth, "--output", str(tmp_path / "o.pkl"))
    assert rc == 2 and pth in err and message in err
    assert not os.path.exists(tmp_path / "o.pkl")


def test_bad_timm_inputs_are_named_in_timms_own_keys(tmp_path, capsys):
    state = _small_timm_swin().state_dict()
    out_pkl = str(tmp_path / "o.pkl")

    missing = {k: v for k, v in state.items() if k != "layers.2.downsample.reduction.weight"}
    torch.save(missing, str(tmp_path / "missing.pth"))
    rc, _, err = _run(capsys, "--source", "timm", "--input", str(tmp_path / "missing.pth"), "--output", out_pkl)
    assert rc == 2 and "missing layers.2.downsample.reduction.weight" in err  # timm's name, not microsoft's layers.1

    mangled = dict(state)
    mangled["layers.1.downsample.reductoin.weight"] = mangled.pop("layers.1.downsample.reduction.weight")
    torch.save(mangled, str(tmp_path / "mangled.pth"))
    rc, _, err = _run(capsys, "--source", "timm", "--input", str(tmp_path / "mangled.pth"), "--output", out_pkl)
    assert rc == 2 and "not part of a timm Swin Transformer" in err and "layers.1.downsample.reductoin.weight" in err

    s3 = dict(state, **{"layers.2.blocks.1.attn.relative_position_bias_table": torch.zeros(27 ** 2, 4)})
    torch.save(s3, str(tmp_path / "s3.pth"))  # timm's swin_s3_*: a window of 14 in stage 2
    rc, _, err = _run(capsys, "--source", "timm", "--input", str(tmp_path / "s3.pth"), "--output", out_pkl)
    assert rc == 2 and "one window size for every block" in err and "layers.2.blocks.1" in err

    resnet = dict(_timm_resnet("resnet18").state_dict(), **{"layer1.0.se.fc1.weight": torch.zeros(4, 64)})
    torch.save(resnet, str(tmp_path / "se.pth"))
    rc, _, err = _run(capsys, "--source", "timm", "--input", str(tmp_path / "se.pth"), "--output", out_pkl)
    assert rc == 2 and "not part of a timm ResNet" in err and "layer1.0.se.fc1.weight" in err

    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    rc, _, err = _run(capsys, "--source", "timm", "--input", str(tmp_path / "broken.safetensors"), "--output", out_pkl)
    assert rc == 2 and "broken.safetensors: not a readable safetensors file" in err
    assert not os.path.exists(out_pkl)
