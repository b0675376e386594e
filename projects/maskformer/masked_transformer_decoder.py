"""Mask2Former's transformer decoder with masked cross-attention.

Shapes: B images, Q queries, K classes (+1 "no object"), C = HIDDEN_DIM,
D = MASK_DIM, (h_l, w_l) the size of feature level l (3 levels, coarsest first),
(H, W) the mask features, L = DEC_LAYERS - 1 decoder layers, n = NHEADS.
Sequences are batch-first: queries (B, Q, C), level tokens (B, h_l*w_l, C).
Parameter names follow the official module so its checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from torch import nn
from torch.nn import functional as F

from .predictor import MLP, TRANSFORMER_DECODER_REGISTRY
from .transformer import PositionEmbeddingSine, reset_transformer_parameters

__all__ = ["MultiScaleMaskedTransformerDecoder"]


def _add(x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
    return x if pos is None else x + pos


class SelfAttentionLayer(nn.Module):
    """Query self-attention with one residual + LayerNorm (post- or pre-norm)."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        reset_transformer_parameters(self)  # as the official: every weight matrix

    def forward(self, tgt: torch.Tensor, query_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """tgt, query_pos: (B, Q, C) -> (B, Q, C)."""
        x = self.norm(tgt) if self.normalize_before else tgt
        q = k = _add(x, query_pos)
        tgt = tgt + self.dropout(self.self_attn(q, k, x, need_weights=False)[0])
        return tgt if self.normalize_before else self.norm(tgt)


class CrossAttentionLayer(nn.Module):
    """Queries attend to one feature level, optionally under an attention mask."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        reset_transformer_parameters(self)  # as the official: every weight matrix

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: Optional[torch.Tensor] = None,
        pos: Optional[torch.Tensor] = None,
        query_pos: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """tgt, query_pos: (B, Q, C); memory, pos: (B, S, C);
        memory_mask: (B*n, Q, S) bool, True = may not attend -> (B, Q, C)."""
        x = self.norm(tgt) if self.normalize_before else tgt
        out = self.multihead_attn(
            _add(x, query_pos), _add(memory, pos), memory, attn_mask=memory_mask, need_weights=False
        )[0]
        tgt = tgt + self.dropout(out)
        return tgt if self.normalize_before else self.norm(tgt)


class FFNLayer(nn.Module):
    """Two-layer ReLU feed-forward block with one residual + LayerNorm."""

    def __init__(self, d_model: int, dim_feedforward: int = 2048, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        reset_transformer_parameters(self)  # as the official: every weight matrix

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        """(B, Q, C) -> (B, Q, C)."""
        x = self.norm(tgt) if self.normalize_before else tgt
        # the official applies the same dropout inside and on the residual branch
        tgt = tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))
        return tgt if self.normalize_before else self.norm(tgt)


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Mask2Former's decoder: layer i cross-attends to level i % 3, masked by the
    previous prediction's foreground (sigmoid >= 0.5), then self-attention, FFN.
    ``masked_attention`` and ``single_scale_level`` switch those two parts off for
    ablations."""

    num_feature_levels = 3

    @configurable
    def __init__(
        self,
        in_channels: int,
        mask_classification: bool = True,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
        deep_supervision: bool = True,
        masked_attention: bool = True,
        single_scale_level: int = -1,
    ):
        """
        Args:
            in_channels: channels of each of the 3 feature levels.
            mask_classification: must be True (the official supports only that).
            num_classes: K, without "no object".
            dec_layers: L, the decoder layers proper (DEC_LAYERS - 1).
            enforce_input_project: a 1x1 conv even when in_channels == hidden_dim.
            deep_supervision: return "aux_outputs" in training.
            masked_attention: False = plain cross-attention to the whole level
                (the paper's ablation; the checkpoints' parameters are the same).
            single_scale_level: -1 = the layers cycle over the 3 levels; 0, 1 or
                2 = every layer attends to that level only (0 = the coarsest).
        """
        super().__init__()
        if not mask_classification:
            raise ValueError("MultiScaleMaskedTransformerDecoder needs mask classification")
        if single_scale_level not in (-1, *range(self.num_feature_levels)):
            raise ValueError(
                f"MODEL.MASK_FORMER.SINGLE_SCALE_LEVEL={single_scale_level}: must be -1 "
                f"(multi-scale) or a level 0..{self.num_feature_levels - 1}"
            )
        self.mask_classification = mask_classification
        self.deep_supervision = deep_supervision
        self.masked_attention = masked_attention
        self.single_scale_level = single_scale_level
        # equals the official PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2)
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, 0.0, pre_norm) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, 0.0, pre_norm) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, 0.0, pre_norm) for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # the queries' content
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # their positional part
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                conv = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(conv)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Sequential())  # identity, no parameters
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool = True) -> dict:
        mf = cfg.MODEL.MASK_FORMER
        if mf.DEC_LAYERS < 1:
            raise ValueError(
                f"MODEL.MASK_FORMER.DEC_LAYERS={mf.DEC_LAYERS}: MultiScaleMaskedTransformerDecoder "
                "needs >= 1 (it counts the prediction from the learnable queries)"
            )
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            # one auxiliary loss per DEC_LAYERS: the learnable queries' prediction is one
            "dec_layers": mf.DEC_LAYERS - 1,
            "pre_norm": mf.PRE_NORM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "deep_supervision": mf.DEEP_SUPERVISION,
            "masked_attention": mf.MASKED_ATTENTION,
            "single_scale_level": mf.SINGLE_SCALE_LEVEL,
        }

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the official's version-1 checkpoints named query_feat "static_query"
        for k in [k for k in state_dict if k.startswith(prefix) and "static_query" in k]:
            state_dict[k.replace("static_query", "query_feat")] = state_dict.pop(k)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def level_of_layer(self, i: int) -> int:
        """The feature level decoder layer i attends to (i = L: after the last)."""
        if self.single_scale_level >= 0:
            return self.single_scale_level
        return i % self.num_feature_levels

    def forward_prediction_heads(self, output: torch.Tensor, mask_features: torch.Tensor, size):
        """output: (B, Q, C); mask_features: (B, D, H, W); size: (h, w) of the level
        the next layer attends to -> logits (B, Q, K+1), masks (B, Q, H, W),
        attn_mask (B*n, Q, h*w) bool, True = may not attend (None without
        masked attention). A query whose mask is empty may attend everywhere:
        with no key at all its attention would be NaN."""
        decoded = self.decoder_norm(output)
        logits = self.class_embed(decoded)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        if not self.masked_attention:
            return logits, masks, None
        small = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        attn_mask = small.sigmoid().flatten(2) < 0.5  # (B, Q, h*w)
        attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
        # nn.MultiheadAttention wants one mask per (image, head), image-major
        attn_mask = attn_mask.repeat_interleave(self.num_heads, dim=0).detach()
        return logits, masks, attn_mask

    def forward(self, x: List[torch.Tensor], mask_features: torch.Tensor, mask=None) -> Dict[str, object]:
        """
        Args:
            x: 3 features (B, in_channels, h_l, w_l), coarsest first.
            mask_features: (B, D, H, W) per-pixel embeddings.
            mask: unused (the official ignores padding masks too).

        Returns:
            "pred_logits" (B, Q, K+1), "pred_masks" (B, Q, H, W) of the last layer; in
            training with deep supervision also "aux_outputs": the L earlier
            predictions, the learnable queries' first.
        """
        if len(x) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(x)}")
        src, pos, sizes = [], [], []
        for i, feat in enumerate(x):
            sizes.append(feat.shape[-2:])
            pos.append(self.pe_layer(feat).flatten(2).transpose(1, 2))  # (B, hw, C)
            proj = self.input_proj[i](feat).flatten(2) + self.level_embed.weight[i][None, :, None]
            src.append(proj.transpose(1, 2))  # (B, hw, C)
        b = x[0].shape[0]
        query_pos = self.query_embed.weight[None].repeat(b, 1, 1)  # (B, Q, C)
        output = self.query_feat.weight[None].repeat(b, 1, 1)
        first = sizes[self.level_of_layer(0)]
        logits, masks, attn_mask = self.forward_prediction_heads(output, mask_features, first)
        predictions = [{"pred_logits": logits, "pred_masks": masks}]
        for i in range(self.num_layers):
            level = self.level_of_layer(i)
            output = self.transformer_cross_attention_layers[i](
                output, src[level], memory_mask=attn_mask, pos=pos[level], query_pos=query_pos
            )
            output = self.transformer_self_attention_layers[i](output, query_pos=query_pos)
            output = self.transformer_ffn_layers[i](output)
            nxt = sizes[self.level_of_layer(i + 1)]
            logits, masks, attn_mask = self.forward_prediction_heads(output, mask_features, nxt)
            predictions.append({"pred_logits": logits, "pred_masks": masks})
        out: Dict[str, object] = dict(predictions[-1])
        if self.training and self.deep_supervision:
            out["aux_outputs"] = predictions[:-1]
        return out
