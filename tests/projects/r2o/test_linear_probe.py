"""The linear probe's parts: frozen features, label checks, the probe's training."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import build_resnet_backbone
from PIL import Image

from d2ext_projects.r2o.linear_probe import (
    LinearProbe,
    ProbeImage,
    extract_features,
    read_label,
    train_probe,
)


def _resnet18():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    torch.manual_seed(0)
    return build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()


def test_features_concatenated_at_the_finest_level_over_the_unpadded_image():
    backbone = _resnet18()
    image = torch.randint(0, 256, (3, 70, 90)).float()
    mean, std = torch.tensor([100.0, 110.0, 120.0])[:, None, None], torch.tensor([50.0, 60.0, 70.0])[:, None, None]
    feats = extract_features(backbone, image, mean, std, ["res4", "res5"])
    # padded to 96 x 96; res4 has stride 16: ceil(70 / 16) x ceil(90 / 16) cells cover the image
    assert feats.shape == (256 + 512, 5, 6)
    with torch.no_grad():
        x = F.pad((image - mean) / std, (0, 6, 0, 26))[None]
        maps = backbone(x)
    torch.testing.assert_close(feats[:256], maps["res4"][0, :, :5, :6])
    res5_up = F.interpolate(maps["res5"], size=(6, 6), mode="bilinear", align_corners=False)
    torch.testing.assert_close(feats[256:], res5_up[0, :, :5, :6])


def test_a_feature_the_backbone_lacks_is_named():
    with pytest.raises(ValueError, match=r"res6.*res2"):
        extract_features(_resnet18(), torch.zeros(3, 32, 32), torch.zeros(3, 1, 1), torch.ones(3, 1, 1), ["res6"])


def test_label_values_outside_the_classes_name_the_file(tmp_path):
    good = np.array([[0, 4], [255, 2]], dtype=np.uint8)
    Image.fromarray(good).save(tmp_path / "good.png")
    assert read_label(str(tmp_path / "good.png"), 5, 255).tolist() == good.astype(np.int64).tolist()
    bad = good.copy()
    bad[0, 0] = 7
    Image.fromarray(bad).save(tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"bad\.png.*\[7\].*< 5.*255"):
        read_label(str(tmp_path / "bad.png"), 5, 255)


def _images(n, shuffle_labels, seed=0):
    """Features (4, 8, 8); labels (16, 16) = argmax of the first 3 channels upsampled as the
    probe upsamples its logits, so a linear probe can fit them exactly, unless shuffled."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        f = torch.randn(4, 8, 8, generator=gen) * 5 + 3  # not standardised: the probe must do it
        label = F.interpolate(f[None, :3], size=(16, 16), mode="bilinear", align_corners=False)[0].argmax(0)
        if shuffle_labels:
            label = label.flatten()[torch.randperm(256, generator=gen)].view(16, 16)
        label[0, 0] = 255  # an ignored pixel
        out.append(ProbeImage("x.png", f, 16, 16, label))
    return out


def _pixel_accuracy(probe, images):
    with torch.no_grad():
        hits = [(probe(im.features, (16, 16)).argmax(0) == im.label)[im.label != 255].float().mean() for im in images]
    return float(torch.stack(hits).mean())


def test_the_probe_fits_linearly_separable_labels_and_not_shuffled_ones():
    fit = train_probe(_images(8, False), 3, 255, iters=150, batch_size=4, lr=0.5)
    assert _pixel_accuracy(fit, _images(4, False, seed=1)) > 0.9  # held-out images
    shuffled = train_probe(_images(8, True), 3, 255, iters=150, batch_size=4, lr=0.5)
    assert _pixel_accuracy(shuffled, _images(4, True, seed=1)) < 0.6


def test_training_is_reproducible_from_the_seed():
    images = _images(4, False)
    a = train_probe(images, 3, 255, iters=10, batch_size=2, seed=3)
    b = train_probe(images, 3, 255, iters=10, batch_size=2, seed=3)
    c = train_probe(images, 3, 255, iters=10, batch_size=2, seed=4)
    torch.testing.assert_close(a.classifier.weight, b.classifier.weight)
    assert not torch.allclose(a.classifier.weight, c.classifier.weight)


def test_the_probe_is_linear_in_the_features_before_the_softmax():
    probe = LinearProbe(torch.zeros(4), torch.ones(4), 3)
    x, y = torch.randn(4, 5, 5), torch.randn(4, 5, 5)
    zero = probe(torch.zeros(4, 5, 5), (9, 9))
    torch.testing.assert_close(probe(x + y, (9, 9)) - zero, (probe(x, (9, 9)) - zero) + (probe(y, (9, 9)) - zero))
