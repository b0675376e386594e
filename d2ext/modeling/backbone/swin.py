"""Swin Transformer (Liu et al., 2021) as a detectron2 backbone, as MaskFormer and Mask2Former use it.

Registered as ``D2SwinTransformer`` with the official ``MODEL.SWIN.*`` keys and
the official parameter names (``patch_embed.proj``, ``layers.{i}.blocks.{j}.attn.qkv``,
``layers.{i}.downsample.reduction``, ``norm{i}``, ...), so the official configs
build and both the converted ImageNet checkpoints and the published
MaskFormer / Mask2Former ``.pkl`` files load through ``MODEL.WEIGHTS``.

Shapes: N images, C channels of a stage, H x W its token grid, w the window
size, nW windows per image, L = w * w tokens per window, h heads.
Tokens travel as (N, H * W, C) between blocks and as (N * nW, L, C) inside attention.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

__all__ = ["D2SwinTransformer", "add_swin_config"]

_STRIDES = (4, 8, 16, 32)  # res2..res5 with the official patch size 4
# The official additive attention mask: large and negative, not -inf.
_MASKED = -100.0


def add_swin_config(cfg: CN) -> None:
    """Adds ``MODEL.SWIN`` with the official names and defaults (MaskFormer's, plus
    Mask2Former's USE_CHECKPOINT); changes nothing else."""
    cfg.MODEL.SWIN = CN()
    cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE = 224  # read only with APE: the grid of absolute_pos_embed
    cfg.MODEL.SWIN.PATCH_SIZE = 4
    cfg.MODEL.SWIN.EMBED_DIM = 96
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]
    cfg.MODEL.SWIN.WINDOW_SIZE = 7
    cfg.MODEL.SWIN.MLP_RATIO = 4.0
    cfg.MODEL.SWIN.QKV_BIAS = True
    cfg.MODEL.SWIN.QK_SCALE = None  # None: head_dim ** -0.5
    cfg.MODEL.SWIN.DROP_RATE = 0.0
    cfg.MODEL.SWIN.ATTN_DROP_RATE = 0.0
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.3
    cfg.MODEL.SWIN.APE = False
    cfg.MODEL.SWIN.PATCH_NORM = True
    cfg.MODEL.SWIN.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # Recompute each block in the backward pass (less memory, slower).
    cfg.MODEL.SWIN.USE_CHECKPOINT = False


