"""The FIBER detector as a Detectron2 meta-architecture.

forward(batched_inputs): normalise and pad the images, tokenise the captions, run the fused
backbone and the head, then either assign anchors and compute losses or post-process detections.
Each input dict carries ``caption``; training inputs add ``instances`` (gt_boxes) and
``instance_spans`` (the caption spans naming each instance); inference inputs add ``class_spans``
(the spans of each class / phrase the caption lists), and detections are labelled with the class index.
Inference inputs of a vocabulary too large for one caption carry ``prompt_chunks`` instead, and the
model runs once per chunk (fiber_det/modeling/chunked.py).
"""
import logging
from typing import Dict, List, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import ImageList
from torch import nn

from ..text.prompts import positive_map_from_spans
from .anchors import AnchorGenerator, LegacyBoxCoder
from .backbone.text import build_tokenizer
from .chunked import chunked_inference
from .head.vl_head import VLHead
from .losses import fiber_losses
from .matching import ATSSMatcher, HungarianMatcher
from .postprocess import fiber_inference

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class FIBER(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: VLHead,
        tokenizer,
        anchor_sizes: Sequence[float],
        anchor_strides: Sequence[int],
        box_coder: LegacyBoxCoder,
        matcher,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int = 32,
        max_length: int = 256,
        pad_to_max: bool = True,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        loss_weights=(1.0, 2.0, 1.0),
        score_threshold: float = 0.05,
        pre_nms_top_n: int = 1000,
        nms_threshold: float = 0.6,
        nms: bool = True,
        max_detections: int = 100,
        plus_one: bool = True,
        input_format: str = "BGR",
    ):
        super().__init__()
        self.backbone, self.head, self.tokenizer = backbone, head, tokenizer
        self.anchor_generator = AnchorGenerator(anchor_sizes, anchor_strides)
        self.box_coder, self.matcher = box_coder, matcher
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.size_divisibility = size_divisibility
        self.max_length, self.pad_to_max = max_length, pad_to_max
        self.focal_alpha, self.focal_gamma, self.loss_weights = focal_alpha, focal_gamma, tuple(loss_weights)
        self.score_threshold, self.pre_nms_top_n = score_threshold, pre_nms_top_n
        self.nms_threshold, self.nms, self.max_detections = nms_threshold, nms, max_detections
        self.plus_one = plus_one
        self.input_format = input_format
        self.in_features = list(backbone.output_shape().keys())

    @classmethod
    def from_config(cls, cfg):
        f = cfg.MODEL.FIBER
        backbone = build_backbone(cfg)
        if f.MATCHER == "atss":
            matcher = ATSSMatcher(f.ATSS_TOPK, plus_one=f.NMS_LEGACY_PLUS_ONE)
        elif f.MATCHER == "hungarian":
            h = f.HUNGARIAN
            matcher = HungarianMatcher(h.COST_CLASS, h.COST_BBOX, h.COST_GIOU, alpha=f.FOCAL_ALPHA, gamma=f.FOCAL_GAMMA)
        else:
            raise ValueError(f"MODEL.FIBER.MATCHER must be 'atss' or 'hungarian', got {f.MATCHER!r}")
        sizes = cfg.MODEL.ANCHOR_GENERATOR.SIZES
        if any(len(s) != 1 for s in sizes):
            raise ValueError(f"MODEL.ANCHOR_GENERATOR.SIZES must hold one size per level, got {sizes}")
        return {
            "backbone": backbone,
            "head": VLHead(cfg, text_dim=backbone.text.hidden_size),
            "tokenizer": build_tokenizer(f.TEXT.TOKENIZER or f.TEXT.MODEL_NAME),
            "anchor_sizes": [s[0] for s in sizes],
            "anchor_strides": f.ANCHOR_STRIDES,
            "box_coder": LegacyBoxCoder(f.BOX_CODER_WEIGHTS),
            "matcher": matcher,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "size_divisibility": f.SIZE_DIVISIBILITY,
            "max_length": f.TEXT.MAX_LENGTH,
            "pad_to_max": f.TEXT.PAD_TO_MAX,
            "focal_alpha": f.FOCAL_ALPHA,
            "focal_gamma": f.FOCAL_GAMMA,
            "loss_weights": (f.TOKEN_LOSS_WEIGHT, f.GIOU_LOSS_WEIGHT, f.CENTERNESS_LOSS_WEIGHT),
            "score_threshold": f.INFERENCE_TH,
            "pre_nms_top_n": f.PRE_NMS_TOP_N,
            "nms_threshold": f.NMS_TH,
            "nms": f.NMS,
            "max_detections": f.DETECTIONS_PER_IMAGE,
            "plus_one": f.NMS_LEGACY_PLUS_ONE,
            "input_format": cfg.INPUT.FORMAT,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    # ---- pieces of the forward pass ----
    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.size_divisibility)

    def tokenize(self, captions: List[str]):
        return self.tokenizer(
            captions,
            padding="max_length" if self.pad_to_max else "longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )

    def positive_maps(self, encoding, spans_per_image, width: int, batched_inputs, what: str):
        maps = []
        for i, spans in enumerate(spans_per_image):
            pmap = positive_map_from_spans(encoding, spans, width, batch_index=i)
            empty = (~pmap.any(dim=1)).nonzero().flatten().tolist()
            if empty and what == "instance":
                n_tokens = int(encoding["attention_mask"][i].sum())
                raise ValueError(
                    f"image {batched_inputs[i].get('image_id', i)}: {what} spans {[spans[j] for j in empty]} "
                    f"map to no token of the caption ({n_tokens} tokens, budget {self.max_length}); "
                    f"the caption was truncated or a span is outside it: shorten the caption or use chunked prompts"
                )
            maps.append(pmap.to(self.device))
        return maps

    def forward(self, batched_inputs: List[Dict]):
        if not self.training and "prompt_chunks" in batched_inputs[0]:
            return chunked_inference(self, batched_inputs)  # one full forward per prompt chunk
        images = self.preprocess_image(batched_inputs)
        encoding = self.tokenize([x["caption"] for x in batched_inputs])
        input_ids = encoding["input_ids"].to(self.device)
        attention_mask = encoding["attention_mask"].to(self.device)
        features, text = self.backbone(images.tensor, input_ids, attention_mask, images.image_sizes)
        feats = [features[f] for f in self.in_features]
        out = self.head(feats, text["embedded"])
        anchors = self.anchor_generator([tuple(f.shape[-2:]) for f in feats], self.device)
        if self.training:
            return self.losses(batched_inputs, images, encoding, attention_mask, out, anchors)
        return self.inference(batched_inputs, images, encoding, out, anchors)

    def losses(self, batched_inputs, images, encoding, attention_mask, out, anchors):
        T = attention_mask.shape[1]
        gt_boxes = []
        for x in batched_inputs:
            boxes = x["instances"].gt_boxes.tensor.to(self.device)
            if self.plus_one:  # the reference stores x2 = x + w - 1
                boxes = torch.cat([boxes[:, :2], torch.max(boxes[:, 2:] - 1, boxes[:, :2])], dim=1)
            gt_boxes.append(boxes)
        pmaps = self.positive_maps(encoding, [x["instance_spans"] for x in batched_inputs], T, batched_inputs, "instance")
        logits = torch.cat(out["token_logits"], dim=1)
        deltas = torch.cat(out["box_deltas"], dim=1)
        centerness = torch.cat(out["centerness"], dim=1)
        all_anchors = torch.cat(anchors, dim=0)
        num_per_level = [a.shape[0] for a in anchors]
        with torch.no_grad():
            if isinstance(self.matcher, HungarianMatcher):
                matched = torch.stack([
                    self.matcher(logits[i], self.box_coder.decode(deltas[i].float(), all_anchors), gt_boxes[i], pmaps[i],
                                 images.image_sizes[i])
                    for i in range(len(batched_inputs))
                ])
            else:
                matched = torch.stack([self.matcher(all_anchors, num_per_level, g) for g in gt_boxes])
        no_object = self.max_length - 1 if T == self.max_length else -1
        return fiber_losses(
            token_logits=logits, box_deltas=deltas, centerness=centerness, anchors=all_anchors, matched=matched,
            gt_boxes=gt_boxes, gt_positive_maps=pmaps, text_mask=attention_mask.bool(), box_coder=self.box_coder,
            no_object_token=no_object, alpha=self.focal_alpha, gamma=self.focal_gamma, weights=self.loss_weights,
        )

    def inference(self, batched_inputs, images, encoding, out, anchors):
        T = encoding["input_ids"].shape[1]
        class_maps = self.positive_maps(encoding, [x["class_spans"] for x in batched_inputs], T, batched_inputs, "class")
        results = []
        for i, x in enumerate(batched_inputs):
            inst = fiber_inference(
                token_logits=[l[i] for l in out["token_logits"]],
                box_deltas=[d[i] for d in out["box_deltas"]],
                centerness=[c[i] for c in out["centerness"]],
                anchors=anchors, positive_map=class_maps[i], image_size=images.image_sizes[i],
                box_coder=self.box_coder, score_threshold=self.score_threshold,
                pre_nms_top_n=self.pre_nms_top_n, nms_threshold=self.nms_threshold, nms=self.nms,
                max_detections=self.max_detections, plus_one=self.plus_one,
            )
            if self.plus_one:  # back to exclusive x2/y2
                inst.pred_boxes.tensor[:, 2:] += 1
            h = x.get("height", images.image_sizes[i][0])
            w = x.get("width", images.image_sizes[i][1])
            results.append({"instances": detector_postprocess(inst, h, w)})
        return results
