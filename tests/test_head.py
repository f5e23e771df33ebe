"""DyHead deformable convs, the reference's offset quirk, losses and inference on hand-made cases."""
import math

import pytest
import torch
from torchvision.ops import deform_conv2d

import fiber_det  # noqa: F401
from fiber_det.modeling.anchors import LegacyBoxCoder
from fiber_det.modeling.head.dyhead import DyConv, deform_conv2d_sampled, reinterpret_as
from fiber_det.modeling.losses import centerness_targets, fiber_losses
from fiber_det.modeling.postprocess import fiber_inference


@pytest.mark.parametrize("shape,stride", [((2, 6, 7, 9), 1), ((2, 6, 8, 10), 2), ((1, 4, 1, 1), 1)])
def test_sampled_deform_conv_equals_torchvision(shape, stride):
    g = torch.Generator().manual_seed(0)
    B, C, H, W = shape
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64, requires_grad=True)
    off = (torch.randn(B, 18, Ho, Wo, generator=g, dtype=torch.float64) * 3).requires_grad_()
    mask = torch.rand(B, 9, Ho, Wo, generator=g, dtype=torch.float64).requires_grad_()
    w = torch.randn(5, C, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    ref = deform_conv2d(x, off, w, b, stride=stride, padding=1, mask=mask)
    got = deform_conv2d_sampled(x, off, w, b, stride, 1, mask)
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)
    for gr, gg in zip(torch.autograd.grad(ref.sum(), [x, off, mask, w]), torch.autograd.grad(got.sum(), [x, off, mask, w])):
        torch.testing.assert_close(gg, gr, atol=1e-10, rtol=0)


def slow_reinterpret(t, channels, h, w):
    """The reference kernel's read, spelled out: element (c, y, x) of image b is the
    (c*h*w + y*w + x)-th value of image b's own contiguous block."""
    out = torch.empty(t.shape[0], channels, h, w, dtype=t.dtype)
    for b in range(t.shape[0]):
        block = t[b].contiguous().view(-1)
        for c in range(channels):
            for y in range(h):
                for x in range(w):
                    out[b, c, y, x] = block[c * h * w + y * w + x]
    return out


def test_offset_quirk_matches_explicit_memory_reinterpretation():
    torch.manual_seed(0)
    block = DyConv(channels=16, gn_groups=4, deformable=True, offset_quirk=True, deform_impl="torchvision").double()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    feats = [torch.randn(2, 16, 9, 11, dtype=torch.float64), torch.randn(2, 16, 5, 6, dtype=torch.float64)]
    out = block(feats)
    # Level 0 by hand: its level-1 conv reads level 0's offsets/masks re-cut to (5, 6).
    om = block.offset(feats[0])
    offset, mask = om[:, :18], om[:, 18:].sigmoid()
    up_off, up_mask = slow_reinterpret(offset, 18, 5, 6), slow_reinterpret(mask, 9, 5, 6)
    torch.testing.assert_close(reinterpret_as(offset, 18, 5, 6), up_off)
    conv = lambda m, x, o, k: m.bn(deform_conv2d(x, o, m.conv.weight, m.conv.bias, stride=m.stride, padding=1, mask=k))  # noqa: E731
    same = conv(block.DyConv[1], feats[0], offset, mask)
    up = torch.nn.functional.interpolate(conv(block.DyConv[0], feats[1], up_off, up_mask), size=(9, 11),
                                         mode="bilinear", align_corners=True)
    attn = lambda t: torch.nn.functional.relu6(block.AttnConv(t) + 3) / 6  # noqa: E731
    want = block.relu((same * attn(same) + up * attn(up)) / 2)
    torch.testing.assert_close(out[0], want)
    # The clean switch computes level 1's offsets on level 1 instead, which changes the result.
    block.offset_quirk = False
    assert not torch.allclose(block(feats)[0], out[0])


def test_losses_equal_hand_computation():
    coder = LegacyBoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 9.0, 9.0], [10.0, 10.0, 29.0, 29.0]])
    gt = torch.tensor([[12.0, 8.0, 31.0, 27.0]])
    logits = torch.tensor([[[2.0, -1.0, 0.5], [-3.0, 1.0, 0.0]]])
    deltas = torch.zeros(1, 2, 4)  # predicted boxes = anchors
    ctr_logit = torch.tensor([[0.3, -0.2]])
    pmap = torch.tensor([[False, True, True]])
    text_mask = torch.tensor([[True, True, False]])  # token 2 is padding
    matched = torch.tensor([[-1, 0]])
    out = fiber_losses(token_logits=logits, box_deltas=deltas, centerness=ctr_logit, anchors=anchors,
                       matched=matched, gt_boxes=[gt], gt_positive_maps=[pmap], text_mask=text_mask,
                       box_coder=coder, no_object_token=-1, weights=(1.0, 2.0, 1.0))

    def focal(x, t, a=0.25, g=2.0):
        p = 1 / (1 + math.exp(-x))
        ce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
        pt = p * t + (1 - p) * (1 - t)
        return (a * t + (1 - a) * (1 - t)) * ce * (1 - pt) ** g

    # anchor 0 negative: tokens 0, 1 (target 0); anchor 1 positive: token 0 -> 0, token 1 -> 1.
    want_tok = focal(2.0, 0) + focal(-1.0, 0) + focal(-3.0, 0) + focal(1.0, 1)
    assert out["loss_token"].item() == pytest.approx(want_tok, rel=1e-6)
    # GIoU of anchor [10,10,29,29] vs gt [12,8,31,27] (no +1): inter 17*17, union 361+361-289.
    inter, union, encl = 17 * 17, 19 * 19 * 2 - 17 * 17, 21 * 21
    giou = inter / union - (encl - union) / encl
    ctr = math.sqrt((min(7.5, 11.5) / max(7.5, 11.5)) * (min(11.5, 7.5) / max(11.5, 7.5)))
    assert centerness_targets(anchors[1:], gt).item() == pytest.approx(ctr, rel=1e-6)
    assert out["loss_giou"].item() == pytest.approx(2.0 * (1 - giou), rel=1e-5)
    bce = -(ctr * math.log(1 / (1 + math.exp(0.2))) + (1 - ctr) * math.log(1 - 1 / (1 + math.exp(0.2))))
    assert out["loss_centerness"].item() == pytest.approx(bce, rel=1e-6)