class DropPath(nn.Module):
    """Stochastic depth: in training, zeroes a residual branch per sample with
    probability ``p`` and scales the kept ones by 1 / (1 - p)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(N, H, W, C) with H, W multiples of w -> (N * nW, w * w, C), windows in row-major order."""
    n, h, wd, c = x.shape
    x = x.view(n, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def window_merge(windows: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    """The inverse of :func:`window_partition`: (N * nW, w * w, C) -> (N, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, wd, c)


def relative_position_index(w: int) -> torch.Tensor:
    """(w * w, w * w) int64: the row of the (2w - 1)^2 bias table for each (query, key) pair."""
    ys, xs = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + (w - 1)  # in [0, 2w - 2]
    dx = xs[:, None] - xs[None, :] + (w - 1)
    return dy * (2 * w - 1) + dx


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned bias per relative offset and head."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # Persistent: the official checkpoints carry it, so they load without unexpected keys.
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02, a=-2.0, b=2.0)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (N * nW, L, C); mask: (nW, L, L) additive, or None -> (N * nW, L, C)."""
        b, length, c = x.shape
        nw = 1 if mask is None else mask.shape[0]
        # (3, N, nW, h, L, C / h)
        qkv = self.qkv(x).view(b // nw, nw, length, 3, self.num_heads, c // self.num_heads).permute(3, 0, 1, 4, 2, 5)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(length, length, self.num_heads).permute(2, 0, 1)  # (h, L, L)
        bias = bias if mask is None else bias + mask[:, None]  # (nW, h, L, L)
        out = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=bias.to(qkv.dtype),  # autocast: the projections dtype
            dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale,
        )
        out = out.permute(0, 1, 3, 2, 4).reshape(b, length, c)
        return self.proj_drop(self.proj(out))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention and an MLP, each pre-normed with a residual.

    The grid is padded (with zeros, after norm1) to a window multiple; a
    shifted block rolls it by half a window and masks the pairs of tokens that
    the roll brought together from different regions.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift_size: int = 0,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, window_size {window_size})")
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, hw: Sequence[int], mask: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (N, H * W, C) on the grid hw = (H, W); mask: (nW, L, L) of the padded grid -> (N, H * W, C)."""
        n, _, c = x.shape
        h, wd = hw
        w, s = self.window_size, self.shift_size
        y = self.norm1(x).view(n, h, wd, c)
        y = F.pad(y, (0, 0, 0, (-wd) % w, 0, (-h) % w))
        hp, wp = y.shape[1:3]
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        y = self.attn(window_partition(y, w), mask if s else None)
        y = window_merge(y, w, hp, wp)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        y = y[:, :h, :wd].reshape(n, h * wd, c)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (zero-padded to even size), normed, projected 4C -> 2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        """(N, H * W, C) -> (N, ceil(H / 2) * ceil(W / 2), 2C)."""
        n, _, c = x.shape
        h, wd = hw
        x = F.pad(x.view(n, h, wd, c), (0, 0, 0, wd % 2, 0, h % 2))
        # the official order of the four neighbours: (0, 0), (1, 0), (0, 1), (1, 1)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(n, -1, 4 * c)))


def shifted_window_mask(hp: int, wp: int, w: int, s: int, device=None) -> torch.Tensor:
    """(nW, L, L): 0 where two tokens of a window of the rolled (hp, wp) grid come from
    the same region before the roll, -100 elsewhere."""
    def regions(size: int) -> torch.Tensor:  # 0, 1, 2: the bands [0, size - w), [size - w, size - s), [size - s, size)
        i = torch.arange(size, device=device)
        return (i >= size - w).long() + (i >= size - s).long()

    ids = (regions(hp)[:, None] * 3 + regions(wp)[None, :]).to(torch.float32)
    ids = window_partition(ids[None, :, :, None], w)[..., 0]  # (nW, L)
    same = ids[:, :, None] == ids[:, None, :]
    return torch.zeros(same.shape, device=device).masked_fill_(~same, _MASKED)


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks alternating plain and shifted windows, then (except the last) a patch merging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 qkv_bias: bool, qk_scale: Optional[float], drop: float, attn_drop: float,
                 drop_path: Sequence[float], downsample: bool, use_checkpoint: bool = False):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio,
                                 qkv_bias, qk_scale, drop, attn_drop, drop_path[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, hw: Sequence[int]):
        """(N, H * W, C) -> (this stage's output (N, H * W, C), the next stage's input, its grid)."""
        h, wd = hw
        w = self.window_size
        mask = shifted_window_mask(-(-h // w) * w, -(-wd // w) * w, w, self.shift_size, x.device)
        for block in self.blocks:
            if self.use_checkpoint and x.requires_grad:
                x = torch.utils.checkpoint.checkpoint(block, x, hw, mask, use_reentrant=False)
            else:
                x = block(x, hw, mask)
        if self.downsample is None:
            return x, x, hw
        return x, self.downsample(x, hw), ((h + 1) // 2, (wd + 1) // 2)


class PatchEmbed(nn.Module):
    """Non-overlapping patches (the image zero-padded to a patch multiple) -> (N, C, H / p, W / p)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, norm: bool):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        x = self.proj(F.pad(x, (0, (-x.shape[-1]) % p, 0, (-x.shape[-2]) % p)))
        if self.norm is not None:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x


