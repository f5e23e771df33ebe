"""Language-aware head (ARCHITECTURE.md section 6): DyHead tower, then per-level box regression,
centerness, and token-alignment logits between every anchor's region feature and every caption token.
There is no cross-modal fusion here: the backbone has done it.
"""
import math
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from .dyhead import DyConv


class Scale(nn.Module):
    def __init__(self, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([init]))

    def forward(self, x):
        return x * self.scale


def flatten_level(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C), anchors in row-major order."""
    return x.flatten(2).transpose(1, 2)


class VLHead(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        channels: int = 256,
        text_dim: int = 768,
        num_levels: int = 5,
        num_convs: int = 6,
        gn_groups: int = 16,
        deformable: bool = True,
        offset_quirk: bool = True,
        deform_impl: str = "auto",
        prior_prob: float = 0.01,
        legacy_num_classes: int = 80,
        logit_clamp: float = 50000.0,
    ):
        super().__init__()
        self.logit_clamp = logit_clamp
        self.dyhead_tower = nn.ModuleList(
            [DyConv(channels, gn_groups, deformable, offset_quirk, deform_impl) for _ in range(num_convs)]
        )
        bias_value = -math.log((1 - prior_prob) / prior_prob)
        # Frozen, unused: kept only so reference checkpoints load strictly (its loss weight is 0 there).
        self.cls_logits = nn.Conv2d(channels, legacy_num_classes, kernel_size=1)
        self.bbox_pred = nn.Conv2d(channels, 4, kernel_size=1)
        self.centerness = nn.Conv2d(channels, 1, kernel_size=1)
        for conv in (self.cls_logits, self.bbox_pred, self.centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls_logits.bias, bias_value)
        for p in self.cls_logits.parameters():
            p.requires_grad_(False)
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(num_levels)])
        self.dot_product_projection_text = nn.Linear(text_dim, channels, bias=True)
        self.log_scale = nn.Parameter(torch.zeros(1))
        self.bias_lang = nn.Parameter(torch.zeros(text_dim))
        self.bias0 = nn.Parameter(torch.tensor([bias_value]))

    @classmethod
    def from_config(cls, cfg, text_dim: int):
        h = cfg.MODEL.FIBER.HEAD
        return {
            "channels": cfg.MODEL.FIBER.FPN.OUT_CHANNELS,
            "text_dim": text_dim,
            "num_levels": len(cfg.MODEL.FIBER.ANCHOR_STRIDES),
            "num_convs": h.NUM_CONVS,
            "gn_groups": h.GN_GROUPS,
            "deformable": h.USE_DEFORMABLE,
            "offset_quirk": h.DEFORM_OFFSET_QUIRK,
            "deform_impl": h.DEFORM_IMPL,
            "prior_prob": h.PRIOR_PROB,
            "legacy_num_classes": h.LEGACY_NUM_CLASSES,
            "logit_clamp": h.LOGIT_CLAMP,
        }

    def forward(self, features: List[torch.Tensor], embedded: torch.Tensor) -> Dict[str, List[torch.Tensor]]:
        """features: FPN levels (B, C, H, W); embedded: text states * mask (B, T, D).

        Returns per level ``box_deltas`` (B, HW, 4), ``centerness`` (B, HW) and ``token_logits``
        (B, HW, T).
        """
        for block in self.dyhead_tower:
            features = block(features)
        text = F.normalize(embedded, p=2, dim=-1)
        tokens = self.dot_product_projection_text(text / 2.0)  # (B, T, C)
        token_bias = torch.matmul(text, self.bias_lang) + self.bias0  # (B, T)
        scale = self.log_scale.exp()
        out = {"box_deltas": [], "centerness": [], "token_logits": []}
        for level, feat in enumerate(features):
            out["box_deltas"].append(flatten_level(self.scales[level](self.bbox_pred(feat))))
            out["centerness"].append(flatten_level(self.centerness(feat)).squeeze(-1))
            region = flatten_level(feat)  # (B, HW, C)
            logits = torch.matmul(region, tokens.transpose(1, 2)) / scale + token_bias[:, None, :]
            out["token_logits"].append(logits.clamp(-self.logit_clamp, self.logit_clamp))
        return out
