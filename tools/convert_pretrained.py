#!/usr/bin/env python
"""Convert ImageNet weights (torchvision ResNets, microsoft's Swin) to a detectron2 model-zoo pickle for MODEL.WEIGHTS.

    python tools/convert_pretrained.py --source torchvision --input resnet50.pth \\
        --output R-50.pkl [--arch resnet50] [--check-config CFG.yaml ...]
    python tools/convert_pretrained.py --source swin --input swin_tiny_patch4_window7_224.pth \\
        --output swin_tiny_patch4_window7_224.pkl [--arch swin_tiny] [--check-config CFG.yaml ...]

The input is a torchvision ResNet state dict (``torch.save(model.state_dict())``,
as torchvision's download URLs serve; ``{"state_dict": ...}`` / ``{"model": ...}``
and a ``module.`` prefix are accepted too). Names map as

    conv1 / bn1                      -> stem.conv1 / stem.conv1.norm
    layerN.M.convK / .bnK            -> res<N+1>.M.convK / .convK.norm
    layerN.M.downsample.0 / .1       -> res<N+1>.M.shortcut / .shortcut.norm
    fc.*, *.num_batches_tracked      -> dropped (no counterpart in a detectron2 backbone)

Basic blocks (ResNet-18/34) and bottlenecks (ResNet-50/101/152, ResNeXt, wide
ResNets) are read off the shapes; ``--arch`` only checks that they are what you
expect. Any other key is an error naming it: detectron2 would skip it silently
(and fill a missing batch-norm statistic with 0 / 1 without a word), so the tool
refuses incomplete or foreign state dicts instead.

The output ``{"model": {name: ndarray}, "__author__": "torchvision",
"matching_heuristics": True}`` is read by DetectionCheckpointer as is, and the
heuristic maps each name to the model key it is a dotted suffix of
(``backbone.bottom_up.res2.0.conv1.weight`` in FPN models, ``backbone.res2...``
for a plain ResNet backbone, ``backbone.resnet.res2...`` in ICNet).

torchvision differs from detectron2's own (MSRA) ImageNet models in two ways
the config has to follow, and the tool prints the lines to use:
its bottleneck strides in the 3x3 conv (``MODEL.RESNETS.STRIDE_IN_1X1: False``),
and it was trained on RGB inputs in [0, 1] normalised by the ImageNet mean/std
(``INPUT.FORMAT: "RGB"``, ``MODEL.PIXEL_MEAN`` / ``PIXEL_STD`` in 0-255 units).

Each ``--check-config`` is built on the CPU and the pickle loaded into it with
DetectionCheckpointer: every key of its ResNet filled, every converted key used,
equal values, and the config's STRIDE_IN_1X1 / INPUT.FORMAT / PIXEL_MEAN /
PIXEL_STD those above. Exit status: 0 done, 1 a config check failed, 2 bad input.

``--source swin``: the ImageNet checkpoints of microsoft/Swin-Transformer
(``swin_{tiny,small,base,large}_patch4_window{7,12}_{224,384}[_22k].pth``, a
dict whose ``"model"`` holds ``patch_embed.*``, ``layers.{i}.blocks.{j}.*``,
``layers.{i}.downsample.*``, ``norm.*``, ``head.*``) for the ``D2SwinTransformer``
backbone of MaskFormer / Mask2Former (d2ext.modeling.backbone.swin). The names
are already the backbone's; the tool

    head.*, norm.*                   -> dropped (the classifier and its final norm)
    layers.*.blocks.*.attn_mask      -> dropped (a buffer of the training resolution)
    absolute_pos_embed (1, L, C)     -> (1, C, sqrt(L), sqrt(L)), the backbone's layout
    relative_position_index          -> written for every block (recomputed; checked against the input's)
    norm0..norm3 (absent)            -> LayerNorm's initial weight 1 / bias 0

The output norms norm0..norm3 exist only in the detection backbone: the official
recipe (Mask2Former's ``convert-pretrained-swin-model-to-d2.py``, which pickles
the dict unchanged) starts them from this init too; writing them makes every
backbone key come from the file. The shape (EMBED_DIM, DEPTHS, NUM_HEADS,
WINDOW_SIZE, ...) is read off the weights and printed as MODEL.SWIN lines;
``--check-config`` checks the config's MODEL.SWIN against it. Microsoft
trained on RGB with the ImageNet mean / std (as torchvision).
"""
import argparse
import logging
import os
import pickle
import re
import sys
import tempfile
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

