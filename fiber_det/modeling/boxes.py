"""Pairwise box geometry with an optional legacy "+1" pixel convention."""
import torch


def box_area(boxes: torch.Tensor, plus_one: bool = False) -> torch.Tensor:
    o = 1.0 if plus_one else 0.0
    return (boxes[..., 2] - boxes[..., 0] + o) * (boxes[..., 3] - boxes[..., 1] + o)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor, plus_one: bool = False) -> torch.Tensor:
    """(N, 4) x (M, 4) XYXY -> (N, M) IoU."""
    o = 1.0 if plus_one else 0.0
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt + o).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a, plus_one)[:, None] + box_area(b, plus_one)[None, :] - inter
    return inter / union.clamp(min=1e-12)


def giou_loss_terms(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """1 - GIoU of matched (N, 4) box pairs, as the reference computes it (no "+1"; predicted
    x2/y2 first raised to x1/y1 so inverted boxes have zero area). Any shapes (..., 4) that
    broadcast work: (A, 1, 4) against (1, G, 4) gives the (A, G) matrix."""
    px1, py1 = pred[..., 0], pred[..., 1]
    px2, py2 = torch.max(pred[..., 2], px1), torch.max(pred[..., 3], py1)
    tx1, ty1, tx2, ty2 = target.unbind(dim=-1)
    pred_area = (px2 - px1) * (py2 - py1)
    target_area = (tx2 - tx1) * (ty2 - ty1)
    iw = (torch.min(px2, tx2) - torch.max(px1, tx1)).clamp(min=0)
    ih = (torch.min(py2, ty2) - torch.max(py1, ty1)).clamp(min=0)
    inter = iw * ih
    enclosing = (torch.max(px2, tx2) - torch.min(px1, tx1)) * (torch.max(py2, ty2) - torch.min(py1, ty1)) + eps
    union = pred_area + target_area - inter + eps
    iou = inter / union
    return 1.0 - (iou - (enclosing - union) / enclosing)
