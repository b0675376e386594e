"""DETR-style transformer: sine positional encoding, encoder and decoder layers.

Shapes: B = images, C = channels (d_model), h, w = feature map size,
S = h * w tokens, Q = queries, L = decoder layers.
All sequences are batch-first: (B, S, C) and (B, Q, C).
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PositionEmbeddingSine",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "TransformerParts",
]


class PositionEmbeddingSine(nn.Module):
    """Fixed 2D sine/cosine encoding of pixel positions (DETR, normalized).

    Each axis gets ``num_pos_feats`` channels: position / axis length * 2 pi,
    divided by temperature ** (2 i / num_pos_feats), sin on even and cos on odd
    channels. Output: (B, 2 * num_pos_feats, h, w), y channels first.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, h, w), only its shape, device and dtype are used."""
        b, _, h, w = x.shape
        eps = 1e-6
        # positions 1..h and 1..w, normalized so that the last one is `scale`
        y = torch.arange(1, h + 1, device=x.device, dtype=torch.float32) / (h + eps) * self.scale
        xs = torch.arange(1, w + 1, device=x.device, dtype=torch.float32) / (w + eps) * self.scale
        i = torch.arange(self.num_pos_feats, device=x.device, dtype=torch.float32)
        dim_t = self.temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / self.num_pos_feats)
        even = (torch.arange(self.num_pos_feats, device=x.device) % 2) == 0

        def encode(pos: torch.Tensor) -> torch.Tensor:  # (n,) -> (n, F)
            angles = pos[:, None] / dim_t
            return torch.where(even, angles.sin(), angles.cos())

        pos_y = encode(y)[:, None, :].expand(h, w, -1)
        pos_x = encode(xs)[None, :, :].expand(h, w, -1)
        pos = torch.cat([pos_y, pos_x], dim=-1).permute(2, 0, 1)  # (2F, h, w)
        return pos[None].expand(b, -1, -1, -1).to(x.dtype)


def _activation(name: str):
    if name == "relu":
        return F.relu
    if name == "gelu":
        return F.gelu
    raise ValueError(f"activation must be 'relu' or 'gelu', got {name!r}")


def _with_pos(x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
    return x if pos is None else x + pos


def _residual(
    x: torch.Tensor,
    sublayer: Callable[[torch.Tensor], torch.Tensor],
    norm: nn.LayerNorm,
    dropout: nn.Dropout,
    normalize_before: bool,
) -> torch.Tensor:
    """One residual block of a transformer layer: ``x + sublayer(norm(x))`` with
    pre-norm, ``norm(x + sublayer(x))`` with post-norm (DETR's default)."""
    if normalize_before:
        return x + dropout(sublayer(norm(x)))
    return norm(x + dropout(sublayer(x)))


class TransformerEncoderLayer(nn.Module):
    """Self-attention + FFN, post-norm (DETR) or pre-norm."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.normalize_before = normalize_before

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(self, src: torch.Tensor, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """src, pos: (B, S, C) -> (B, S, C)."""

        def attend(x):
            q = k = _with_pos(x, pos)
            return self.self_attn(q, k, x, need_weights=False)[0]

        src = _residual(src, attend, self.norm1, self.dropout1, self.normalize_before)
        return _residual(src, self._ffn, self.norm2, self.dropout2, self.normalize_before)


class TransformerDecoderLayer(nn.Module):
    """Query self-attention, cross-attention to the memory, FFN; post- or pre-norm."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        # ``multihead_attn``: the official (DETR's) name of the cross-attention
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.normalize_before = normalize_before

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: Optional[torch.Tensor] = None,
        query_pos: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """tgt, query_pos: (B, Q, C); memory, pos: (B, S, C) -> (B, Q, C)."""

        def attend_queries(x):
            q = k = _with_pos(x, query_pos)
            return self.self_attn(q, k, x, need_weights=False)[0]

        def attend_memory(x):
            k = _with_pos(memory, pos)
            return self.multihead_attn(_with_pos(x, query_pos), k, memory, need_weights=False)[0]

        pre = self.normalize_before
        tgt = _residual(tgt, attend_queries, self.norm1, self.dropout1, pre)
        tgt = _residual(tgt, attend_memory, self.norm2, self.dropout2, pre)
        return _residual(tgt, self._ffn, self.norm3, self.dropout3, pre)


def _clones(layer: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(layer) for _ in range(n))


class TransformerEncoder(nn.Module):
    """``num_layers`` encoder layers; a final LayerNorm with pre-norm layers (as DETR)."""

    def __init__(self, layer: TransformerEncoderLayer, num_layers: int, norm: Optional[nn.Module] = None):
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.norm = norm

    def forward(self, src: torch.Tensor, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return src if self.norm is None else self.norm(src)


class TransformerDecoder(nn.Module):
    """``num_layers`` decoder layers; returns every layer's output after the final
    LayerNorm, (L, B, Q, C), for deep supervision (DETR's return_intermediate)."""

    def __init__(self, layer: TransformerDecoderLayer, num_layers: int, norm: nn.Module):
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.norm = norm

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: Optional[torch.Tensor] = None,
        query_pos: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class TransformerParts(nn.Module):
    """Holds an encoder and/or a decoder under the names ``encoder`` / ``decoder``: the
    official MaskFormer nests them in a ``transformer`` module (its DETR Transformer and
    TransformerEncoderOnly), so its parameter names are ``transformer.encoder.*`` and
    ``transformer.decoder.*``. No forward: the owner calls the parts."""

    def __init__(self, encoder: Optional[nn.Module] = None, decoder: Optional[nn.Module] = None):
        super().__init__()
        if encoder is not None:
            self.encoder = encoder
        if decoder is not None:
            self.decoder = decoder


def reset_transformer_parameters(module: nn.Module) -> None:
    """Xavier-uniform init of every weight matrix, as DETR initializes its transformer."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
