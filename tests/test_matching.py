"""ATSS assignment against a straightforward per-box implementation; Hungarian sanity."""
import pytest
import torch

import fiber_det  # noqa: F401
from fiber_det.modeling.anchors import AnchorGenerator
from fiber_det.modeling.matching import ATSSMatcher, HungarianMatcher


def iou_plus_one(a, b):
    """Per-pair IoU with the legacy "+1" convention, written out by hand."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def atss_reference(anchors, num_per_level, gts, topk=9):
    """One box at a time, one level at a time, as the algorithm is described."""
    A = anchors.shape[0]
    best_iou = [float("-inf")] * A
    best_gt = [-1] * A
    a = anchors.tolist()
    centres = [((x1 + x2) / 2, (y1 + y2) / 2) for x1, y1, x2, y2 in a]
    for g, box in enumerate(gts.tolist()):
        gc = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        dist = torch.tensor([((c[0] - gc[0]) ** 2 + (c[1] - gc[1]) ** 2) ** 0.5 for c in centres])
        cands, start = [], 0
        for n in num_per_level:
            k = min(topk, n)
            cands += (torch.topk(dist[start : start + n], k, largest=False).indices + start).tolist()
            start += n
        ious = torch.tensor([iou_plus_one(a[i], box) for i in cands])
        thr = ious.mean() + ious.std()
        for i, iou in zip(cands, ious.tolist()):
            cx, cy = centres[i]
            inside = min(cx - box[0], cy - box[1], box[2] - cx, box[3] - cy) > 0.01
            if iou >= thr and inside and iou > best_iou[i]:
                best_iou[i], best_gt[i] = iou, g
    return torch.tensor(best_gt)


def make_anchors(h, w, sizes=(32, 64, 128, 256, 512), strides=(8, 16, 32, 64, 128)):
    shapes = [((h + s - 1) // s, (w + s - 1) // s) for s in strides]
    levels = AnchorGenerator(sizes, strides)(shapes, "cpu")
    return torch.cat(levels), [len(x) for x in levels]


def random_boxes(g, n, h, w):
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.9, h * 0.9])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5]) + 2
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[:, 2] = boxes[:, 2].clamp(max=w - 1)
    boxes[:, 3] = boxes[:, 3].clamp(max=h - 1)
    return boxes.round()  # integer coordinates create IoU and distance ties


@pytest.mark.parametrize("seed", range(6))
def test_atss_equals_per_box_reference(seed):
    g = torch.Generator().manual_seed(seed)
    h, w = 200 + 16 * seed, 264
    anchors, per_level = make_anchors(h, w)
    gts = random_boxes(g, 1 + 4 * seed, h, w)
    if seed == 5:  # duplicated box: ties between boxes go to the first
        gts = torch.cat([gts, gts[:1]])
    got = ATSSMatcher(9, plus_one=True)(anchors, per_level, gts)
    want = atss_reference(anchors, per_level, gts)
    assert torch.equal(got, want)
    assert (got >= 0).any()


def test_atss_no_boxes_and_box_without_anchor_centre():
    anchors, per_level = make_anchors(128, 128)
    assert (ATSSMatcher()(anchors, per_level, torch.zeros((0, 4))) == -1).all()
    # A 1-pixel box between anchor centres: candidates exist but no centre lies inside it.
    tiny = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    got = ATSSMatcher()(anchors, per_level, tiny)
    assert torch.equal(got, atss_reference(anchors, per_level, tiny))
    assert (got == -1).all()


def test_hungarian_is_one_to_one_and_prefers_matching_boxes():
    gts = torch.tensor([[10.0, 10, 50, 50], [60, 60, 120, 100]])
    preds = torch.tensor([[60.0, 61, 119, 100], [0, 0, 5, 5], [11, 10, 50, 49], [100, 100, 127, 127]])
    pmap = torch.zeros(2, 8, dtype=torch.bool)
    pmap[0, 1] = pmap[1, 3] = True
    logits = torch.full((4, 8), -5.0)
    matched = HungarianMatcher()(logits, preds, gts, pmap, (128, 128))
    assert matched.tolist() == [1, -1, 0, -1]


def test_hungarian_minimises_the_configured_cost():
    """The assignment equals a brute-force search over all one-to-one assignments of the
    explicitly written cost (focal + L1 + GIoU with the given weights)."""
    import itertools

    from torchvision.ops import generalized_box_iou

    g = torch.Generator().manual_seed(3)
    num_pred, num_gt, T, size = 5, 3, 6, (100.0, 80.0)
    xy = torch.rand(num_pred + num_gt, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 10 + torch.rand(num_pred + num_gt, 2, generator=g) * 30], dim=1)
    preds, gts = boxes[:num_pred], boxes[num_pred:]
    logits = torch.randn(num_pred, T, generator=g) * 2
    pmap = torch.zeros(num_gt, T, dtype=torch.bool)
    pmap[0, 1] = pmap[1, 2:4] = pmap[2, 5] = True
    weights = (1.5, 4.0, 3.0)
    p = logits.sigmoid()
    focal = 0.25 * (1 - p) ** 2 * -(p + 1e-8).log() - 0.75 * p ** 2 * -(1 - p + 1e-8).log()
    cost_class = torch.stack([focal[:, m].mean(dim=1) for m in pmap], dim=1)
    norm = torch.tensor([size[1], size[0], size[1], size[0]])
    cost_l1 = (preds[:, None] / norm - gts[None] / norm).abs().sum(-1)
    cost = weights[0] * cost_class + weights[1] * cost_l1 - weights[2] * generalized_box_iou(preds, gts)
    best = min(itertools.permutations(range(num_pred), num_gt),
               key=lambda rows: sum(cost[r, c].item() for c, r in enumerate(rows)))
    want = torch.full((num_pred,), -1)
    want[list(best)] = torch.arange(num_gt)
    got = HungarianMatcher(*weights)(logits, preds, gts, pmap, size)
    assert got.tolist() == want.tolist()
    blocked = HungarianMatcher(*weights)
    blocked.block_elements = 2 * num_gt  # the cost computed two anchors at a time
    assert blocked(logits, preds, gts, pmap, size).tolist() == want.tolist()
    assert (HungarianMatcher()(logits, preds, gts[:0], pmap[:0], size) == -1).all()
