"""Released FIBER fine-grained checkpoints -> fiber-det state dicts.

The reference's module tree maps onto fiber-det's by prefix alone (the sub-module names below each
prefix are the reference's own, so every tensor keeps its name and shape):

| reference prefix                                   | fiber-det prefix        |
|----------------------------------------------------|-------------------------|
| ``fusion_backbone.backbone.body.``                 | ``backbone.swin.``      |
| ``fusion_backbone.backbone.fpn.``                  | ``backbone.fpn.``       |
| ``fusion_backbone.language_backbone.body.model.``  | ``backbone.text.model.``|
| ``rpn.head.``                                      | ``head.``               |

Dropped on purpose: ``rpn.anchor_generator.*`` (anchors are recomputed) and the text embeddings'
``position_ids`` buffer (not part of the state in current transformers).
"""
import logging
from typing import Dict, List, Tuple

import torch

logger = logging.getLogger(__name__)

PREFIX_MAP: List[Tuple[str, str]] = [
    ("fusion_backbone.backbone.body.", "backbone.swin."),
    ("fusion_backbone.backbone.fpn.", "backbone.fpn."),
    ("fusion_backbone.language_backbone.body.model.", "backbone.text.model."),
    ("rpn.head.", "head."),
]
DROPPED_PREFIXES = ("rpn.anchor_generator.",)
DROPPED_SUFFIXES = ("embeddings.position_ids",)


def is_reference_state_dict(state: Dict[str, torch.Tensor]) -> bool:
    return any(k.removeprefix("module.").startswith(("fusion_backbone.", "rpn.head.")) for k in state)


def convert_reference_state_dict(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename reference keys (optionally prefixed ``module.``). Returns (converted, unplaced keys)."""
    out, unplaced = {}, []
    for key, value in state.items():
        name = key.removeprefix("module.")
        if name.startswith(DROPPED_PREFIXES) or name.endswith(DROPPED_SUFFIXES):
            continue
        for src, dst in PREFIX_MAP:
            if name.startswith(src):
                out[dst + name[len(src):]] = value
                break
        else:
            unplaced.append(key)
    return out, unplaced


def load_reference_checkpoint(path: str, use_ema: bool = False) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Read a released checkpoint safely (``weights_only=True``) and convert its weights.

    ``use_ema`` picks ``model_ema`` instead of ``model``.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    key = "model_ema" if use_ema else "model"
    if key not in ckpt:
        if use_ema or not is_reference_state_dict(ckpt):
            raise KeyError(f"{path}: no '{key}' entry (entries: {sorted(ckpt)[:10]})")
        state = ckpt  # a bare state dict
    else:
        state = ckpt[key]
    converted, unplaced = convert_reference_state_dict(state)
    if unplaced:
        logger.warning(f"{path}: {len(unplaced)} keys could not be placed: {unplaced[:20]}")
    return converted, unplaced
