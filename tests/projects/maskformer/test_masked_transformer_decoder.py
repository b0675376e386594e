"""Mask2Former's MultiScaleMaskedTransformerDecoder: shapes, masked attention,
the official parameter layout, and a build through MaskFormerHead."""
import pytest
import torch

import d2ext_projects  # noqa: F401  (registers MaskFormer)
from d2ext.config import get_cfg
from d2ext_projects.maskformer.masked_transformer_decoder import MultiScaleMaskedTransformerDecoder

torch.set_num_threads(1)


def _cfg(hidden=16, heads=2, ffn=32, dec_layers=4, queries=5, classes=3, mask_dim=16):
    cfg = get_cfg()
    mf, head = cfg.MODEL.MASK_FORMER, cfg.MODEL.SEM_SEG_HEAD
    mf.HIDDEN_DIM, mf.NHEADS, mf.DIM_FEEDFORWARD, mf.DEC_LAYERS = hidden, heads, ffn, dec_layers
    mf.NUM_OBJECT_QUERIES, head.NUM_CLASSES, head.MASK_DIM = queries, classes, mask_dim
    mf.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    return cfg


def _inputs(b=2, c=16, d=16):
    x = [torch.randn(b, c, s, s) for s in (8, 16, 32)]  # coarsest first
    return x, torch.randn(b, d, 64, 64)


@pytest.mark.parametrize("training", [True, False])
def test_shapes(training):
    torch.manual_seed(0)
    dec = MultiScaleMaskedTransformerDecoder(_cfg(), 16).train(training)
    out = dec(*_inputs())
    assert out["pred_logits"].shape == (2, 5, 4)
    assert out["pred_masks"].shape == (2, 5, 64, 64)
    if training:
        aux = out["aux_outputs"]
        assert len(aux) == 4 - 1
        for a in aux:
            assert a["pred_logits"].shape == (2, 5, 4) and a["pred_masks"].shape == (2, 5, 64, 64)
    else:
        assert "aux_outputs" not in out


def test_dec_layers_below_one_is_a_clear_error():
    with pytest.raises(ValueError, match="MODEL.MASK_FORMER.DEC_LAYERS"):
        MultiScaleMaskedTransformerDecoder(_cfg(dec_layers=0), 16)


def _one_layer_decoder(inside_value: float, masked_attention: bool = True):
    """One decoder layer (DEC_LAYERS 2). The learnable queries' masks are made to
    be 10 * mask_features[:, 0] for every query: mask_embed outputs (10, 0, ...)."""
    torch.manual_seed(0)
    cfg = _cfg(dec_layers=2)
    cfg.MODEL.MASK_FORMER.MASKED_ATTENTION = masked_attention
    dec = MultiScaleMaskedTransformerDecoder(cfg, 16).eval()
    with torch.no_grad():
        last = dec.mask_embed.layers[-1]
        last.weight.zero_()
        last.bias.zero_()
        last.bias[0] = 10.0
    mask_features = torch.zeros(1, 16, 16, 16)
    mask_features[:, 0] = -1.0
    mask_features[:, 0, :, :8] = inside_value  # left half of the image
    return dec, mask_features


def _final_logits(dec, x, mask_features):
    with torch.no_grad():
        return dec(x, mask_features)["pred_logits"]


def _three_levels():
    """Decoder inputs: levels 0, 1, 2 (8x8, 4x4, 2x2), 16 channels."""
    return [torch.randn(1, 16, s, s) for s in (8, 4, 2)]


def _with_noise_in_columns(x, cols: slice):
    """x with strong noise added to the columns `cols` of level 0 (the level layer 0 reads)."""
    y = [x[0].clone(), x[1], x[2]]
    y[0][..., cols] += torch.randn_like(y[0][..., cols]) * 3
    return y


def test_cross_attention_sees_only_the_previous_mask():
    # layer 0 attends to level 0 (8x8); the left-half mask resized there covers columns 0..3
    dec, mf = _one_layer_decoder(inside_value=1.0)
    x = _three_levels()
    ref = _final_logits(dec, x, mf)
    outside = _with_noise_in_columns(x, slice(5, None))
    torch.testing.assert_close(_final_logits(dec, outside, mf), ref, rtol=0, atol=1e-5)
    inside = _with_noise_in_columns(x, slice(0, 2))
    assert (_final_logits(dec, inside, mf) - ref).abs().max() > 1e-3


def test_query_with_empty_mask_attends_everywhere():
    dec, mf = _one_layer_decoder(inside_value=-1.0)  # every mask empty
    x = _three_levels()
    ref = _final_logits(dec, x, mf)
    assert torch.isfinite(ref).all()
    for cols in (slice(0, 2), slice(5, 8)):
        assert (_final_logits(dec, _with_noise_in_columns(x, cols), mf) - ref).abs().max() > 1e-3


def test_without_masked_attention_every_query_sees_the_whole_level():
    # the ablation: the same left-half masks as above no longer restrict layer 0
    dec, mf = _one_layer_decoder(inside_value=1.0, masked_attention=False)
    x = _three_levels()
    ref = _final_logits(dec, x, mf)
    outside = _with_noise_in_columns(x, slice(5, None))
    assert (_final_logits(dec, outside, mf) - ref).abs().max() > 1e-3