@BACKBONE_REGISTRY.register()
class D2SwinTransformer(Backbone):
    """Swin Transformer with outputs "res2".."res5" at strides 4..32 and EMBED_DIM x (1, 2, 4, 8) channels.

    Every stage runs and has its output norm (``norm0``..``norm3``, as in the
    official model, so its checkpoints load); only ``out_features`` are returned.
    Linear layers keep PyTorch's default init, as the official model's do (its
    ``init_weights`` is never applied); the bias tables and the absolute
    position embedding are truncated normal with std 0.02. ImageNet weights
    come through ``MODEL.WEIGHTS`` (``tools/convert_pretrained.py --source swin``).
    """

    @configurable
    def __init__(self, *, pretrain_img_size: int = 224, patch_size: int = 4, in_chans: int = 3,
                 embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.3, ape: bool = False,
                 patch_norm: bool = True, out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
                 use_checkpoint: bool = False):
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"Swin has 4 stages: got DEPTHS {list(depths)}, NUM_HEADS {list(num_heads)}")
        names = [f"res{i + 2}" for i in range(4)]
        unknown = [f for f in out_features if f not in names]
        if unknown:
            raise ValueError(f"MODEL.SWIN.OUT_FEATURES {list(out_features)}: {unknown} not among {names}")
        self.num_features = [embed_dim * 2 ** i for i in range(4)]
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        if ape:
            grid = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02, a=-2.0, b=2.0)
        else:
            self.absolute_pos_embed = None
        self.pos_drop = nn.Dropout(drop_rate)
        # deeper blocks drop more; on the CPU, also when built under torch.device("meta")
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        starts = [sum(depths[:i]) for i in range(5)]
        self.layers = nn.ModuleList(
            BasicLayer(self.num_features[i], depths[i], num_heads[i], window_size, mlp_ratio, qkv_bias, qk_scale,
                       drop_rate, attn_drop_rate, rates[starts[i]:starts[i + 1]], downsample=i < 3,
                       use_checkpoint=use_checkpoint)
            for i in range(4)
        )
        for i, channels in enumerate(self.num_features):
            self.add_module(f"norm{i}", nn.LayerNorm(channels))
        self._out_features = [f for f in names if f in out_features]
        self._out_feature_strides = {name: _STRIDES[i] for i, name in enumerate(names)}
        self._out_feature_channels = {name: self.num_features[i] for i, name in enumerate(names)}

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        s = cfg.MODEL.SWIN
        return {
            "pretrain_img_size": s.PRETRAIN_IMG_SIZE, "patch_size": s.PATCH_SIZE, "in_chans": input_shape.channels,
            "embed_dim": s.EMBED_DIM, "depths": list(s.DEPTHS), "num_heads": list(s.NUM_HEADS),
            "window_size": s.WINDOW_SIZE, "mlp_ratio": s.MLP_RATIO, "qkv_bias": s.QKV_BIAS,
            "qk_scale": s.QK_SCALE, "drop_rate": s.DROP_RATE, "attn_drop_rate": s.ATTN_DROP_RATE,
            "drop_path_rate": s.DROP_PATH_RATE, "ape": s.APE, "patch_norm": s.PATCH_NORM,
            "out_features": list(s.OUT_FEATURES), "use_checkpoint": s.get("USE_CHECKPOINT", False),
        }

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, C_in, H, W) -> {name: (N, C, ceil(H / stride), ceil(W / stride))} for the out features."""
        if x.dim() != 4:
            raise ValueError(f"D2SwinTransformer takes (N, C, H, W) inputs, got {tuple(x.shape)}")
        x = self.patch_embed(x)
        hw = tuple(x.shape[2:])
        if self.absolute_pos_embed is not None:
            x = x + F.interpolate(self.absolute_pos_embed, size=hw, mode="bicubic")
        x = self.pos_drop(x.flatten(2).transpose(1, 2))
        outputs: Dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            out, x, next_hw = layer(x, hw)
            name = f"res{i + 2}"
            if name in self._out_features:
                out = getattr(self, f"norm{i}")(out)
                outputs[name] = out.view(-1, *hw, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
            hw = next_hw
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        return 32
