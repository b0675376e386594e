"""The one place where checkpoint key names are mapped for MaskFormer's head.

d2ext's MaskFormer has the official implementation's parameter names
(facebookresearch/MaskFormer), so its checkpoints load as they are. Two other
layouts are renamed on load, by ``MaskFormerHead._load_from_state_dict``:

- The official published ``.pkl`` files: their pixel decoder parameters sit directly
  under ``sem_seg_head.`` (the head's weight format before v2, e.g.
  ``sem_seg_head.adapter_1.weight``); they move under ``sem_seg_head.pixel_decoder.``.
  Unlike the official upgrade (which runs whenever the checkpoint has no version
  metadata, as a .pkl never has, and then also re-prefixes keys that already were
  under ``pixel_decoder.``), keys already in the new layout are left alone, so both
  layouts load.
- d2ext's earlier names: ``lateral_convs.{i}`` / ``output_convs.{i}`` (finest level
  first) -> ``adapter_{i+1}`` / ``layer_{i+1}``, the transformers' missing
  ``transformer.`` level, and the decoder's ``cross_attn`` -> ``multihead_attn``.
"""
from __future__ import annotations

import logging
import re
from typing import Callable, List, MutableMapping, Tuple, Union

__all__ = ["upgrade_head_keys"]

_Repl = Union[str, Callable[[re.Match], str]]

# (pattern on the key after the head's prefix, replacement), applied in order.
_RENAMES: List[Tuple[str, _Repl]] = [
    # official .pkl: pixel decoder parameters directly under the head
    (r"^(?!predictor\.|pixel_decoder\.)", "pixel_decoder."),
    # d2ext's earlier names
    (r"^pixel_decoder\.lateral_convs\.(\d+)\.", lambda m: f"pixel_decoder.adapter_{int(m[1]) + 1}."),
    (r"^pixel_decoder\.output_convs\.(\d+)\.", lambda m: f"pixel_decoder.layer_{int(m[1]) + 1}."),
    (r"^pixel_decoder\.transformer\.(layers|norm)\.", r"pixel_decoder.transformer.encoder.\1."),
    (r"^predictor\.(encoder|decoder)\.", r"predictor.transformer.\1."),
    (r"^(predictor\.transformer\.decoder\.layers\.\d+)\.cross_attn\.", r"\1.multihead_attn."),
]


def _upgrade(suffix: str) -> str:
    for pattern, repl in _RENAMES:
        suffix = re.sub(pattern, repl, suffix)
    return suffix


def upgrade_head_keys(state_dict: MutableMapping[str, object], prefix: str) -> int:
    """Renames, in place, the keys under ``prefix`` (the head's, e.g. "sem_seg_head.")
    that are in an older layout (module docstring) -> number of keys renamed."""
    renamed = 0
    for key in [k for k in state_dict if k.startswith(prefix)]:
        new = prefix + _upgrade(key[len(prefix):])
        if new != key:
            if new in state_dict:
                raise KeyError(f"checkpoint has both {key!r} and {new!r} (old and new name of one parameter)")
            state_dict[new] = state_dict.pop(key)
            renamed += 1
    if renamed:
        logging.getLogger(__name__).info(
            "MaskFormerHead: renamed %d checkpoint keys from an older layout (official .pkl or d2ext's earlier names)",
            renamed,
        )
    return renamed