def _perturbed_level_changes(single_scale_level: int):
    """Which of the 3 levels the final logits depend on, for 3 decoder layers."""
    torch.manual_seed(0)
    cfg = _cfg(dec_layers=4)
    cfg.MODEL.MASK_FORMER.SINGLE_SCALE_LEVEL = single_scale_level
    dec = MultiScaleMaskedTransformerDecoder(cfg, 16).eval()
    x, mf = _inputs(b=1)
    ref = _final_logits(dec, x, mf)
    changed = []
    for level in range(3):
        y = list(x)
        y[level] = x[level] + torch.randn_like(x[level]) * 3
        changed.append(bool((_final_logits(dec, y, mf) - ref).abs().max() > 1e-4))
    return changed


@pytest.mark.parametrize("level", [0, 2])
def test_single_scale_decoder_reads_only_its_level(level):
    assert _perturbed_level_changes(level) == [i == level for i in range(3)]


def test_multi_scale_decoder_reads_every_level():
    assert _perturbed_level_changes(-1) == [True, True, True]


def test_single_scale_level_out_of_range_is_a_clear_error():
    cfg = _cfg()
    cfg.MODEL.MASK_FORMER.SINGLE_SCALE_LEVEL = 3
    with pytest.raises(ValueError, match="MODEL.MASK_FORMER.SINGLE_SCALE_LEVEL=3"):
        MultiScaleMaskedTransformerDecoder(cfg, 16)


def _official_layout(c=256, ffn=2048, layers=9, queries=100, classes=133, mask_dim=256):
    """The official module's parameters (facts read off mask2former_transformer_decoder.py;
    in_channels == hidden_dim and no ENFORCE_INPUT_PROJ: input_proj are empty Sequentials)."""
    attn = {"in_proj_weight": (3 * c, c), "in_proj_bias": (3 * c,), "out_proj.weight": (c, c), "out_proj.bias": (c,)}
    norm = {"norm.weight": (c,), "norm.bias": (c,)}
    for i in range(layers):
        for k, s in attn.items():
            yield f"transformer_self_attention_layers.{i}.self_attn.{k}", s
        for k, s in norm.items():
            yield f"transformer_self_attention_layers.{i}.{k}", s
        for k, s in attn.items():
            yield f"transformer_cross_attention_layers.{i}.multihead_attn.{k}", s
        for k, s in norm.items():
            yield f"transformer_cross_attention_layers.{i}.{k}", s
        yield f"transformer_ffn_layers.{i}.linear1.weight", (ffn, c)
        yield f"transformer_ffn_layers.{i}.linear1.bias", (ffn,)
        yield f"transformer_ffn_layers.{i}.linear2.weight", (c, ffn)
        yield f"transformer_ffn_layers.{i}.linear2.bias", (c,)
        for k, s in norm.items():
            yield f"transformer_ffn_layers.{i}.{k}", s
    yield "decoder_norm.weight", (c,)
    yield "decoder_norm.bias", (c,)
    yield "query_feat.weight", (queries, c)
    yield "query_embed.weight", (queries, c)
    yield "level_embed.weight", (3, c)
    yield "class_embed.weight", (classes + 1, c)
    yield "class_embed.bias", (classes + 1,)
    for j, (a, b) in enumerate([(c, c), (c, c), (c, mask_dim)]):
        yield f"mask_embed.layers.{j}.weight", (b, a)
        yield f"mask_embed.layers.{j}.bias", (b,)


def test_state_dict_matches_the_official_layout():
    cfg = _cfg(hidden=256, heads=8, ffn=2048, dec_layers=10, queries=100, classes=133, mask_dim=256)
    dec = MultiScaleMaskedTransformerDecoder(cfg, 256)
    got = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
    assert got == dict(_official_layout())
    # by hand: per layer self-attn 263,168 + 512, cross-attn the same, FFN 1,050,880 + 512
    # = 1,578,752; x 9 = 14,208,768; + decoder_norm 512 + queries 2 x 25,600
    # + level_embed 768 + class_embed 34,438 + mask_embed 197,376 = 14,493,062
    assert sum(p.numel() for p in dec.parameters()) == 14_493_062


def test_input_proj_when_channels_differ():
    dec = MultiScaleMaskedTransformerDecoder(_cfg(), 8)
    assert all(p.kernel_size == (1, 1) and p.in_channels == 8 for p in dec.input_proj)
    out = dec.eval()(*_inputs(c=8))
    assert out["pred_masks"].shape == (2, 5, 64, 64)


@pytest.mark.parametrize("training", [True, False])
def test_build_through_the_head(training):
    from detectron2.layers import ShapeSpec

    from d2ext_projects.maskformer.head import MaskFormerHead

    torch.manual_seed(0)
    cfg = _cfg()
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    head_cfg = cfg.MODEL.SEM_SEG_HEAD
    head_cfg.PIXEL_DECODER_NAME = "BasePixelDecoder"
    head_cfg.CONVS_DIM = 32  # GroupNorm(32) in the pixel decoder; != HIDDEN_DIM: input_proj convs
    head_cfg.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    chans, strides = {"res2": 8, "res3": 8, "res4": 16, "res5": 16}, {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    shapes = {k: ShapeSpec(channels=chans[k], stride=strides[k]) for k in chans}
    head = MaskFormerHead(cfg, shapes).train(training)
    assert isinstance(head.predictor, MultiScaleMaskedTransformerDecoder)
    feats = {k: torch.randn(1, chans[k], 64 // strides[k], 64 // strides[k]) for k in chans}
    out = head(feats)
    assert out["pred_logits"].shape == (1, 5, 4)
    assert out["pred_masks"].shape == (1, 5, 16, 16)
    assert len(out.get("aux_outputs", [])) == (3 if training else 0)
