"""tools/convert_pretrained.py: torchvision ResNets (random init, no download) to detectron2 and back to equal features."""
import os
import pickle

import pytest
import torch
import torchvision

import d2ext_projects  # noqa: F401
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.backbone import build_resnet_backbone

from d2ext.config import get_cfg
from d2ext.engine.setup import load_cfg

from .conftest import REPO_ROOT, load_tool

tool = load_tool("convert_pretrained")

ICNET_R18 = os.path.join(REPO_ROOT, "configs", "icnet", "cityscapes", "icnet_R18_cityscapes.yaml")
MASKFORMER_R50 = os.path.join(REPO_ROOT, "configs", "maskformer", "ade20k-150", "maskformer_R50_bs16_160k.yaml")
ICNET_R50_MSRA = os.path.join(REPO_ROOT, "configs", "icnet", "cityscapes", "icnet_R50_cityscapes.yaml")


def _torchvision_resnet(arch: str, seed: int = 0) -> torch.nn.Module:
    """Random init with non-trivial batch norms (init leaves them the identity, which hides a swapped name)."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{arch: (torchvision model in eval mode, its saved .pth, where to write the .pkl)} for resnet18 and resnet50."""
    root = tmp_path_factory.mktemp("convert_pretrained")
    out = {}
    for arch in ("resnet18", "resnet50"):
        model = _torchvision_resnet(arch)
        pth, pkl = str(root / f"{arch}.pth"), str(root / f"{arch}.pkl")
        torch.save(model.state_dict(), pth)
        out[arch] = (model, pth, pkl)
    return out


def _run(capsys, *argv):
    rc = tool.main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _backbone(depth: int, stride_in_1x1: bool = False):
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.RESNETS.DEPTH", str(depth),
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "64" if depth < 50 else "256",
        "MODEL.RESNETS.STRIDE_IN_1X1", str(stride_in_1x1),
        "MODEL.RESNETS.OUT_FEATURES", '["res5"]',
    ])
    return build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()


