"""Point heads: per-point MLPs over fine-grained features (+ the coarse prediction).

Shape legend:
    R   boxes (instance) or images (semantic)
    P   points per box / image
    C   fine-grained feature channels
    Kc  channels of the coarse prediction
    K   classes predicted by the point head (1 if class-agnostic)
"""
from __future__ import annotations

import math

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry
from torch import nn
from torch.nn import functional as F

__all__ = ["POINT_HEAD_REGISTRY", "StandardPointHead", "ImplicitPointHead", "build_point_head"]

POINT_HEAD_REGISTRY = Registry("POINT_HEAD")
POINT_HEAD_REGISTRY.__doc__ = """
Point heads of PointRend, by ``MODEL.POINT_HEAD.NAME``. Called as
``obj(cfg, input_shape, **kwargs)``; ``input_shape.channels`` is C.
"""


def _num_classes(cfg, num_classes):
    if num_classes is not None:
        return num_classes
    return 1 if cfg.MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK else cfg.MODEL.POINT_HEAD.NUM_CLASSES


@POINT_HEAD_REGISTRY.register()
class StandardPointHead(nn.Module):
    """PointRend's point head: NUM_FC shared 1x1 layers (an MLP applied to each point),
    the coarse prediction concatenated to the input of every layer (or only the first).

    Parameter names are detectron2's (``fc1`` ... ``fcN``, ``predictor``), so its
    checkpoints load as they are; d2ext's earlier ``fcs.{i}`` are renamed on load."""

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        coarse_channels: int,
        num_classes: int,
        fc_dim: int = 256,
        num_fc: int = 3,
        coarse_pred_each_layer: bool = True,
    ):
        """
        Args:
            in_channels: C, fine-grained feature channels.
            coarse_channels: Kc, channels of the coarse prediction fed at each point.
            num_classes: K outputs per point (1: class-agnostic).
        """
        super().__init__()
        self.coarse_pred_each_layer = coarse_pred_each_layer
        self.num_classes = num_classes
        self.fc_layers = []  # plain list: registered as fc1 ... fcN
        dim = in_channels + coarse_channels
        for i in range(num_fc):
            fc = nn.Conv1d(dim, fc_dim, kernel_size=1)
            weight_init.c2_msra_fill(fc)
            self.add_module(f"fc{i + 1}", fc)
            self.fc_layers.append(fc)
            dim = fc_dim + (coarse_channels if coarse_pred_each_layer else 0)
        self.predictor = nn.Conv1d(dim, num_classes, kernel_size=1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec, *, coarse_channels: int, num_classes=None):
        return {
            "in_channels": input_shape.channels,
            "coarse_channels": coarse_channels,
            "num_classes": _num_classes(cfg, num_classes),
            "fc_dim": cfg.MODEL.POINT_HEAD.FC_DIM,
            "num_fc": cfg.MODEL.POINT_HEAD.NUM_FC,
            "coarse_pred_each_layer": cfg.MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER,
        }

    def forward(self, fine_features: torch.Tensor, coarse_features: torch.Tensor) -> torch.Tensor:
        """(R, C, P) fine, (R, Kc, P) coarse -> (R, K, P) logits."""
        x = torch.cat([fine_features, coarse_features], dim=1)
        if not self.coarse_pred_each_layer or not self.fc_layers:
            for fc in self.fc_layers:
                x = F.relu(fc(x))
            return self.predictor(x)
        # the concatenating form also when tracing (export): the in-place buffer
        # below aliases slices, which traced graphs do not reproduce
        if torch.is_grad_enabled() or torch.jit.is_tracing():
            for fc in self.fc_layers:
                x = torch.cat([F.relu(fc(x)), coarse_features], dim=1)
            return self.predictor(x)
        # Inference: every hidden layer's input is one buffer, [relu(fc(.)), coarse], whose
        # coarse part is written once and whose first part each layer overwrites in place
        # (the same values as concatenating at every layer, without the copies).
        fc_dim = self.fc_layers[0].out_channels
        hidden = x.new_empty(x.shape[0], fc_dim + coarse_features.shape[1], x.shape[2])
        hidden[:, fc_dim:] = coarse_features
        for fc in self.fc_layers:
            torch.clamp_min(fc(x), 0, out=hidden[:, :fc_dim])
            x = hidden
        return self.predictor(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoint upgrade: d2ext's earlier names fcs.{i} -> fc{i+1}.
        for key in list(state_dict.keys()):
            if key.startswith(prefix + "fcs."):
                index, rest = key[len(prefix + "fcs."):].split(".", 1)
                state_dict[f"{prefix}fc{int(index) + 1}.{rest}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@POINT_HEAD_REGISTRY.register()
class ImplicitPointHead(nn.Module):
    """Implicit PointRend's point head: an MLP whose parameters are given per box.

    Input of each point: a Fourier encoding of the point's box coordinates (if
    ``pos_enc_enabled``) followed by the fine-grained features (if
    ``image_feature_enabled``); at least one of the two. The MLP has ``num_fc``
    hidden layers of ``channels`` and an output layer of K (``num_fc + 1`` layers).

    Layout of ``params`` (R, num_params), the per-box parameters predicted by the
    mask head: the weights of every layer in layer order, each (out, in) row-major,
    then the biases of every layer in layer order. This is detectron2's
    ImplicitPointHead (its ``_parse_params``), so its checkpoints' parameter heads
    drive this MLP unchanged. Layers run as batched matrix products over boxes.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        channels: int = 256,
        num_fc: int = 3,
        image_feature_enabled: bool = True,
        pos_enc_enabled: bool = True,
        pos_enc_dim: int = 256,
    ):
        """
        Args:
            in_channels: C, fine-grained feature channels.
            num_classes: K outputs per point (1: class-agnostic).
            channels: hidden width (POINT_HEAD.FC_DIM).
            num_fc: hidden layers (POINT_HEAD.NUM_FC).
            pos_enc_dim: D, channels of the position encoding (D/2 frequencies).
        """
        super().__init__()
        if num_fc < 1:
            raise ValueError(f"MODEL.POINT_HEAD.NUM_FC must be >= 1 for ImplicitPointHead, got {num_fc}")
        if not (image_feature_enabled or pos_enc_enabled):
            raise ValueError(
                "ImplicitPointHead needs an input: set MODEL.IMPLICIT_POINTREND.IMAGE_FEATURE_ENABLED "
                "or MODEL.IMPLICIT_POINTREND.POS_ENC_ENABLED"
            )
        self.num_classes = num_classes
        self.image_feature_enabled = image_feature_enabled
        self.pos_enc_enabled = pos_enc_enabled
        if pos_enc_enabled:
            # Fixed random Fourier features: gaussian frequencies, as a buffer so
            # that checkpoints carry them (detectron2's name for it).
            freqs = torch.randn(2, pos_enc_dim // 2, generator=torch.Generator().manual_seed(0))
            self.register_buffer("positional_encoding_gaussian_matrix", freqs, persistent=True)
        dim = (in_channels if image_feature_enabled else 0) + (pos_enc_dim if pos_enc_enabled else 0)
        dims = [dim] + [channels] * num_fc + [num_classes]
        self.layer_shapes = list(zip(dims[1:], dims[:-1]))  # (out, in) per layer
        self.num_params = sum(o * i + o for o, i in self.layer_shapes)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec, *, num_classes=None, **kwargs):
        return {
            "in_channels": input_shape.channels,
            "num_classes": _num_classes(cfg, num_classes),
            "channels": cfg.MODEL.POINT_HEAD.FC_DIM,
            "num_fc": cfg.MODEL.POINT_HEAD.NUM_FC,
            "image_feature_enabled": cfg.MODEL.IMPLICIT_POINTREND.IMAGE_FEATURE_ENABLED,
            "pos_enc_enabled": cfg.MODEL.IMPLICIT_POINTREND.POS_ENC_ENABLED,
        }

    def split_params(self, params: torch.Tensor):
        """(R, num_params) -> [(R, out, in) weights], [(R, out, 1) biases], one per layer."""
        r = params.shape[0]
        sizes = [o * i for o, i in self.layer_shapes] + [o for o, _ in self.layer_shapes]
        chunks = params.split(sizes, dim=1)
        n = len(self.layer_shapes)
        weights = [w.reshape(r, o, i) for w, (o, i) in zip(chunks[:n], self.layer_shapes)]
        biases = [b.reshape(r, o, 1) for b, (o, _) in zip(chunks[n:], self.layer_shapes)]
        return weights, biases

    def initial_params(self) -> torch.Tensor:
        """(num_params,) in the layout of ``params``: MSRA-initialized hidden weights,
        a near-zero output layer, zero biases."""
        g = torch.Generator().manual_seed(0)
        weights = []
        for i, (o, n) in enumerate(self.layer_shapes):
            std = math.sqrt(2.0 / n) if i < len(self.layer_shapes) - 1 else 0.001
            weights.append(torch.randn(o * n, generator=g) * std)
        return torch.cat(weights + [torch.zeros(o) for o, _ in self.layer_shapes])

    def encode_positions(self, coords: torch.Tensor) -> torch.Tensor:
        """(R, P, 2) box coordinates in [0, 1] -> (R, D, P) Fourier features [sin, cos]."""
        freqs = self.positional_encoding_gaussian_matrix.to(coords.dtype)
        phase = 2 * math.pi * ((2 * coords - 1) @ freqs)  # (R, P, D/2)
        return torch.cat([phase.sin(), phase.cos()], dim=2).transpose(1, 2)

    def forward(self, fine_features, coords: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """
        Args:
            fine_features: (R, C, P) (None / ignored if image features are disabled).
            coords: (R, P, 2) box coordinates of the points.
            params: (R, num_params) per-box MLP parameters.
        Returns:
            (R, K, P) logits.
        """
        inputs = []
        if self.pos_enc_enabled:
            inputs.append(self.encode_positions(coords))
        if self.image_feature_enabled:
            inputs.append(fine_features)
        x = torch.cat(inputs, dim=1) if len(inputs) > 1 else inputs[0]
        weights, biases = self.split_params(params)
        for i, (w, b) in enumerate(zip(weights, biases)):
            x = torch.baddbmm(b, w, x)
            if i < len(weights) - 1:
                x = F.relu(x)
        return x

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoint upgrade: d2ext's earlier buffer name.
        old = prefix + "pos_enc_freqs"
        if old in state_dict:
            state_dict[prefix + "positional_encoding_gaussian_matrix"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def build_point_head(cfg, input_shape: ShapeSpec, **kwargs) -> nn.Module:
    return POINT_HEAD_REGISTRY.get(cfg.MODEL.POINT_HEAD.NAME)(cfg, input_shape, **kwargs)
