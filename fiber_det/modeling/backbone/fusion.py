"""The fused image-text backbone (ARCHITECTURE.md sections 2-5).

Text embeddings and the unfused text layers run first, then the Swin stages; each of the last N
Swin blocks is paired with one of the top N text layers, and within a pair the two sides update in
parallel (each reads the other's state from before the pair). C3..C5 then go through the FPN.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec

from .fpn import ReferenceFPN
from .swin import SwinTransformer, swin_b_fusion_blocks
from .text import FusedTextEncoder, resolve_text_config


def image_token_mask(image_sizes: Sequence[Tuple[int, int]], stride: int, hw: Tuple[int, int], device) -> torch.Tensor:
    """(B, H*W) bool: tokens of a stride-``stride`` grid that cover real (unpadded) pixels."""
    H, W = hw
    sizes = torch.tensor(image_sizes, device=device, dtype=torch.long)
    valid_h = (sizes[:, 0] + stride - 1) // stride
    valid_w = (sizes[:, 1] + stride - 1) // stride
    rows = torch.arange(H, device=device)[None, :, None] < valid_h[:, None, None]
    cols = torch.arange(W, device=device)[None, None, :] < valid_w[:, None, None]
    return (rows & cols).flatten(1)


class FiberBackbone(Backbone):
    @configurable
    def __init__(self, *, swin: SwinTransformer, text: FusedTextEncoder, fpn: ReferenceFPN,
                 strides: Sequence[int], mask_padded_image_tokens: bool = False):
        super().__init__()
        self.swin, self.text, self.fpn = swin, text, fpn
        self.mask_padded_image_tokens = mask_padded_image_tokens
        self.image_blocks = list(swin.fusion_blocks)
        self.text_layers = list(text.fused_layer_ids)
        if len(self.image_blocks) != len(self.text_layers):
            raise ValueError(
                f"fusion pairs mismatch: {len(self.image_blocks)} fused Swin blocks but "
                f"{len(self.text_layers)} fused text layers"
            )
        self._out_features = [f"p{int(math.log2(s))}" for s in strides]
        self._out_feature_strides = {n: s for n, s in zip(self._out_features, strides)}
        self._out_feature_channels = {n: fpn_channels(fpn) for n in self._out_features}

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        s, t, f = cfg.MODEL.FIBER.SWIN, cfg.MODEL.FIBER.TEXT, cfg.MODEL.FIBER.FPN
        num_fusion = cfg.MODEL.FIBER.FUSION.NUM_LAYERS
        fusion_blocks = swin_b_fusion_blocks(s.DEPTHS, num_fusion)
        swin = SwinTransformer(
            patch_size=s.PATCH_SIZE, embed_dim=s.EMBED_DIM, depths=tuple(s.DEPTHS), num_heads=tuple(s.NUM_HEADS),
            window_size=s.WINDOW_SIZE, mlp_ratio=s.MLP_RATIO, drop_path_rate=s.DROP_PATH_RATE,
            out_indices=(1, 2, 3), frozen_stages=s.FROZEN_STAGES, use_checkpoint=s.USE_CHECKPOINT,
            fusion_blocks=fusion_blocks, fusion_variant=s.FUSION_VARIANT,
            text_dim=text_hidden_size(cfg),
        )
        text = FusedTextEncoder(
            model_name_or_path=t.MODEL_NAME, pretrained=t.PRETRAINED,
            config_overrides=dict(t.CONFIG_OVERRIDES) or None, num_fusion_layers=num_fusion,
            image_dims=[swin.num_features[stage] for stage, _ in fusion_blocks],
            use_checkpoint=t.USE_CHECKPOINT,
            pad_image_tokens_masked=cfg.MODEL.FIBER.FUSION.MASK_PADDED_IMAGE_TOKENS,
        )
        fpn = ReferenceFPN(
            list(swin.num_features[1:]), f.OUT_CHANNELS, drop_block=f.DROP_BLOCK,
            drop_block_prob=f.DROP_BLOCK_PROB, drop_block_size=f.DROP_BLOCK_SIZE,
        )
        return {"swin": swin, "text": text, "fpn": fpn, "strides": cfg.MODEL.FIBER.ANCHOR_STRIDES,
                "mask_padded_image_tokens": cfg.MODEL.FIBER.FUSION.MASK_PADDED_IMAGE_TOKENS}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
            for n in self._out_features
        }

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                image_sizes: Optional[Sequence[Tuple[int, int]]] = None):
        """images: normalised, padded (B, 3, H, W); image_sizes: unpadded (h, w) per image, used
        only to mask padded image tokens when that switch is on.

        Returns ({"p3": .., ..., "p7": ..}, {"hidden", "masks", "embedded"}).
        """
        h, ext_mask = self.text.embed(input_ids, attention_mask)
        first_fused = self.text_layers[0] if self.text_layers else self.text.num_layers
        for i in range(first_fused):
            h = self.text.run_layer(i, h, ext_mask)

        pairs = {blk: layer for blk, layer in zip(self.image_blocks, self.text_layers)}
        x, hw = self.swin.embed(images)
        stride = self.swin.patch_size
        feats = []
        for stage in range(len(self.swin.layers)):
            for block in range(len(self.swin.layers[stage].blocks)):
                layer = pairs.get((stage, block))
                if layer is None:
                    x = self.swin.run_block(stage, block, x, hw)
                    continue
                img_mask = None
                if self.mask_padded_image_tokens and image_sizes is not None:
                    img_mask = image_token_mask(image_sizes, stride, hw, x.device)
                # Parallel update: both sides read the other's state from before this pair.
                x_new = self.swin.run_block(stage, block, x, hw, text=h, text_mask=attention_mask)
                h = self.text.run_layer(layer, h, ext_mask, image_tokens=x, image_mask=img_mask)
                x = x_new
            out, x, hw = self.swin.end_stage(stage, x, hw)
            if out is not None:
                feats.append(out)
            stride *= 2
        last_text = max(self.text_layers) + 1 if self.text_layers else self.text.num_layers
        for i in range(max(last_text, first_fused), self.text.num_layers):
            h = self.text.run_layer(i, h, ext_mask)

        pyramid = self.fpn(feats)
        mask = attention_mask.to(h.dtype)
        text_out = {"hidden": h, "masks": attention_mask, "embedded": h * mask[..., None]}
        return dict(zip(self._out_features, pyramid)), text_out


def fpn_channels(fpn: ReferenceFPN) -> int:
    return fpn.top_blocks.p6.out_channels


def text_hidden_size(cfg) -> int:
    """Hidden width of the configured text encoder, read from its HF config (no weights loaded)."""
    t = cfg.MODEL.FIBER.TEXT
    return resolve_text_config(t.MODEL_NAME, dict(t.CONFIG_OVERRIDES)).hidden_size


@BACKBONE_REGISTRY.register()
def build_fiber_backbone(cfg, input_shape=None) -> FiberBackbone:
    return FiberBackbone(cfg, input_shape)