def _torchvision_layer4(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


@pytest.mark.parametrize("arch,depth", [("resnet18", 18), ("resnet50", 50)])
def test_converted_backbone_gives_torchvisions_features(converted, capsys, arch, depth):
    model, pth, pkl = converted[arch]
    rc, out, _ = _run(capsys, "--source", "torchvision", "--input", pth, "--output", pkl, "--arch", arch)
    assert rc == 0 and os.path.isfile(pkl)
    assert f"DEPTH: {depth}" in out and 'FORMAT: "RGB"' in out
    assert "PIXEL_MEAN: [123.675, 116.280, 103.530]" in out and "PIXEL_STD: [58.395, 57.120, 57.375]" in out
    assert ("STRIDE_IN_1X1: False" in out) == (depth >= 50)

    with open(pkl, "rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == "torchvision" and data["matching_heuristics"] is True
    assert "stem.conv1.norm.running_var" in data["model"] and not any("fc" in k for k in data["model"])

    backbone = _backbone(depth)
    checkpointer = DetectionCheckpointer(backbone)
    incompatible = checkpointer._load_model(checkpointer._load_file(pkl))
    assert incompatible.missing_keys == [] and incompatible.unexpected_keys == []
    assert set(backbone.state_dict()) == set(data["model"])

    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = _torchvision_layer4(model, x), backbone(x)["res5"]
    assert got.shape == want.shape == (1, 512 if depth < 50 else 2048, 2, 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)

    if depth >= 50:  # what STRIDE_IN_1X1 False is for: the same weights with detectron2's default differ
        wrong = _backbone(depth, stride_in_1x1=True)
        DetectionCheckpointer(wrong).load(pkl)
        with torch.no_grad():
            assert not torch.allclose(wrong(x)["res5"], want, atol=1e-3)


def test_model_weights_of_full_configs_load_the_backbone(converted, capsys, tmp_path):
    """Through MODEL.WEIGHTS: every ResNet key of a MaskFormer R50 model (plain backbone) gets the converted value."""
    model, pth, _ = converted["resnet50"]
    pkl = str(tmp_path / "R-50.pkl")
    assert _run(capsys, "--source", "torchvision", "--input", pth, "--output", pkl)[0] == 0
    cfg = load_cfg(MASKFORMER_R50, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", pkl])
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False and cfg.INPUT.FORMAT == "RGB"
    d2 = build_model(cfg)
    DetectionCheckpointer(d2).load(cfg.MODEL.WEIGHTS)
    loaded = {k[len("backbone."):]: v for k, v in d2.state_dict().items() if k.startswith("backbone.")}
    converted_arrays = pickle.load(open(pkl, "rb"))["model"]
    assert set(loaded) == set(converted_arrays)
    assert all(torch.equal(loaded[k], torch.as_tensor(a)) for k, a in converted_arrays.items())


def test_check_config_accepts_torchvision_configs_and_names_an_msra_one(converted, capsys, tmp_path):
    _, pth, _ = converted["resnet18"]
    rc, out, err = _run(capsys, "--source", "torchvision", "--input", pth, "--output", str(tmp_path / "R-18.pkl"),
                        "--check-config", ICNET_R18)
    assert rc == 0, err
    assert "backbone.resnet" in out and f"{ICNET_R18}: OK" in out and "FAILED" not in out

    _, pth, _ = converted["resnet50"]
    rc, out, err = _run(capsys, "--source", "torchvision", "--input", pth, "--output", str(tmp_path / "R-50.pkl"),
                        "--check-config", ICNET_R50_MSRA)
    assert rc == 1
    assert ICNET_R50_MSRA in err and "STRIDE_IN_1X1 is True" in err and "INPUT.FORMAT is 'BGR'" in err


def test_resnext_shape_is_read_off_the_weights(tmp_path, capsys):
    torch.manual_seed(0)
    pth = str(tmp_path / "rx.pth")
    torch.save(torchvision.models.resnext50_32x4d(weights=None).state_dict(), pth)
    rc, out, _ = _run(capsys, "--source", "torchvision", "--input", pth, "--output", str(tmp_path / "rx.pkl"),
                      "--arch", "resnext50_32x4d")
    assert rc == 0 and "NUM_GROUPS: 32" in out and "WIDTH_PER_GROUP: 4" in out


def test_unknown_keys_are_named(converted, capsys, tmp_path):
    model, _, _ = converted["resnet18"]
    state = dict(model.state_dict())
    state["layer1.0.se.fc1.weight"] = torch.zeros(4, 64)
    state["conv1.bias"] = torch.zeros(64)
    pth = str(tmp_path / "extra.pth")
    torch.save(state, pth)
    rc, _, err = _run(capsys, "--source", "torchvision", "--input", pth, "--output", str(tmp_path / "o.pkl"))
    assert rc == 2
    assert "conv1.bias" in err and "layer1.0.se.fc1.weight" in err and pth in err
    assert not os.path.exists(tmp_path / "o.pkl")


def test_missing_batch_norm_statistic_is_named(converted, capsys, tmp_path):
    """detectron2 itself would fill it with 1 without a word."""
    model, _, _ = converted["resnet18"]
    state = {k: v for k, v in model.state_dict().items() if k != "layer2.1.bn2.running_var"}
    pth = str(tmp_path / "incomplete.pth")
    torch.save(state, pth)
    rc, _, err = _run(capsys, "--source", "torchvision", "--input", pth, "--output", str(tmp_path / "o.pkl"))
    assert rc == 2 and "missing layer2.1.bn2.running_var" in err


def test_wrong_arch_missing_file_and_unsupported_source(converted, capsys, tmp_path):
    _, pth, _ = converted["resnet18"]
    out_pkl = str(tmp_path / "o.pkl")
    rc, _, err = _run(capsys, "--source", "torchvision", "--input", pth, "--output", out_pkl, "--arch", "resnet34")
    assert rc == 2 and "--arch resnet34" in err
    rc, _, err = _run(capsys, "--source", "torchvision", "--input", str(tmp_path / "nope.pth"), "--output", out_pkl)
    assert rc == 2 and "nope.pth: no such file" in err
    rc, _, err = _run(capsys, "--source", "caffe2", "--input", pth, "--output", out_pkl)
    assert rc == 2 and "--source caffe2: not supported" in err and "torchvision" in err
    with pytest.raises(SystemExit):
        tool.main(["--source", "torchvision", "--input", pth, "--output", str(tmp_path / "o.pth")])
