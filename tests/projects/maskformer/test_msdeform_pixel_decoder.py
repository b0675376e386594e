"""MSDeformAttnPixelDecoder: shapes and strides, scale order, the official
parameter names and the official parameter count."""
from __future__ import annotations

import torch
from detectron2.layers import ShapeSpec

import d2ext_projects  # noqa: F401  (registers MaskFormer and its config keys)
from d2ext.config import get_cfg
from d2ext_projects.maskformer.msdeform_pixel_decoder import MSDeformAttnPixelDecoder

torch.set_num_threads(1)

RES_CHANNELS = {"res2": 8, "res3": 16, "res4": 24, "res5": 40}
STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def _shapes(channels):
    return {k: ShapeSpec(channels=channels[k], stride=STRIDES[k]) for k in STRIDES}


def _cfg(conv_dim=32, mask_dim=16, enc_layers=1, heads=2, points=2):
    cfg = get_cfg()
    head = cfg.MODEL.SEM_SEG_HEAD
    head.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    head.CONVS_DIM, head.MASK_DIM, head.NORM, head.COMMON_STRIDE = conv_dim, mask_dim, "GN", 4
    head.TRANSFORMER_ENC_LAYERS = enc_layers
    head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = points
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = heads
    cfg.MODEL.MASK_FORMER.NHEADS = heads  # the official encoder takes its heads from here
    return cfg


def test_shapes_and_order():
    torch.manual_seed(0)
    dec = MSDeformAttnPixelDecoder(_cfg(), _shapes(RES_CHANNELS)).eval()
    h, w = 64, 96
    feats = {k: torch.randn(2, c, h // STRIDES[k], w // STRIDES[k]) for k, c in RES_CHANNELS.items()}
    mask, enc, multi = dec.forward_features(feats)
    assert mask.shape == (2, 16, 16, 24)
    assert enc.shape == (2, 32, 2, 3)
    assert [tuple(m.shape) for m in multi] == [(2, 32, 2, 3), (2, 32, 4, 6), (2, 32, 8, 12)]
    assert multi[0] is enc
    assert dec.transformer_in_features == ["res3", "res4", "res5"]
    assert torch.isfinite(mask).all()


def _official_keys(enc_layers):
    """The official state_dict names for IN_FEATURES res2..res5, encoder on res3..res5,
    NORM "GN": input_proj i = Sequential(Conv2d, GroupNorm) for res5, res4, res3;
    the encoder-only transformer (level_embed, encoder.layers.i with self_attn,
    norm1, linear1, linear2, norm2); mask_features (biased 1x1 Conv2d); one FPN
    level (res2) as adapter_1 / layer_1, detectron2 Conv2d without bias, with .norm."""
    wb = ("weight", "bias")
    keys = [f"input_proj.{i}.{j}.{p}" for i in range(3) for j in range(2) for p in wb]
    keys.append("transformer.level_embed")
    for i in range(enc_layers):
        for sub in ("self_attn.sampling_offsets", "self_attn.attention_weights", "self_attn.value_proj",
                    "self_attn.output_proj", "norm1", "linear1", "linear2", "norm2"):
            keys += [f"transformer.encoder.layers.{i}.{sub}.{p}" for p in wb]
    keys += ["mask_features.weight", "mask_features.bias"]
    for name in ("adapter_1", "layer_1"):
        keys += [f"{name}.weight", f"{name}.norm.weight", f"{name}.norm.bias"]
    return sorted(keys)


def test_official_state_dict_keys():
    dec = MSDeformAttnPixelDecoder(_cfg(enc_layers=2), _shapes(RES_CHANNELS))
    assert sorted(dec.state_dict().keys()) == _official_keys(2)


def test_official_parameter_count():
    # maskformer2_R50: CONVS_DIM 256, 6 layers, 8 heads, 4 points, 3 levels, FFN 1024.
    # input_proj: (2048+1024+512)*256 + 3*256 (conv bias) + 3*512 (GN) = 919808
    # level_embed: 3*256 = 768
    # per layer: sampling_offsets 256*192+192 = 49344, attention_weights 256*96+96 = 24672,
    #   value_proj + output_proj 2*(256*256+256) = 131584, norm1 + norm2 2*512 = 1024,
    #   linear1 256*1024+1024 = 263168, linear2 1024*256+256 = 262400 -> 732192; x6 = 4393152
    # mask_features 256*256+256 = 65792
    # adapter_1 256*256 + 512 = 66048, layer_1 256*256*9 + 512 = 590336
    # total 919808+768+4393152+65792+66048+590336 = 6035904
    cfg = _cfg(conv_dim=256, mask_dim=256, enc_layers=6, heads=8, points=4)
    dec = MSDeformAttnPixelDecoder(cfg, _shapes({"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}))
    assert sum(p.numel() for p in dec.parameters()) == 6035904
