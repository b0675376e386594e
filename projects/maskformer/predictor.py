"""Transformer predictor: N learned queries -> N (class logits, mask logits) pairs.

Shapes: B images, Q queries, K classes (+1 "no object"), C = HIDDEN_DIM,
D = MASK_DIM, (h, w) the decoder's input feature, (H, W) the mask features
(1/4 of the padded image for res2), L decoder layers.
"""
from __future__ import annotations

from typing import Dict

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.utils.registry import Registry
from torch import nn
from torch.nn import functional as F

from .transformer import (
    PositionEmbeddingSine,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    TransformerParts,
    reset_transformer_parameters,
)

__all__ = ["MLP", "TRANSFORMER_DECODER_REGISTRY", "TransformerPredictor", "build_transformer_decoder"]

# The official Mask2Former's registry (named "TRANSFORMER_MODULE" there), keyed by
# MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME. A decoder is built as
# ``cls(cfg, in_channels)`` and called as ``decoder(x, mask_features)`` with x the
# feature TRANSFORMER_IN_FEATURE names (a list of multi-scale features for
# "multi_scale_pixel_decoder"); it returns the dict TransformerPredictor.forward
# documents.
TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = (
    "MaskFormer transformer decoders, named by MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME."
)


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class TransformerPredictor(nn.Module):
    """MaskFormer's decoder (the official "StandardTransformerDecoder")."""

    @configurable
    def __init__(
        self,
        in_channels: int,
        *,
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dropout: float = 0.1,
        dim_feedforward: int = 2048,
        enc_layers: int = 0,
        dec_layers: int = 6,
        pre_norm: bool = False,
        deep_supervision: bool = True,
        mask_dim: int = 256,
        enforce_input_project: bool = False,
        mask_classification: bool = True,
    ):
        """
        Args:
            in_channels: channels of the feature the decoder attends to.
            num_classes: K, without "no object" (the class head has K + 1 outputs).
            enc_layers: transformer encoder layers run on that feature first.
            deep_supervision: also return every earlier layer's predictions in
                training ("aux_outputs").
            mask_dim: D, channels of the per-pixel embeddings.
            mask_classification: False for MaskFormer's per-pixel baseline
                "plus": no class head; query q's mask is the logit map of class q
                (Q = K), and the outputs have no "pred_logits".
        """
        super().__init__()
        self.num_classes = num_classes
        self.deep_supervision = deep_supervision
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2)
        enc = TransformerEncoderLayer(hidden_dim, nheads, dim_feedforward, dropout, "relu", pre_norm)
        dec = TransformerDecoderLayer(hidden_dim, nheads, dim_feedforward, dropout, "relu", pre_norm)
        # ``transformer.encoder`` / ``transformer.decoder``: the official nesting
        self.transformer = TransformerParts(
            encoder=TransformerEncoder(enc, enc_layers, nn.LayerNorm(hidden_dim) if pre_norm else None),
            decoder=TransformerDecoder(dec, dec_layers, nn.LayerNorm(hidden_dim)),
        )
        reset_transformer_parameters(self.transformer)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        if in_channels != hidden_dim or enforce_input_project:
            self.input_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
            weight_init.c2_xavier_fill(self.input_proj)
        else:
            self.input_proj = nn.Identity()
        self.mask_classification = mask_classification
        if mask_classification:
            self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool = True) -> dict:
        mf = cfg.MODEL.MASK_FORMER
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dropout": mf.DROPOUT,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            "enc_layers": mf.ENC_LAYERS,
            "dec_layers": mf.DEC_LAYERS,
            "pre_norm": mf.PRE_NORM,
            "deep_supervision": mf.DEEP_SUPERVISION,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
        }

    def forward(self, x: torch.Tensor, mask_features: torch.Tensor) -> Dict[str, object]:
        """
        Args:
            x: (B, in_channels, h, w) the feature the queries attend to.
            mask_features: (B, D, H, W) per-pixel embeddings.

        Returns:
            "pred_logits" (B, Q, K + 1) (with mask classification),
            "pred_masks" (B, Q, H, W) of the last layer; in training with deep supervision also "aux_outputs": a list
            of L - 1 such dicts, first layer first.
        """
        b = x.shape[0]
        pos = self.pe_layer(x).flatten(2).transpose(1, 2)  # (B, h*w, C)
        memory = self.transformer.encoder(self.input_proj(x).flatten(2).transpose(1, 2), pos)
        query_pos = self.query_embed.weight[None].expand(b, -1, -1)  # (B, Q, C)
        hs = self.transformer.decoder(torch.zeros_like(query_pos), memory, pos, query_pos)  # (L, B, Q, C)
        if not (self.training and self.deep_supervision):
            hs = hs[-1:]
        masks = torch.einsum("lbqd,bdhw->lbqhw", self.mask_embed(hs), mask_features)
        layers = [{"pred_masks": m} for m in masks]
        if self.mask_classification:
            for layer, logits in zip(layers, self.class_embed(hs)):  # (B, Q, K + 1) each
                layer["pred_logits"] = logits
        out: Dict[str, object] = dict(layers[-1])
        if self.training and self.deep_supervision:
            out["aux_outputs"] = layers[:-1]
        return out


# registered under the official name (fvcore's Registry.register takes no name)
TRANSFORMER_DECODER_REGISTRY._do_register("StandardTransformerDecoder", TransformerPredictor)


def build_transformer_decoder(cfg, in_channels: int) -> nn.Module:
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    if name not in TRANSFORMER_DECODER_REGISTRY:
        raise KeyError(
            f"MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME={name!r} is not a MaskFormer transformer "
            f"decoder; known: {sorted(k for k, _ in TRANSFORMER_DECODER_REGISTRY)}"
        )
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels)
