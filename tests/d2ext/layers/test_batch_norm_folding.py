"""fold_batch_norms: same outputs with fewer modules, on toy convs and on real detectron2 models."""
import pytest
import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d, NaiveSyncBatchNorm
from torch import nn

from d2ext.layers import fold_batch_norms


def _randomize_statistics(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, so that folding has work to do."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)):
            c = m.running_mean.numel()
            m.running_mean.copy_(torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            if getattr(m, "weight", None) is not None:
                with torch.no_grad():
                    m.weight.copy_(torch.randn(c, generator=g))
                    m.bias.copy_(torch.randn(c, generator=g))


@pytest.mark.parametrize("norm_cls", [nn.BatchNorm2d, NaiveSyncBatchNorm, FrozenBatchNorm2d])
@pytest.mark.parametrize("bias", [False, True])
def test_folded_conv_equals_conv_then_norm(norm_cls, bias):
    torch.manual_seed(0)
    conv = Conv2d(4, 6, 3, padding=1, bias=bias, norm=norm_cls(6), activation=torch.relu)
    _randomize_statistics(conv)
    conv.eval()
    x = torch.randn(2, 4, 9, 7)
    expected = conv(x)
    assert fold_batch_norms(conv) == 1
    assert conv.norm is None and conv.bias is not None
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_other_norms_left_alone_and_training_mode_refused():
    gn = Conv2d(4, 8, 1, bias=False, norm=nn.GroupNorm(2, 8))
    assert fold_batch_norms(gn.eval()) == 0 and isinstance(gn.norm, nn.GroupNorm)
    bn = nn.Sequential(Conv2d(4, 8, 1, bias=False, norm=nn.BatchNorm2d(8)))
    with pytest.raises(ValueError, match=r"0\.norm is in training mode.*model\.eval\(\)"):
        fold_batch_norms(bn.train())


@pytest.mark.parametrize("norm", ["BN", "FrozenBN"])
def test_resnet_fpn_outputs_unchanged(norm):
    """A real detectron2 backbone (stem, shortcuts, basic blocks) folded end to end."""
    from detectron2.modeling import build_backbone

    from d2ext.config import get_cfg

    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    torch.manual_seed(0)
    backbone = build_backbone(cfg)
    _randomize_statistics(backbone)
    backbone.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = backbone(x)
        n = fold_batch_norms(backbone)
        got = backbone(x)
    # R18: stem + 8 blocks x 2 convs + 3 projection shortcuts
    assert n == 1 + 16 + 3
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in backbone.modules())
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-4)
