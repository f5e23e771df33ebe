"""Anchor assignment (ARCHITECTURE.md section 7): ATSS (the reference's) and a Hungarian
one-to-one alternative. Both return, per image, the index of the ground-truth box each anchor is
assigned to, or -1 for background.
"""
from typing import Sequence

import torch

from .boxes import box_area, giou_loss_terms


class ATSSMatcher:
    """Adaptive training sample selection.

    Per box: the ``topk`` anchors with the nearest centres on each level are candidates; those with
    IoU >= mean + std of the candidates' IoUs whose centre lies inside the box are positives; an
    anchor claimed by several boxes goes to the one it overlaps most. Vectorised over boxes and
    anchors; the only loop is over pyramid levels.
    """

    def __init__(self, topk: int = 9, plus_one: bool = True):
        self.topk = topk
        self.plus_one = plus_one

    def __call__(self, anchors: torch.Tensor, num_per_level: Sequence[int], gt_boxes: torch.Tensor) -> torch.Tensor:
        num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
        if num_gt == 0:
            return torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device)
        a_ctr = (anchors[:, :2] + anchors[:, 2:]) / 2.0
        g_ctr = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2.0
        # (G, A) layout so that the per-level top-k runs along contiguous memory.
        dx = g_ctr[:, None, 0] - a_ctr[None, :, 0]
        dy = g_ctr[:, None, 1] - a_ctr[None, :, 1]
        distances = (dx * dx + dy * dy).sqrt()

        candidates = []
        start = 0
        for n in num_per_level:
            k = min(self.topk, n)
            _, idx = distances[:, start : start + n].topk(k, dim=1, largest=False)
            candidates.append(idx + start)
            start += n
        candidates = torch.cat(candidates, dim=1).t()  # (K, G)
        # IoUs are only needed for the candidates (K * G pairs instead of A * G).
        cand_ious = _paired_iou(anchors[candidates], gt_boxes[None].expand_as(anchors[candidates]), self.plus_one)
        threshold = cand_ious.mean(dim=0) + cand_ious.std(dim=0)
        is_pos = cand_ious >= threshold[None, :]

        cx, cy = a_ctr[candidates, 0], a_ctr[candidates, 1]  # (K, G)
        inside = torch.stack(
            [cx - gt_boxes[:, 0], cy - gt_boxes[:, 1], gt_boxes[:, 2] - cx, gt_boxes[:, 3] - cy], dim=0
        ).amin(dim=0) > 0.01
        is_pos &= inside

        # An anchor claimed by several boxes goes to the one it overlaps most (the first on ties);
        # resolved over the claimed anchors only.
        gt_index = torch.arange(num_gt, device=anchors.device).expand_as(candidates)
        pos_anchor, pos_gt, pos_iou = candidates[is_pos], gt_index[is_pos], cand_ious[is_pos]
        matched = torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device)
        if pos_anchor.numel() == 0:
            return matched
        claimed_anchors, row = torch.unique(pos_anchor, return_inverse=True)
        claimed = torch.full((claimed_anchors.numel(), num_gt), float("-inf"), dtype=pos_iou.dtype, device=anchors.device)
        claimed[row, pos_gt] = pos_iou
        matched[claimed_anchors] = claimed.argmax(dim=1)
        return matched


def _paired_iou(a: torch.Tensor, b: torch.Tensor, plus_one: bool) -> torch.Tensor:
    """IoU of boxes paired elementwise, (..., 4) x (..., 4) -> (...); the same arithmetic as
    ``pairwise_iou``."""
    o = 1.0 if plus_one else 0.0
    lt = torch.max(a[..., :2], b[..., :2])
    rb = torch.min(a[..., 2:], b[..., 2:])
    wh = (rb - lt + o).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a, plus_one) + box_area(b, plus_one) - inter
    return inter / union.clamp(min=1e-12)


class HungarianMatcher:
    """One-to-one assignment minimising token focal cost + L1 + GIoU between predicted and
    ground-truth boxes (``scipy.optimize.linear_sum_assignment``)."""

    block_elements = 2**20  # cost-matrix entries computed at once (on CPU several times faster than all of them)

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 alpha: float = 0.25, gamma: float = 2.0):
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.alpha, self.gamma = alpha, gamma

    @torch.no_grad()
    def __call__(self, token_logits: torch.Tensor, pred_boxes: torch.Tensor, gt_boxes: torch.Tensor,
                 gt_positive_map: torch.Tensor, image_size: Sequence[int]) -> torch.Tensor:
        """token_logits (A, T), pred_boxes (A, 4) XYXY, gt_boxes (G, 4), gt_positive_map (G, T) bool."""
        from scipy.optimize import linear_sum_assignment

        num_anchors, num_gt = pred_boxes.shape[0], gt_boxes.shape[0]
        matched = torch.full((num_anchors,), -1, dtype=torch.long, device=pred_boxes.device)
        if num_gt == 0:
            return matched
        # Only the tokens some box names enter the cost: the focal terms on (A, used tokens), not (A, T).
        used = gt_positive_map.any(dim=0).nonzero().squeeze(1)
        pmap = gt_positive_map[:, used].float()
        pmap = (pmap / pmap.sum(dim=1, keepdim=True).clamp(min=1)).t()
        h, w = image_size
        norm = pred_boxes.new_tensor([w, h, w, h], dtype=torch.float32)
        gt = gt_boxes.float()
        gt_normed = gt / norm
        # The (A, G) cost in blocks of anchors: each term is a chain of elementwise ops, memory-bound on
        # the whole matrix (27 MB a temporary at 22,400 anchors x 300 boxes) but cache-resident per block.
        block = max(1, self.block_elements // num_gt)
        cost = torch.cat([self._cost(logits[:, used], boxes.float(), gt, gt_normed, pmap, norm)
                          for logits, boxes in zip(token_logits.split(block), pred_boxes.split(block))])
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        matched[torch.as_tensor(rows, device=matched.device)] = torch.as_tensor(cols, device=matched.device)
        return matched

    def _cost(self, logits, boxes, gt, gt_normed, pmap, norm):
        prob = logits.float().sigmoid()
        neg = (1 - self.alpha) * prob.pow(self.gamma) * -(1 - prob + 1e-8).log()
        pos = self.alpha * (1 - prob).pow(self.gamma) * -(prob + 1e-8).log()
        cost_class = (pos - neg) @ pmap  # mean focal cost over each box's tokens
        cost_bbox = torch.cdist(boxes / norm, gt_normed, p=1)
        cost_giou = giou_loss_terms(boxes[:, None], gt[None]) - 1.0
        return self.cost_class * cost_class + self.cost_bbox * cost_bbox + self.cost_giou * cost_giou
