#!/usr/bin/env python
"""Convert ImageNet weights (torchvision / timm ResNets, microsoft / timm Swins) to a detectron2 MODEL.WEIGHTS pickle.

    python tools/convert_pretrained.py --source torchvision --input resnet50.pth \\
        --output R-50.pkl [--arch resnet50] [--check-config CFG.yaml ...]
    python tools/convert_pretrained.py --source swin --input swin_tiny_patch4_window7_224.pth \\
        --output swin_tiny_patch4_window7_224.pkl [--arch swin_tiny] [--check-config CFG.yaml ...]
    python tools/convert_pretrained.py --source timm --input model.safetensors \\
        --output R-50.pkl [--timm-model resnet50.a1_in1k] [--arch resnet50] [--check-config CFG.yaml ...]

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

``--source timm``: a state dict of timm (pytorch-image-models, tested with timm
1.0.31): ``model.safetensors`` / ``pytorch_model.bin`` as timm's weights on the
Hugging Face hub come, ``torch.save(model.state_dict())``, or a timm training
checkpoint (its ``"state_dict"``). ResNet or Swin is read off the keys
(``conv1`` / ``layer1``.. or ``patch_embed`` / ``layers``); timm_to_reference_names
renames them to what the two paths above read, which then convert them:

    ResNet (resnet18..152, resnext*, wide_resnet*): timm's names are torchvision's, unchanged
      (its bottlenecks stride in the 3x3 conv too); the deep-stem (``conv1.0``..,
      resnet*d / *s / *t / *c) and average-pool-shortcut (``downsample.2``, resnet*d / *t)
      variants are refused: detectron2's ResNet has neither
    Swin (swin_{tiny,small,base,large}_patch4_window{7,12}_*), timm 1.0's layout:
      layers.{i}.downsample.* (i = 1..3) -> layers.{i-1}.downsample.*: timm merges patches at
                                        the start of a stage, microsoft (and the backbone) at
                                        the end of the one before; the same weights, the
                                        same 2x2 concatenation order
      head.fc.*                      -> head.* (then dropped, as ``norm.*``)
      relative_position_index, attn_mask: not in timm's state dict (non-persistent
                                        buffers); the index is written as above
    Swin in microsoft's layout (``layers.0.downsample`` present; timm's own loader renames
      it as above): read unchanged

Error messages name the input's own (timm) keys. timm stores no preprocessing in
the weights: the default is timm's ImageNet mean / std on RGB (as torchvision),
which most of its ResNet and all its Swin weights use, but not all (e.g.
``resnet34.ra4_e3600_r224_in1k``: mean = std = 0.5). ``--timm-model NAME[.TAG]``
reads mean / std from timm's own pretrained config of those weights (timm
installed; nothing is downloaded) and checks that the input is that architecture.
"""
import argparse
import logging
import os
import pickle
import re
import sys
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from d2ext.engine.checkpoint import write_model_zoo_pickle
from d2ext.tool_logging import quiet_checkpoint_loading

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
    # timm: its default ImageNet mean / std (IMAGENET_DEFAULT_MEAN / _STD); --timm-model reads
    # the actual ones of named weights from timm's pretrained configs
    "timm": Source("timm", "RGB", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}

# Blocks per stage (layer1..layer4) -> MODEL.RESNETS.DEPTH.
DEPTHS = {
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152,
}

