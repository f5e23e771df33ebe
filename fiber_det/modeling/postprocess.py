"""Inference (ARCHITECTURE.md section 8): token scores -> class scores, per-level candidates,
sqrt(score * centerness), class-wise NMS, top detections."""
from typing import Sequence, Tuple

import torch
from detectron2.structures import Boxes, Instances
from torchvision.ops import batched_nms


def class_scores(token_prob: torch.Tensor, positive_map: torch.Tensor) -> torch.Tensor:
    """Mean token probability per class. token_prob (A, T); positive_map (C, T) bool -> (A, C).
    Classes whose map is empty (e.g. truncated away) score 0."""
    pmap = positive_map[:, : token_prob.shape[-1]].to(token_prob.dtype)
    counts = pmap.sum(dim=1)
    return (token_prob @ pmap.t()) / counts.clamp(min=1)[None, :]


def legacy_nms(boxes, scores, labels, threshold: float, plus_one: bool):
    """Class-wise NMS; with ``plus_one`` the IoU uses the reference's "+1" widths (suppress when
    IoU > threshold), obtained exactly by widening every box by one pixel."""
    if plus_one:
        boxes = boxes.clone()
        boxes[:, 2:] += 1
    return batched_nms(boxes.float(), scores.float(), labels, threshold)


@torch.no_grad()
def fiber_inference(
    *,
    token_logits: Sequence[torch.Tensor],   # per level (A_l, T) of one image
    box_deltas: Sequence[torch.Tensor],     # per level (A_l, 4)
    centerness: Sequence[torch.Tensor],     # per level (A_l,)
    anchors: Sequence[torch.Tensor],        # per level (A_l, 4)
    positive_map: torch.Tensor,             # (C, T) bool
    image_size: Tuple[int, int],
    box_coder,
    score_threshold: float = 0.05,
    pre_nms_top_n: int = 1000,
    nms_threshold: float = 0.6,
    max_detections: int = 100,
    plus_one: bool = True,
    nms: bool = True,
) -> Instances:
    """Detections of one image. With ``nms=False`` the ``max_detections`` best candidates are kept
    without suppression (NMS-free inference for one-to-one trained models)."""
    h, w = image_size
    all_boxes, all_scores, all_labels = [], [], []
    for logits, deltas, ctr, anc in zip(token_logits, box_deltas, centerness, anchors):
        scores = class_scores(logits.float().sigmoid(), positive_map)  # (A, C)
        candidates = scores > score_threshold
        num = min(int(candidates.sum()), pre_nms_top_n)
        if num == 0:
            continue
        weighted = (scores * ctr.float().sigmoid()[:, None])[candidates]
        top, order = weighted.topk(num, sorted=False)
        loc, label = candidates.nonzero().unbind(dim=1)
        loc, label = loc[order], label[order]
        boxes = box_coder.decode(deltas[loc].float(), anc[loc])
        all_boxes.append(boxes)
        all_scores.append(torch.sqrt(top))
        all_labels.append(label)
    result = Instances(image_size)
    if not all_boxes:
        result.pred_boxes = Boxes(torch.zeros((0, 4), device=positive_map.device))
        result.scores = torch.zeros(0, device=positive_map.device)
        result.pred_classes = torch.zeros(0, dtype=torch.long, device=positive_map.device)
        return result
    boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
    o = 1.0 if plus_one else 0.0
    boxes = torch.stack(
        [boxes[:, 0].clamp(0, w - o), boxes[:, 1].clamp(0, h - o), boxes[:, 2].clamp(0, w - o), boxes[:, 3].clamp(0, h - o)],
        dim=1,
    )
    if nms:
        keep = legacy_nms(boxes, scores, labels, nms_threshold, plus_one)[:max_detections]
    else:
        keep = scores.topk(min(max_detections, scores.numel())).indices
    result.pred_boxes = Boxes(boxes[keep])
    result.scores = scores[keep]
    result.pred_classes = labels[keep]
    return result