def test_no_object_slot_and_empty_image():
    coder = LegacyBoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 9.0, 9.0]])
    logits = torch.tensor([[[0.0, 0.0, 0.0]]])
    base = dict(token_logits=logits, box_deltas=torch.zeros(1, 1, 4), centerness=torch.zeros(1, 1), anchors=anchors,
                matched=torch.tensor([[-1]]), gt_boxes=[torch.zeros(0, 4)], gt_positive_maps=[torch.zeros(0, 3, dtype=torch.bool)],
                box_coder=coder)
    all_valid = fiber_losses(**base, text_mask=torch.ones(1, 3, dtype=torch.bool), no_object_token=2)
    none = fiber_losses(**base, text_mask=torch.ones(1, 3, dtype=torch.bool), no_object_token=-1)
    # The "no object" slot turns token 2's target into 1 when it is a valid token.
    p = 0.5
    neg = 0.75 * -math.log(1 - p) * p ** 2
    pos = 0.25 * -math.log(p) * (1 - p) ** 2
    assert none["loss_token"].item() == pytest.approx(3 * neg, rel=1e-6)
    assert all_valid["loss_token"].item() == pytest.approx(2 * neg + pos, rel=1e-6)
    assert none["loss_giou"].item() == 0.0 and none["loss_centerness"].item() == 0.0


def test_inference_scores_follow_the_formula():
    coder = LegacyBoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 31.0, 31.0], [32.0, 0.0, 63.0, 31.0], [0.0, 32.0, 31.0, 63.0]])
    logits = torch.tensor([[2.0, 1.0, -4.0, 3.0], [-5.0, -5.0, 0.5, -5.0], [-9.0, -9.0, -9.0, -9.0]])
    ctr = torch.tensor([0.5, -1.0, 2.0])
    pmap = torch.tensor([[True, True, False, False], [False, False, True, False]])  # token 3: no class
    inst = fiber_inference(token_logits=[logits], box_deltas=[torch.zeros(3, 4)], centerness=[ctr],
                           anchors=[anchors], positive_map=pmap, image_size=(64, 64), box_coder=coder,
                           score_threshold=0.05, plus_one=True)
    s = torch.sigmoid
    want = {
        (0, 0): math.sqrt(((s(torch.tensor(2.0)) + s(torch.tensor(1.0))) / 2 * s(torch.tensor(0.5))).item()),
        (0, 1): math.sqrt((s(torch.tensor(-4.0)) * s(torch.tensor(0.5))).item()) if s(torch.tensor(-4.0)) > 0.05 else None,
        (1, 1): math.sqrt((s(torch.tensor(0.5)) * s(torch.tensor(-1.0))).item()),
        (1, 0): None,  # mean sigmoid(-5) < 0.05
    }
    got = {}
    for box, score, label in zip(inst.pred_boxes.tensor, inst.scores, inst.pred_classes):
        loc = int(torch.nonzero((anchors == box).all(dim=1))[0])
        got[(loc, int(label))] = score.item()
    want = {k: v for k, v in want.items() if v is not None}
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-6)
    assert inst.scores.tolist() == sorted(inst.scores.tolist(), reverse=True)


def test_nms_free_inference_keeps_overlapping_candidates():
    coder = LegacyBoxCoder()
    # Two nearly identical anchors with the same class: NMS keeps one, NMS-free keeps both.
    anchors = torch.tensor([[0.0, 0.0, 31.0, 31.0], [1.0, 0.0, 32.0, 31.0], [40.0, 40.0, 63.0, 63.0]])
    logits = torch.tensor([[3.0, -9.0], [2.0, -9.0], [-9.0, 1.0]])
    ctr = torch.zeros(3)
    pmap = torch.tensor([[True, False], [False, True]])
    kwargs = dict(token_logits=[logits], box_deltas=[torch.zeros(3, 4)], centerness=[ctr], anchors=[anchors],
                  positive_map=pmap, image_size=(64, 64), box_coder=coder, score_threshold=0.05)
    with_nms = fiber_inference(**kwargs, nms=True)
    free = fiber_inference(**kwargs, nms=False)
    assert len(with_nms) == 2 and len(free) == 3
    assert free.scores.tolist() == sorted(free.scores.tolist(), reverse=True)
    capped = fiber_inference(**kwargs, nms=False, max_detections=2)
    assert capped.scores.tolist() == free.scores[:2].tolist()