# torchvision's (and timm's, the same names) model names -> (depth, NUM_GROUPS, WIDTH_PER_GROUP), for --arch.
ARCHS = {
    "resnet18": (18, 1, 64),
    "resnet34": (34, 1, 64),
    "resnet50": (50, 1, 64),
    "resnet101": (101, 1, 64),
    "resnet152": (152, 1, 64),
    "resnext50_32x4d": (50, 32, 4),
    "resnext101_32x8d": (101, 32, 8),
    "resnext101_64x4d": (101, 64, 4),
    "resnext101_32x4d": (101, 32, 4),  # timm only
    "resnext101_32x16d": (101, 32, 16),  # timm only
    "resnext101_32x32d": (101, 32, 32),  # timm only
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
    """The tensors of a checkpoint file: a torch file, or a ``.safetensors`` one (timm's hub weights)."""
    if not os.path.isfile(path):
        raise ConversionError(f"--input {path}: no such file")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ConversionError(f"--input {path}: reading .safetensors needs the safetensors package") from e
        try:
            data = load_file(path, device="cpu")
        except Exception as e:  # truncated, not a safetensors file
            raise ConversionError(f"--input {path}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    else:
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


def convert_torchvision_resnet(state: Dict[str, torch.Tensor], source: str = "input",
                               family: str = "torchvision") -> Conversion:
    """Renames a torchvision ResNet state dict to detectron2's ResNet names and reads its shape.

    ``family`` names the input's kind in error messages (timm's ResNets have torchvision's names).
    """
    unknown = [k for k in state if not (_STEM.match(k) or _BLOCK.match(k) or _DROPPED.match(k))]
    if unknown:
        raise ConversionError(
            f"{source}: keys that are not part of a {family} ResNet (conv1, bn1, layer1-4, fc): "
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


def check_arch(shape: ResNetShape, arch: str, option: Optional[str] = None) -> None:
    """Raises unless ``shape`` is torchvision's (timm's) ``arch``; ``option`` is what errors name."""
    option = option or f"--arch {arch}"
    if arch not in ARCHS:
        raise ConversionError(f"{option}: unknown; one of {', '.join(ARCHS)}")
    found = (shape.depth, shape.num_groups, shape.width_per_group)
    if found != ARCHS[arch]:
        raise ConversionError(
            f"{option}: expects depth / groups / width per group {ARCHS[arch]}, the input has {found}"
        )


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


def convert_swin(state: Dict[str, torch.Tensor], source: str = "input", family: str = "microsoft",
                 input_name: Callable[[str], str] = lambda key: key) -> Conversion:
    """Microsoft's Swin classification state dict -> D2SwinTransformer's arrays and shape.

    ``family`` and ``input_name`` (a key's name in the input, for a renamed one) are what errors show.
    """
    from d2ext.modeling.backbone.swin import relative_position_index

    unknown = [k for k in state if not (_SWIN_KEY.match(k) or _SWIN_DROPPED.match(k))]
    if unknown:
        raise ConversionError(
            f"{source}: keys that are not part of a {family} Swin Transformer (patch_embed, layers.0-3, "
            f"norm, head): {_names([input_name(k) for k in unknown])}"
            + ("; downsample in layers.3 is timm's layout: --source timm" if family == "microsoft"
               and any(k.startswith("layers.3.downsample.") for k in unknown) else "")
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
        shown = _names([input_name(k) for k in missing])
        raise ConversionError(f"{source}: incomplete Swin Transformer, missing {shown}")

    table = state["layers.0.blocks.0.attn.relative_position_bias_table"]
    window_size = (int(round(table.shape[0] ** 0.5)) + 1) // 2
    num_heads = tuple(int(state[f"layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1]) for i in range(4))
    hidden = int(state["layers.0.blocks.0.mlp.fc1.weight"].shape[0])
    shape = SwinShape(embed_dim=embed_dim, depths=depths, num_heads=num_heads, window_size=window_size,
                      patch_size=patch_size, mlp_ratio=hidden / embed_dim, qkv_bias=qkv_bias,
                      patch_norm=patch_norm, ape="absolute_pos_embed" in state)
    if (2 * window_size - 1) ** 2 != table.shape[0]:
        raise ConversionError(f"{source}: relative_position_bias_table has {table.shape[0]} rows, no (2w - 1)^2")
    # One WINDOW_SIZE builds every block (timm's swin_s3_* vary it by stage): a table of
    # another size would be skipped by the loader with only a warning.
    other = [k for k in state if k.endswith("relative_position_bias_table") and state[k].shape[0] != table.shape[0]]
    if other:
        raise ConversionError(
            f"{source}: the backbone has one window size for every block; layers.0.blocks.0's is {window_size}, "
            f"other windows in {_names([input_name(k) for k in other])}"
        )

    index = relative_position_index(window_size)
    arrays: "OrderedDict[str, np.ndarray]" = OrderedDict()
    dropped = []
    for key, value in state.items():
        if _SWIN_DROPPED.match(key):
            dropped.append(key)
            continue
        if key.endswith("relative_position_index"):
            if not torch.equal(value.long(), index):
                raise ConversionError(f"{source}: {input_name(key)} is not the index of a window of {window_size}")
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


def check_swin_arch(shape: SwinShape, arch: str, option: Optional[str] = None) -> None:
    """Raises unless ``shape`` is microsoft's ``arch``; ``option`` is what errors name."""
    option = option or f"--arch {arch}"
    if arch not in SWIN_ARCHS:
        raise ConversionError(f"{option}: unknown for a Swin; one of {', '.join(SWIN_ARCHS)}")
    found = (shape.embed_dim, tuple(shape.depths))
    if found != SWIN_ARCHS[arch]:
        raise ConversionError(f"{option}: expects EMBED_DIM / DEPTHS {SWIN_ARCHS[arch]}, the input has {found}")


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


# --- timm (pytorch-image-models) -> the torchvision / microsoft names above -------------

_TIMM_DEEP_STEM = re.compile(r"^conv1\.\d+\.")
_TIMM_AVG_DOWN = re.compile(r"^layer[1-4]\.\d+\.downsample\.2\.")
_TIMM_SWIN = re.compile(r"^swin_(tiny|small|base|large)_patch(\d+)_window(\d+)_\d+$")


def timm_to_reference_names(
    state: Dict[str, torch.Tensor], source: str = "input"
) -> Tuple[str, "OrderedDict[str, torch.Tensor]", Callable[[str], str]]:
    """A timm ResNet / Swin state dict in the names ``--source torchvision`` / ``--source swin`` read.

    Returns ``(model, renamed, input_name)``: ``model`` is "resnet" or "swin" (read off
    the keys), ``renamed`` the same tensors in the input's order, ``input_name(key)``
    the input's own name of a renamed key (for error messages). See the module
    docstring for the mapping; anything else about the keys is left to the converters.
    """
    swin = [k for k in state if k.startswith(("patch_embed.", "layers."))]
    resnet = [k for k in state if k.startswith(("conv1.", "layer1."))]
    if bool(swin) == bool(resnet):
        found = "both" if swin else "neither"
        raise ConversionError(
            f"{source}: {found} a timm ResNet's keys (conv1, layer1..4) {'and' if swin else 'nor'} a timm Swin's "
            f"(patch_embed, layers.0..3); first keys: {', '.join(list(state)[:5])}"
        )
    if resnet:
        deep = [k for k in state if _TIMM_DEEP_STEM.match(k)]
        if deep:
            raise ConversionError(
                f"{source}: a deep-stem timm ResNet ({_names(deep, limit=3)}: resnet*d / *s / *t / *c): "
                "detectron2's ResNet stem is one 7x7 conv; timm's plain resnet / resnext / wide_resnet convert"
            )
        avg = [k for k in state if _TIMM_AVG_DOWN.match(k)]
        if avg:
            raise ConversionError(
                f"{source}: average-pool shortcuts ({_names(avg, limit=3)}: downsample.1 a conv, .2 its norm, "
                "as in resnet*d / *t): detectron2's shortcut is a strided 1x1 conv"
            )
        return "resnet", OrderedDict(state), lambda key: key
    microsoft = any(k.startswith("layers.0.downsample.") for k in state)
    if microsoft and any(k.startswith("layers.3.downsample.") for k in state):
        raise ConversionError(
            f"{source}: downsample in both layers.0 (microsoft's layout: at the end of a stage) and layers.3 "
            "(timm's: at the start of one); a Swin has one between each two of its four stages"
        )
    if microsoft:  # the original checkpoints, which timm's own loader renames on the fly
        return "swin", OrderedDict(state), lambda key: key

    def to_microsoft(key: str) -> str:
        key = re.sub(r"^layers\.([1-3])\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", key)
        return "head." + key[len("head.fc."):] if key.startswith("head.fc.") else key

    def to_timm(key: str) -> str:
        key = re.sub(r"^layers\.([0-2])\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", key)
        return "head.fc." + key[len("head."):] if key in ("head.weight", "head.bias") else key

    return "swin", OrderedDict((to_microsoft(k), v) for k, v in state.items()), to_timm


def timm_source(model_name: str) -> Tuple[Source, str, str]:
    """(preprocessing, NAME.TAG, architecture) of timm's pretrained weights ``model_name`` (timm's own registry)."""
    try:
        import timm
    except ImportError as e:
        raise ConversionError(f"--timm-model {model_name}: needs timm (tools/requirements.txt pins it)") from e
    try:
        cfg = timm.get_pretrained_cfg(model_name)
    except RuntimeError as e:  # "Invalid pretrained tag (...) for ..."
        raise ConversionError(f"--timm-model {model_name}: {e}") from e
    if cfg is None:
        raise ConversionError(f"--timm-model {model_name}: timm {timm.__version__} has no pretrained weights so named")
    mean, std = (tuple(255.0 * float(x) for x in v) for v in (cfg.mean, cfg.std))
    if len(mean) != 3 or len(std) != 3:
        raise ConversionError(f"--timm-model {model_name}: mean {cfg.mean} / std {cfg.std} are not RGB")
    return Source("timm", "RGB", mean, std), f"{cfg.architecture}.{cfg.tag}", cfg.architecture


def check_timm_architecture(shape, architecture: str, option: str) -> None:
    """Raises unless the converted ``shape`` is timm's ``architecture`` (resnet50, swin_tiny_patch4_window7_224..)."""
    m = _TIMM_SWIN.match(architecture)
    if isinstance(shape, ResNetShape):
        if architecture not in ARCHS:
            raise ConversionError(f"{option}: {architecture} is no ResNet this tool converts ({', '.join(ARCHS)})")
        check_arch(shape, architecture, option)
        return
    if not m:
        raise ConversionError(
            f"{option}: {architecture} is no Swin this tool converts (swin_<size>_patch<p>_window<w>_*)"
        )
    check_swin_arch(shape, f"swin_{m.group(1)}", option)
    if (shape.patch_size, shape.window_size) != (int(m.group(2)), int(m.group(3))):
        raise ConversionError(
            f"{option}: patch {m.group(2)}, window {m.group(3)}; the input has patch {shape.patch_size}, "
            f"window {shape.window_size}"
        )


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help=f"where the weights come from: {', '.join(SOURCES)}")
    parser.add_argument("--input", required=True,
                        help="the source's state dict (.pth, or .safetensors): a ResNet, or a Swin for swin / timm")
    parser.add_argument("--output", required=True, help="the .pkl to write (the extension tells detectron2 its format)")
    parser.add_argument("--arch", help=f"check the input is this model: {', '.join(ARCHS)}; "
                        f"for a Swin: {', '.join(SWIN_ARCHS)}")
    parser.add_argument("--timm-model", metavar="NAME[.TAG]",
                        help="--source timm: the timm weights the input is (e.g. resnet50.a1_in1k): their mean / std "
                        "from timm's pretrained config, and a check of the architecture")
    parser.add_argument("--check-config", nargs="+", action="extend", default=[], metavar="CFG",
                        help="config files to load the output into and verify")
    args = parser.parse_args(argv)
    if not args.output.endswith(".pkl"):
        parser.error(
            f"--output {args.output}: must end with .pkl (DetectionCheckpointer picks the format by extension)"
        )
    if args.timm_model and args.source != "timm":
        parser.error(f"--timm-model is for --source timm, not --source {args.source}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    with quiet_checkpoint_loading():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    failures = []
    try:
        if args.source not in SOURCES:
            raise ConversionError(f"--source {args.source}: not supported; supported: {', '.join(SOURCES)}")
        source = SOURCES[args.source]
        state = load_state_dict(args.input)
        if args.source == "timm":
            kind, state, input_name = timm_to_reference_names(state, source=args.input)
            family = "timm"
        else:
            kind, input_name = ("swin" if args.source == "swin" else "resnet"), (lambda key: key)
            family = "microsoft" if args.source == "swin" else "torchvision"
        timm_weights = None
        if args.timm_model:
            source, timm_weights, architecture = timm_source(args.timm_model)
        if kind == "swin":
            conversion = convert_swin(state, source=args.input, family=family, input_name=input_name)
            shape = conversion.shape
            if args.arch:
                check_swin_arch(shape, args.arch)
            if timm_weights:
                check_timm_architecture(shape, architecture, f"--timm-model {args.timm_model} ({timm_weights})")
            write_model_zoo_pickle(conversion.arrays, args.output, source.author)
            print(
                f"converted {len(conversion.arrays)} arrays of a {source.author} Swin (EMBED_DIM {shape.embed_dim}, "
                f"DEPTHS {list(shape.depths)}, window {shape.window_size}) from {args.input} to {args.output}; "
                f"dropped {len(conversion.dropped)} (head, norm, attn_mask); norm0..norm3 written as LayerNorm's "
                "init (weight 1, bias 0)"
            )
            lines, check = swin_config_lines(shape, source, args.output), check_swin_config
        else:
            conversion = convert_torchvision_resnet(state, source=args.input, family=family)
            shape = conversion.shape
            if args.arch:
                check_arch(shape, args.arch)
            if timm_weights:
                check_timm_architecture(shape, architecture, f"--timm-model {args.timm_model} ({timm_weights})")
            write_model_zoo_pickle(conversion.arrays, args.output, source.author)
            print(
                f"converted {len(conversion.arrays)} arrays of a {source.author} ResNet-{shape.depth} "
                f"({shape.block} blocks) from {args.input} to {args.output}; dropped {len(conversion.dropped)} "
                "(fc, num_batches_tracked)"
            )
            if shape.block == "bottleneck":
                print(f"{source.author} bottlenecks stride in the 3x3 conv: set MODEL.RESNETS.STRIDE_IN_1X1 False")
            lines, check = config_lines(shape, source, args.output), check_config
        if timm_weights:
            print(f"mean / std of {timm_weights} from timm's pretrained config")
        elif args.source == "timm":
            print("mean / std: timm's ImageNet default, which most of its ResNet and all its Swin weights use; "
                  "some differ (e.g. resnet34.ra4_e3600_r224_in1k: 0.5 / 0.5): --timm-model NAME.TAG reads "
                  "those of your weights")
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
