"""Training losses (ARCHITECTURE.md section 7): token sigmoid focal loss over valid tokens,
centerness-weighted GIoU, and centerness BCE, normalised by positives averaged across workers."""
import torch
import torch.nn.functional as F
from detectron2.utils import comm

from .boxes import giou_loss_terms


def token_sigmoid_focal_loss(logits, targets, text_mask, alpha: float = 0.25, gamma: float = 2.0):
    """Sum of the binary focal loss over every anchor and every valid token.

    logits, targets: (B, A, T); text_mask: (B, T) bool (padding tokens contribute nothing).
    """
    targets = targets.to(logits.dtype)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return (loss * text_mask[:, None, :].to(loss.dtype)).sum()


def centerness_targets(anchors: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """sqrt of (min/max of left-right distances) * (min/max of top-bottom), from anchor centres."""
    cx = (anchors[:, 0] + anchors[:, 2]) / 2.0
    cy = (anchors[:, 1] + anchors[:, 3]) / 2.0
    lr = torch.stack([cx - gt_boxes[:, 0], gt_boxes[:, 2] - cx], dim=1)
    tb = torch.stack([cy - gt_boxes[:, 1], gt_boxes[:, 3] - cy], dim=1)
    # Clamped at 0: only one-to-one (Hungarian) positives can have their centre outside the box.
    ratio = (lr.amin(dim=1) / lr.amax(dim=1)) * (tb.amin(dim=1) / tb.amax(dim=1))
    return torch.sqrt(ratio.clamp(min=0))


def reduce_mean(*values: float):
    """Averages of Python numbers over workers (the reference's normalisers), in one collective.
    Every worker must call it, with the same number of values, positives or not."""
    if comm.get_world_size() == 1:
        out = [float(v) for v in values]
    else:
        gathered = comm.all_gather([float(v) for v in values])
        out = [sum(g[i] for g in gathered) / len(gathered) for i in range(len(values))]
    return out[0] if len(out) == 1 else tuple(out)


def fiber_losses(
    *,
    token_logits: torch.Tensor,   # (B, A, T)
    box_deltas: torch.Tensor,     # (B, A, 4)
    centerness: torch.Tensor,     # (B, A)
    anchors: torch.Tensor,        # (A, 4)
    matched: torch.Tensor,        # (B, A) gt index or -1
    gt_boxes,                     # list of (G_i, 4)
    gt_positive_maps,             # list of (G_i, T) bool
    text_mask: torch.Tensor,      # (B, T) bool
    box_coder,
    no_object_token: int,         # index of the "no object" slot, or -1 when the batch has none
    alpha: float = 0.25,
    gamma: float = 2.0,
    weights=(1.0, 2.0, 1.0),
):
    B, A, T = token_logits.shape
    targets = torch.zeros((B, A, T), dtype=torch.bool, device=token_logits.device)
    pos_gt_boxes, pos_anchor_idx, pos_img_idx = [], [], []
    for i in range(B):
        pos = matched[i] >= 0
        idx = matched[i][pos]
        if idx.numel():
            targets[i, pos] = gt_positive_maps[i][idx, :T]
        if no_object_token >= 0:
            targets[i, ~pos, no_object_token] = True
        pos_gt_boxes.append(gt_boxes[i][idx])
        pos_anchor_idx.append(pos.nonzero().squeeze(1))
        pos_img_idx.append(torch.full_like(idx, i))
    pos_gt_boxes = torch.cat(pos_gt_boxes)
    pos_anchor_idx = torch.cat(pos_anchor_idx)
    pos_img_idx = torch.cat(pos_img_idx)
    pos_anchors = anchors[pos_anchor_idx]
    ctr_targets = centerness_targets(pos_anchors, pos_gt_boxes) if pos_anchor_idx.numel() > 0 else None
    # Normalisers averaged over workers, as the reference: reached by every worker (a worker without
    # positives contributes 0) so the collective never waits on one that skipped it.
    num_pos, ctr_norm = reduce_mean(pos_anchor_idx.numel(), ctr_targets.sum().item() if ctr_targets is not None else 0.0)
    num_pos = max(num_pos, 1.0)

    loss_token = token_sigmoid_focal_loss(token_logits.float(), targets, text_mask, alpha, gamma) / num_pos
    if ctr_targets is not None:
        pred_boxes = box_coder.decode(box_deltas[pos_img_idx, pos_anchor_idx].float(), pos_anchors)
        loss_giou = (giou_loss_terms(pred_boxes, pos_gt_boxes) * ctr_targets).sum() / max(ctr_norm, 1e-6)
        loss_ctr = F.binary_cross_entropy_with_logits(
            centerness[pos_img_idx, pos_anchor_idx].float(), ctr_targets, reduction="sum"
        ) / num_pos
    else:
        loss_giou = box_deltas.sum() * 0.0
        loss_ctr = centerness.sum() * 0.0
    w_tok, w_giou, w_ctr = weights
    return {
        "loss_token": loss_token * w_tok,
        "loss_giou": loss_giou * w_giou,
        "loss_centerness": loss_ctr * w_ctr,
    }
