"""MaskFormer's DETR layers equal torch's own transformer layers where both apply
(no positional encodings), in post-norm (DETR) and pre-norm; positions enter
queries and keys only."""
import pytest
import torch
from torch import nn

from d2ext_projects.maskformer.transformer import TransformerDecoderLayer, TransformerEncoderLayer

D, HEADS, FFN = 32, 4, 64


def _with_distinct_norms(layer):
    """LayerNorms start as identities, all alike: give each its own affine so that a
    layer applying the wrong norm (or none) gives other outputs."""
    with torch.no_grad():
        for module in layer.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    return layer.eval()


def _encoder_inputs():
    return (torch.randn(2, 7, D),)  # src


def _decoder_inputs():
    return torch.randn(2, 5, D), torch.randn(2, 7, D)  # tgt, memory


@pytest.mark.parametrize("pre_norm", [False, True])
@pytest.mark.parametrize(
    "ours_cls, torch_cls, inputs",
    [
        (TransformerEncoderLayer, nn.TransformerEncoderLayer, _encoder_inputs),
        (TransformerDecoderLayer, nn.TransformerDecoderLayer, _decoder_inputs),
    ],
)
def test_layer_equals_torch_layer(ours_cls, torch_cls, inputs, pre_norm):
    torch.manual_seed(0)
    ours = _with_distinct_norms(ours_cls(D, HEADS, FFN, dropout=0.1, normalize_before=pre_norm))
    reference = torch_cls(D, HEADS, FFN, dropout=0.1, batch_first=True, norm_first=pre_norm).eval()
    # Same parameter names (torch's and the official MaskFormer's are DETR's).
    reference.load_state_dict(ours.state_dict())
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(ours(*x), reference(*x))


def _block(x, sublayer, norm, pre_norm):
    """The residual block both layers are built of, written out."""
    return x + sublayer(norm(x)) if pre_norm else norm(x + sublayer(x))


@pytest.mark.parametrize("pre_norm", [False, True])
def test_encoder_positions_enter_queries_and_keys_not_values(pre_norm):
    # DETR adds the positional encoding to the queries and keys of attention,
    # never to its values or to the residual stream.
    torch.manual_seed(0)
    layer = _with_distinct_norms(TransformerEncoderLayer(D, HEADS, FFN, dropout=0.0, normalize_before=pre_norm))
    src, pos = torch.randn(1, 6, D), torch.randn(1, 6, D)
    with torch.no_grad():
        out = layer(src, pos)
        x = _block(src, lambda t: layer.self_attn(t + pos, t + pos, t)[0], layer.norm1, pre_norm)
        expected = _block(x, layer._ffn, layer.norm2, pre_norm)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, layer(src))  # the positions matter


@pytest.mark.parametrize("pre_norm", [False, True])
def test_decoder_positions_enter_queries_and_keys_not_values(pre_norm):
    torch.manual_seed(0)
    layer = _with_distinct_norms(TransformerDecoderLayer(D, HEADS, FFN, dropout=0.0, normalize_before=pre_norm))
    tgt, query_pos = torch.randn(1, 5, D), torch.randn(1, 5, D)
    memory, pos = torch.randn(1, 6, D), torch.randn(1, 6, D)

    with torch.no_grad():
        out = layer(tgt, memory, pos, query_pos)
        self_attn = lambda t: layer.self_attn(t + query_pos, t + query_pos, t)[0]  # noqa: E731
        cross_attn = lambda t: layer.multihead_attn(t + query_pos, memory + pos, memory)[0]  # noqa: E731
        x = _block(tgt, self_attn, layer.norm1, pre_norm)
        x = _block(x, cross_attn, layer.norm2, pre_norm)
        expected = _block(x, layer._ffn, layer.norm3, pre_norm)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, layer(tgt, memory, None, query_pos))  # memory positions matter
    assert not torch.allclose(out, layer(tgt, memory, pos, None))  # query positions matter