logger = logging.getLogger("d2ext.convert_pretrained")


@dataclass(frozen=True)
class Source:
    """What a source's ImageNet training used: the preprocessing a config must repeat."""

    author: str
    input_format: str
    pixel_mean: Tuple[float, float, float]  # in 0-255 units, in input_format's channel order
    pixel_std: Tuple[float, float, float]


# torchvision: RGB in [0, 1], normalised by mean (0.485, 0.456, 0.406) and std
# (0.229, 0.224, 0.225); detectron2 subtracts / divides in 0-255 units.
SOURCES = {
    "torchvision": Source("torchvision", "RGB", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    # microsoft/Swin-Transformer: the same ImageNet preprocessing
    "swin": Source("Swin-Transformer", "RGB", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}

# Blocks per stage (layer1..layer4) -> MODEL.RESNETS.DEPTH.
DEPTHS = {
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152,
}

# torchvision's model names -> (depth, NUM_GROUPS, WIDTH_PER_GROUP), for --arch.
ARCHS = {
    "resnet18": (18, 1, 64),
    "resnet34": (34, 1, 64),
    "resnet50": (50, 1, 64),
    "resnet101": (101, 1, 64),
    "resnet152": (152, 1, 64),
    "resnext50_32x4d": (50, 32, 4),
    "resnext101_32x8d": (101, 32, 8),
    "resnext101_64x4d": (101, 64, 4),
    "wide_resnet50_2": (50, 1, 128),
    "wide_resnet101_2": (101, 1, 128),
}

_BN = ("weight", "bias", "running_mean", "running_var")
_STEM = re.compile(r"^(conv1\.weight|bn1\.(weight|bias|running_mean|running_var))$")
_BLOCK = re.compile(
    r"^layer([1-4])\.(\d+)\.(conv[1-3]\.weight|bn[1-3]\.(?:weight|bias|running_mean|running_var)"
    r"|downsample\.0\.weight|downsample\.1\.(?:weight|bias|running_mean|running_var))$"
)
_DROPPED = re.compile(r"^(fc\.(weight|bias)|(.+\.)?(bn[1-3]|downsample\.1)\.num_batches_tracked)$")


class ConversionError(ValueError):
    """Bad input; the message names the file, the option or the keys."""


@dataclass
class ResNetShape:
    """The detectron2 MODEL.RESNETS settings that build the converted ResNet."""

    block: str  # "basic" or "bottleneck"
    depth: int
    stem_out_channels: int
    res2_out_channels: int
    num_groups: int = 1
    width_per_group: int = 64


@dataclass
class Conversion:
    arrays: Dict[str, np.ndarray]  # an OrderedDict, in the input's order
    shape: ResNetShape
    dropped: List[str] = field(default_factory=list)


def load_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a torchvision ResNet checkpoint file."""
    if not os.path.isfile(path):
        raise ConversionError(f"--input {path}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, a pickle with code in it
        raise ConversionError(f"--input {path}: not a readable torch state dict ({type(e).__name__}: {e})") from e
    if isinstance(data, dict):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data:
        raise ConversionError(f"--input {path}: expected a (non-empty) state dict, got {type(data).__name__}")
    if all(k.startswith("module.") for k in data):  # saved from DistributedDataParallel
        data = {k[len("module."):]: v for k, v in data.items()}
    not_tensors = [k for k, v in data.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ConversionError(f"--input {path}: not tensors: {_names(not_tensors)}")
    return data


def _names(keys: List[str], limit: int = 10) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _target(key: str) -> str:
    """The detectron2 name of a torchvision key already matched by _STEM or _BLOCK."""
    if key == "conv1.weight":
        return "stem.conv1.weight"
    if key.startswith("bn1."):
        return "stem.conv1.norm." + key[len("bn1."):]
    stage, block, rest = _BLOCK.match(key).groups()
    prefix = f"res{int(stage) + 1}.{block}."
    rest = re.sub(r"^bn([1-3])\.", r"conv\1.norm.", rest)
    rest = rest.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
    return prefix + rest


def convert_torchvision_resnet(state: Dict[str, torch.Tensor], source: str = "input") -> Conversion:
    """Renames a torchvision ResNet state dict to detectron2's ResNet names and reads its shape."""
    unknown = [k for k in state if not (_STEM.match(k) or _BLOCK.match(k) or _DROPPED.match(k))]
    if unknown:
        raise ConversionError(
            f"{source}: keys that are not part of a torchvision ResNet (conv1, bn1, layer1-4, fc): "
            f"{_names(unknown)}"
        )
    blocks: Dict[int, set] = defaultdict(set)
    for key in state:
        m = _BLOCK.match(key)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
    if sorted(blocks) != [1, 2, 3, 4]:
        raise ConversionError(f"{source}: expected layer1..layer4, found layers {sorted(blocks)}")
    counts = tuple(len(blocks[i]) for i in (1, 2, 3, 4))
    for i in (1, 2, 3, 4):
        if sorted(blocks[i]) != list(range(counts[i - 1])):
            raise ConversionError(f"{source}: layer{i} blocks are not numbered 0..n-1: {sorted(blocks[i])}")
    kind = "bottleneck" if any(re.match(r"^layer\d\.\d+\.conv3\.", k) for k in state) else "basic"
    convs = (1, 2, 3) if kind == "bottleneck" else (1, 2)

    # Everything detectron2 needs, present: its loader would fill a missing
    # batch-norm statistic with 0 / 1 and only log a missing weight.
    expected = ["conv1.weight"] + [f"bn1.{s}" for s in _BN]
    for i in (1, 2, 3, 4):
        for b in range(counts[i - 1]):
            p = f"layer{i}.{b}."
            expected += [f"{p}conv{k}.weight" for k in convs] + [f"{p}bn{k}.{s}" for k in convs for s in _BN]
            if f"{p}downsample.0.weight" in state or b == 0 and i > 1:
                expected += [f"{p}downsample.0.weight"] + [f"{p}downsample.1.{s}" for s in _BN]
    missing = [k for k in expected if k not in state]
    if missing:
        raise ConversionError(f"{source}: incomplete {kind}-block ResNet, missing {_names(missing)}")
    extra = [k for k in state if not _DROPPED.match(k) and k not in set(expected)]
    if extra:  # e.g. conv3 in only some blocks
        raise ConversionError(f"{source}: keys that do not fit a {kind}-block ResNet: {_names(extra)}")

    depth = DEPTHS.get((kind, counts))
    if depth is None:
        known = ", ".join(f"{d} ({k}, {c})" for (k, c), d in DEPTHS.items())
        raise ConversionError(
            f"{source}: {kind} blocks per stage {counts} are no ResNet depth detectron2 builds: {known}"
        )
    conv1, first_conv2 = state["layer1.0.conv1.weight"], state["layer1.0.conv2.weight"]
    shape = ResNetShape(
        block=kind,
        depth=depth,
        stem_out_channels=int(state["conv1.weight"].shape[0]),
        res2_out_channels=int(state[f"layer1.0.conv{convs[-1]}.weight"].shape[0]),
    )
    if kind == "bottleneck":
        bottleneck_channels = int(conv1.shape[0])
        shape.num_groups = bottleneck_channels // int(first_conv2.shape[1])
        shape.width_per_group = bottleneck_channels // shape.num_groups

    arrays: "OrderedDict[str, np.ndarray]" = OrderedDict()
    dropped = []
    for key, value in state.items():
        if _DROPPED.match(key):
            dropped.append(key)
        else:
            arrays[_target(key)] = value.detach().cpu().numpy().copy()
    return Conversion(arrays=arrays, shape=shape, dropped=dropped)


def check_arch(shape: ResNetShape, arch: str) -> None:
    """Raises unless ``shape`` is torchvision's ``arch``."""
    if arch not in ARCHS:
        raise ConversionError(f"--arch {arch}: unknown; one of {', '.join(ARCHS)}")
    found = (shape.depth, shape.num_groups, shape.width_per_group)
    if found != ARCHS[arch]:
        raise ConversionError(
            f"--arch {arch}: expects depth / groups / width per group {ARCHS[arch]}, the input has {found}"
        )


def write_pickle(arrays: Dict[str, np.ndarray], output: str, author: str) -> None:
    """The detectron2 model-zoo pickle; written beside ``output`` and renamed (never a truncated file)."""
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    data = {"model": arrays, "__author__": author, "matching_heuristics": True}
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".pkl.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def config_lines(shape: ResNetShape, source: Source, weights: str) -> str:
    """The yaml a config needs to use the converted weights."""
    fmt = lambda xs: "[" + ", ".join(f"{x:.3f}" for x in xs) + "]"  # noqa: E731
    lines = [
        "MODEL:",
        f'  WEIGHTS: "{weights}"',
        f"  PIXEL_MEAN: {fmt(source.pixel_mean)}",
        f"  PIXEL_STD: {fmt(source.pixel_std)}",
        "  RESNETS:",
        f"    DEPTH: {shape.depth}",
        f"    STEM_OUT_CHANNELS: {shape.stem_out_channels}",
        f"    RES2_OUT_CHANNELS: {shape.res2_out_channels}",
    ]
    if shape.block == "bottleneck":
        lines += [
            f"    STRIDE_IN_1X1: False  # {source.author} strides in the 3x3 conv",
            f"    NUM_GROUPS: {shape.num_groups}",
            f"    WIDTH_PER_GROUP: {shape.width_per_group}",
        ]
    lines += ["INPUT:", f'  FORMAT: "{source.input_format}"']
    return "\n".join(lines)


def preprocessing_problems(cfg, shape, source: Source) -> List[str]:
    """What in ``cfg`` contradicts how ``source``'s weights were trained."""
    problems = []
    if isinstance(shape, ResNetShape) and shape.block == "bottleneck" and cfg.MODEL.RESNETS.STRIDE_IN_1X1:
        problems.append(f"MODEL.RESNETS.STRIDE_IN_1X1 is True; {source.author} weights need False")
    if cfg.INPUT.FORMAT != source.input_format:
        problems.append(f"INPUT.FORMAT is {cfg.INPUT.FORMAT!r}; {source.author} weights need {source.input_format!r}")
    for key, want in (("PIXEL_MEAN", source.pixel_mean), ("PIXEL_STD", source.pixel_std)):
        have = list(getattr(cfg.MODEL, key))
        if len(have) != len(want) or not np.allclose(have, want, atol=1e-3):
            problems.append(f"MODEL.{key} is {have}; {source.author} weights need {list(want)}")
    return problems


def load_check_config(config_file: str):
    """A --check-config file's config for a CPU build without weights (every method's keys known)."""
    import d2ext_projects  # noqa: F401  (d2ext first, then every method's config keys and models)
    from d2ext.engine.setup import load_cfg

    if not os.path.isfile(config_file):
        raise ConversionError(f"--check-config {config_file}: no such config file")
    return load_cfg(config_file, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])


def check_config(config_file: str, weights: str, shape: ResNetShape, source: Source):
    """Builds ``config_file``'s model on the CPU and loads ``weights`` into it; (table, problems)."""
    from detectron2.modeling import build_model

    from d2ext_projects.r2o.export import check_export, format_check

    cfg = load_check_config(config_file)
    check = check_export(build_model(cfg), weights, config=config_file)
    return format_check(check), check.problems() + preprocessing_problems(cfg, shape, source)


# --- Swin (microsoft/Swin-Transformer) -> D2SwinTransformer ----------------------------

# microsoft's model names -> (EMBED_DIM, DEPTHS), for --arch.
SWIN_ARCHS = {
    "swin_tiny": (96, (2, 2, 6, 2)),
    "swin_small": (96, (2, 2, 18, 2)),
    "swin_base": (128, (2, 2, 18, 2)),
    "swin_large": (192, (2, 2, 18, 2)),
}
_SWIN_BLOCK_PARTS = (
    "norm1.weight", "norm1.bias", "attn.relative_position_bias_table", "attn.qkv.weight", "attn.proj.weight",
    "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
)
_SWIN_KEY = re.compile(
    r"^(patch_embed\.(proj|norm)\.(weight|bias)|absolute_pos_embed"
    r"|layers\.([0-3])\.blocks\.(\d+)\.(" + "|".join(re.escape(p) for p in _SWIN_BLOCK_PARTS)
    + r"|attn\.qkv\.bias|attn\.relative_position_index)"
    r"|layers\.([0-2])\.downsample\.(reduction\.weight|norm\.weight|norm\.bias))$"
)
_SWIN_DROPPED = re.compile(r"^(head\.(weight|bias)|norm\.(weight|bias)|layers\.[0-3]\.blocks\.\d+\.attn_mask)$")


@dataclass
class SwinShape:
    """The MODEL.SWIN settings that build the converted Swin."""

    embed_dim: int
    depths: Tuple[int, ...]
    num_heads: Tuple[int, ...]
    window_size: int
    patch_size: int
    mlp_ratio: float
    qkv_bias: bool
    patch_norm: bool
    ape: bool
    pretrain_img_size: Optional[int] = None  # only with ape: the grid of absolute_pos_embed x patch size

    def config(self) -> Dict[str, object]:
        """{MODEL.SWIN key: value} for every setting read off the weights."""
        out = {
            "EMBED_DIM": self.embed_dim, "DEPTHS": list(self.depths), "NUM_HEADS": list(self.num_heads),
            "WINDOW_SIZE": self.window_size, "PATCH_SIZE": self.patch_size, "MLP_RATIO": self.mlp_ratio,
            "QKV_BIAS": self.qkv_bias, "PATCH_NORM": self.patch_norm, "APE": self.ape,
        }
        if self.ape:
            out["PRETRAIN_IMG_SIZE"] = self.pretrain_img_size
        return out


def convert_swin(state: Dict[str, torch.Tensor], source: str = "input") -> Conversion:
    """Microsoft's Swin classification state dict -> D2SwinTransformer's arrays and shape."""
    from d2ext.modeling.backbone.swin import relative_position_index

    unknown = [k for k in state if not (_SWIN_KEY.match(k) or _SWIN_DROPPED.match(k))]
    if unknown:
        raise ConversionError(
            f"{source}: keys that are not part of a microsoft Swin Transformer (patch_embed, layers.0-3, "
            f"norm, head): {_names(unknown)}"
        )
    if "patch_embed.proj.weight" not in state:
        raise ConversionError(f"{source}: no patch_embed.proj.weight: not a Swin Transformer state dict")
    blocks: Dict[int, set] = defaultdict(set)
    for key in state:
        m = re.match(r"^layers\.([0-3])\.blocks\.(\d+)\.", key)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
    if sorted(blocks) != [0, 1, 2, 3]:
        raise ConversionError(f"{source}: expected layers.0..layers.3, found layers {sorted(blocks)}")
    depths = tuple(len(blocks[i]) for i in range(4))
    for i in range(4):
        if sorted(blocks[i]) != list(range(depths[i])):
            raise ConversionError(f"{source}: layers.{i} blocks are not numbered 0..n-1: {sorted(blocks[i])}")

    proj = state["patch_embed.proj.weight"]
    embed_dim, patch_size = int(proj.shape[0]), int(proj.shape[-1])
    qkv_bias = "layers.0.blocks.0.attn.qkv.bias" in state
    patch_norm = "patch_embed.norm.weight" in state
    expected = ["patch_embed.proj.weight", "patch_embed.proj.bias"]
    expected += ["patch_embed.norm.weight", "patch_embed.norm.bias"] if patch_norm else []
    for i in range(4):
        for b in range(depths[i]):
            p = f"layers.{i}.blocks.{b}."
            expected += [p + part for part in _SWIN_BLOCK_PARTS] + ([p + "attn.qkv.bias"] if qkv_bias else [])
        if i < 3:
            expected += [f"layers.{i}.downsample.{k}" for k in ("reduction.weight", "norm.weight", "norm.bias")]
    missing = [k for k in expected if k not in state]
    if missing:
        raise ConversionError(f"{source}: incomplete Swin Transformer, missing {_names(missing)}")

    table = state["layers.0.blocks.0.attn.relative_position_bias_table"]
    window_size = (int(round(table.shape[0] ** 0.5)) + 1) // 2
    num_heads = tuple(int(state[f"layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1]) for i in range(4))
    hidden = int(state["layers.0.blocks.0.mlp.fc1.weight"].shape[0])
    shape = SwinShape(embed_dim=embed_dim, depths=depths, num_heads=num_heads, window_size=window_size,
                      patch_size=patch_size, mlp_ratio=hidden / embed_dim, qkv_bias=qkv_bias,
                      patch_norm=patch_norm, ape="absolute_pos_embed" in state)
    if (2 * window_size - 1) ** 2 != table.shape[0]:
        raise ConversionError(f"{source}: relative_position_bias_table has {table.shape[0]} rows, no (2w - 1)^2")

    index = relative_position_index(window_size)
    arrays: "OrderedDict[str, np.ndarray]" = OrderedDict()
    dropped = []
    for key, value in state.items():
        if _SWIN_DROPPED.match(key):
            dropped.append(key)
            continue
        if key.endswith("relative_position_index"):
            if not torch.equal(value.long(), index):
                raise ConversionError(f"{source}: {key} is not the index of a window of {window_size}")
            continue  # written below, for every block
        if key == "absolute_pos_embed" and value.dim() == 3:  # (1, L, C) in the classification model
            grid = int(round(value.shape[1] ** 0.5))
            if grid * grid != value.shape[1]:
                raise ConversionError(f"{source}: absolute_pos_embed has {value.shape[1]} positions, no square grid")
            value = value.transpose(1, 2).reshape(1, -1, grid, grid)
        arrays[key] = value.detach().cpu().numpy().copy()
        if key == "absolute_pos_embed":
            shape.pretrain_img_size = int(value.shape[-1]) * patch_size
    for i in range(4):
        for b in range(depths[i]):
            arrays[f"layers.{i}.blocks.{b}.attn.relative_position_index"] = index.numpy().copy()
    for i in range(4):
        channels = embed_dim * 2 ** i
        arrays[f"norm{i}.weight"] = np.ones(channels, dtype=np.float32)
        arrays[f"norm{i}.bias"] = np.zeros(channels, dtype=np.float32)
    return Conversion(arrays=arrays, shape=shape, dropped=dropped)


def check_swin_arch(shape: SwinShape, arch: str) -> None:
    """Raises unless ``shape`` is microsoft's ``arch``."""
    if arch not in SWIN_ARCHS:
        raise ConversionError(f"--arch {arch}: unknown for --source swin; one of {', '.join(SWIN_ARCHS)}")
    found = (shape.embed_dim, tuple(shape.depths))
    if found != SWIN_ARCHS[arch]:
        raise ConversionError(f"--arch {arch}: expects EMBED_DIM / DEPTHS {SWIN_ARCHS[arch]}, the input has {found}")


def swin_config_lines(shape: SwinShape, source: Source, weights: str) -> str:
    fmt = lambda xs: "[" + ", ".join(f"{x:.3f}" for x in xs) + "]"  # noqa: E731
    lines = [
        "MODEL:",
        f'  WEIGHTS: "{weights}"',
        f"  PIXEL_MEAN: {fmt(source.pixel_mean)}",
        f"  PIXEL_STD: {fmt(source.pixel_std)}",
        "  BACKBONE:",
        '    NAME: "D2SwinTransformer"',
        "  SWIN:",
    ]
    lines += [f"    {k}: {v}" for k, v in shape.config().items()]
    lines += ["INPUT:", f'  FORMAT: "{source.input_format}"']
    return "\n".join(lines)


def swin_config_problems(cfg, shape: SwinShape, source: Source) -> List[str]:
    """What in ``cfg`` contradicts the converted Swin or how it was trained."""
    problems = preprocessing_problems(cfg, shape, source)
    if cfg.MODEL.BACKBONE.NAME != "D2SwinTransformer":
        problems.append(f"MODEL.BACKBONE.NAME is {cfg.MODEL.BACKBONE.NAME!r}; the weights are a D2SwinTransformer")
    for key, want in shape.config().items():
        have = cfg.MODEL.SWIN[key]
        if (list(have) if isinstance(have, (list, tuple)) else have) != want:
            problems.append(f"MODEL.SWIN.{key} is {have}; the weights have {want}")
    return problems


def check_swin_config(config_file: str, weights: str, shape: SwinShape, source: Source):
    """Builds ``config_file``'s model on the CPU, loads ``weights`` with DetectionCheckpointer: (table, problems)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from d2ext.modeling.backbone.swin import D2SwinTransformer

    cfg = load_check_config(config_file)
    problems = swin_config_problems(cfg, shape, source)
    try:
        model = build_model(cfg)
    except Exception as e:  # e.g. NUM_HEADS that do not divide the channels
        return f"{config_file}: does not build", problems + [f"build: {type(e).__name__}: {e}"]
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, D2SwinTransformer)]
    if len(found) != 1:
        return f"{config_file}: {len(found)} D2SwinTransformers", problems + [
            f"the model has {len(found)} D2SwinTransformer backbones; the weights load into exactly one"
        ]
    name, swin = found[0]
    prefix = name + "." if name else ""
    with open(weights, "rb") as f:
        arrays = pickle.load(f)["model"]
    checkpointer = DetectionCheckpointer(model)
    try:
        incompatible = checkpointer._load_model(checkpointer._load_file(weights))
    except Exception as e:  # detectron2's "Cannot match one checkpoint key to multiple keys"
        return f"{config_file}: the weights do not load", problems + [f"error: {type(e).__name__}: {e}"]
    expected = swin.state_dict()
    not_loaded = set(incompatible.missing_keys)
    missing = sorted(k for k in expected if prefix + k in not_loaded)
    unused = sorted(k for k in arrays if k not in expected or k in incompatible.unexpected_keys)
    shape_mismatch = sorted(
        k for k in arrays if k in expected and tuple(arrays[k].shape) != tuple(expected[k].shape)
    )
    loaded = swin.state_dict()
    equal = [k for k in expected if k in arrays and k not in shape_mismatch
             and torch.equal(loaded[k].cpu(), torch.as_tensor(arrays[k]).to(loaded[k].dtype))]
    differ = sorted(k for k in expected if k in arrays and k not in shape_mismatch and k not in equal)
    for label, keys in (("shape mismatch", shape_mismatch), ("missing in the model's Swin", missing),
                        ("converted but unused", unused), ("loaded values differ", differ)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            problems.append(f"{label}: {shown}")
    rows = [
        ("config", config_file), ("Swin in the model", prefix.rstrip(".") or "<model>"),
        ("backbone keys", str(len(expected))), ("loaded with equal values", str(len(equal))),
        ("missing", str(len(missing))), ("unused converted", str(len(unused))),
        ("shape mismatches", str(len(shape_mismatch))), ("value mismatches", str(len(differ))),
        ("result", "FAILED" if problems else "OK"),
    ]
    width = max(len(r[0]) for r in rows)
    table = [f"| {'':{width}} | |", f"|{'-' * (width + 2)}|---|"] + [f"| {a:{width}} | {b} |" for a, b in rows]
    return "\n".join(table), problems


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help=f"where the weights come from: {', '.join(SOURCES)}")
    parser.add_argument("--input", required=True, help="the source's state dict (.pth): a ResNet, or a Swin for swin")
    parser.add_argument("--output", required=True, help="the .pkl to write (the extension tells detectron2 its format)")
    parser.add_argument("--arch", help=f"check the input is this model: {', '.join(ARCHS)}; "
                        f"for swin: {', '.join(SWIN_ARCHS)}")
    parser.add_argument("--check-config", nargs="+", action="extend", default=[], metavar="CFG",
                        help="config files to load the output into and verify")
    args = parser.parse_args(argv)
    if not args.output.endswith(".pkl"):
        parser.error(
            f"--output {args.output}: must end with .pkl (DetectionCheckpointer picks the format by extension)"
        )
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    # The check's own table says what loaded; detectron2's per-module table and
    # fvcore's list of every head key (random init by design) would bury it.
    quiet = {"detectron2.checkpoint.c2_model_loading": logging.WARNING, "fvcore.common.checkpoint": logging.ERROR}
    before = {name: logging.getLogger(name).level for name in quiet}
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)
    try:
        return _run(args)
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


def _run(args: argparse.Namespace) -> int:
    failures = []
    try:
        if args.source not in SOURCES:
            raise ConversionError(
                f"--source {args.source}: not supported; supported: {', '.join(SOURCES)} "
                "(timm is not supported: it is not installed here to test against)"
            )
        source = SOURCES[args.source]
        if args.source == "swin":
            conversion = convert_swin(load_state_dict(args.input), source=args.input)
            shape = conversion.shape
            if args.arch:
                check_swin_arch(shape, args.arch)
            write_pickle(conversion.arrays, args.output, source.author)
            print(
                f"converted {len(conversion.arrays)} arrays of a {source.author} Swin (EMBED_DIM {shape.embed_dim}, "
                f"DEPTHS {list(shape.depths)}, window {shape.window_size}) from {args.input} to {args.output}; "
                f"dropped {len(conversion.dropped)} (head, norm, attn_mask); norm0..norm3 written as LayerNorm's "
                "init (weight 1, bias 0)"
            )
            lines, check = swin_config_lines(shape, source, args.output), check_swin_config
        else:
            conversion = convert_torchvision_resnet(load_state_dict(args.input), source=args.input)
            shape = conversion.shape
            if args.arch:
                check_arch(shape, args.arch)
            write_pickle(conversion.arrays, args.output, source.author)
            print(
                f"converted {len(conversion.arrays)} arrays of a {source.author} ResNet-{shape.depth} "
                f"({shape.block} blocks) from {args.input} to {args.output}; dropped {len(conversion.dropped)} "
                "(fc, num_batches_tracked)"
            )
            if shape.block == "bottleneck":
                print(f"{source.author} bottlenecks stride in the 3x3 conv: set MODEL.RESNETS.STRIDE_IN_1X1 False")
            lines, check = config_lines(shape, source, args.output), check_config
        print(f"{source.author} was trained on {source.input_format} inputs; a config using "
              f"{args.output} needs:\n{lines}")
        for config_file in args.check_config:
            table, problems = check(config_file, args.output, shape, source)
            print(table)
            print(f"{config_file}: " + ("FAILED: " + "; ".join(problems) if problems else "OK"))
            if problems:
                failures.append(f"{config_file}: " + "; ".join(problems))
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if failures:
        print(f"error: {args.output} does not fit:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
