"""Pure-PyTorch stand-in for detectron2's compiled extension ``detectron2._C``.

detectron2 v0.6 keeps its rotated-box ops, deformable convolution and a fast COCOeval in C++/CUDA.
The ``pb1-detectron2`` sdist has no such sources, so ``tools/setup_env.sh`` copies this file into it
as ``detectron2/_C.py``. It must therefore import nothing but torch, numpy and the standard library.

What detectron2 v0.6 calls on ``_C``, and what this module answers:

- ``box_iou_rotated``: exact convex-polygon intersection, vectorised over box pairs.
- ``nms_rotated``: greedy NMS on that IoU; also registered as ``torch.ops.detectron2.nms_rotated``,
  which is how ``detectron2/layers/nms.py`` calls it.
- ``roi_align_rotated_forward`` / ``roi_align_rotated_backward``: the same sampling grid and bilinear
  rule as the C++ kernel; the backward pass is the vector-Jacobian product of the forward.
- ``get_compiler_version``, ``get_cuda_version``, ``has_cuda``: for ``collect_env_info``.
- Not here: ``deform_conv_*`` / ``modulated_deform_conv_*`` (``fiber_det.compat`` routes
  detectron2's DeformConv layers to ``torchvision.ops.deform_conv2d`` instead) and the COCOeval fast
  path (``InstanceAnnotation``, ``COCOevalEvaluateImages``, ``COCOevalAccumulate``): build
  ``COCOEvaluator(..., use_fast_impl=False)``. Asking for any of them raises an AttributeError
  that says so.
"""
import math

import numpy as np
import torch

# Lets fiber_det.compat and tools/setup_env.sh tell this module from a compiled build.
FIBER_DET_STANDIN = True

_MISSING = {
    "deform_conv_forward": "deformable convolution",
    "deform_conv_backward_input": "deformable convolution",
    "deform_conv_backward_filter": "deformable convolution",
    "modulated_deform_conv_forward": "deformable convolution",
    "modulated_deform_conv_backward": "deformable convolution",
    "InstanceAnnotation": "the fast COCOeval",
    "ImageEvaluation": "the fast COCOeval",
    "COCOevalEvaluateImages": "the fast COCOeval",
    "COCOevalAccumulate": "the fast COCOeval",
}
_WHAT_TO_DO = {
    "deformable convolution": "`import fiber_det` first (it routes detectron2's DeformConv and "
    "ModulatedDeformConv to torchvision.ops.deform_conv2d), or call torchvision directly",
    "the fast COCOeval": "build COCOEvaluator(..., use_fast_impl=False); fiber-det passes "
    "use_fast_impl=fiber_det.compat.has_compiled_detectron2()",
}


def __getattr__(name):
    if name in _MISSING:
        what = _MISSING[name]
        raise AttributeError(
            f"detectron2._C.{name} does not exist: this detectron2._C is fiber-det's pure-Python "
            f"stand-in ({__file__}), which has no {what}. Instead, {_WHAT_TO_DO[what]}."
        )
    raise AttributeError(f"module 'detectron2._C' (fiber-det's pure-Python stand-in) has no attribute {name!r}")


def get_compiler_version() -> str:
    return "none (pure-Python detectron2._C stand-in from fiber-det)"


def get_cuda_version() -> str:
    return "none (pure-Python detectron2._C stand-in from fiber-det)"


def has_cuda() -> bool:
    # False: there is no compiled CUDA code here (the ops still run on CUDA tensors through torch).
    return False


# ---------------------------------------------------------------------------------------------
# Rotated boxes: (x_center, y_center, width, height, angle in degrees, counter-clockwise as
# seen in an image whose y axis points down), as in detectron2.structures.RotatedBoxes.
# ---------------------------------------------------------------------------------------------


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]


def rotated_box_corners(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 5) rotated boxes -> (..., 4, 2) corners in cyclic order (same as detectron2's C++)."""
    cx, cy, w, h, angle = boxes.unbind(-1)
    theta = angle * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    half_w = torch.stack([cos * w, -sin * w], dim=-1) * 0.5  # the width axis
    half_h = torch.stack([sin * h, cos * h], dim=-1) * 0.5  # the height axis
    center = torch.stack([cx, cy], dim=-1)
    return torch.stack(
        [center + half_w + half_h, center + half_w - half_h,
         center - half_w - half_h, center - half_w + half_h],
        dim=-2,
    )


def _points_in_rectangles(points: torch.Tensor, corners: torch.Tensor, tol: torch.Tensor) -> torch.Tensor:
    """points (P, K, 2), rectangle corners (P, 4, 2) -> (P, K) inside or on the border.

    tol (P, 1) is the slack on the dot products (squared lengths) that absorbs rounding.
    """
    origin = corners[:, None, 0]
    ab = corners[:, None, 1] - origin
    ad = corners[:, None, 3] - origin
    ap = points - origin
    ap_ab, ap_ad = _dot(ap, ab), _dot(ap, ad)
    ab_ab, ad_ad = _dot(ab, ab), _dot(ad, ad)
    return (ap_ab >= -tol) & (ap_ab <= ab_ab + tol) & (ap_ad >= -tol) & (ap_ad <= ad_ad + tol)


def _paired_intersection_area(corners1: torch.Tensor, corners2: torch.Tensor) -> torch.Tensor:
    """Area of the intersection of rectangle corners1[p] with corners2[p]: (P, 4, 2) x2 -> (P,).

    The intersection of two convex polygons is the convex hull of the corners of each that lie in
    the other plus the crossings of their edges; ordering those candidates by angle around their
    mean gives the polygon, whose area the shoelace formula sums.
    """
    num_pairs = corners1.shape[0]
    rounding = 64 * torch.finfo(corners1.dtype).eps
    scale = torch.maximum(corners1.abs().amax(dim=(1, 2)), corners2.abs().amax(dim=(1, 2)))
    tol = (rounding * scale * scale)[:, None]
    inside1 = _points_in_rectangles(corners1, corners2, tol)  # (P, 4)
    inside2 = _points_in_rectangles(corners2, corners1, tol)

    a0 = corners1[:, :, None, :]  # (P, 4, 1, 2): edges of box 1 ...
    da = corners1.roll(-1, dims=1)[:, :, None, :] - a0
    b0 = corners2[:, None, :, :]  # (P, 1, 4, 2): ... against edges of box 2
    db = corners2.roll(-1, dims=1)[:, None, :, :] - b0
    denom = _cross(da, db)  # (P, 4, 4); zero for parallel edges, whose overlap the corners cover
    not_parallel = denom.abs() > rounding * (_dot(da, da) * _dot(db, db)).sqrt()
    denom = torch.where(not_parallel, denom, torch.ones_like(denom))
    offset = b0 - a0
    t = _cross(offset, db) / denom
    u = _cross(offset, da) / denom
    crossing = not_parallel & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
    crossings = a0 + t[..., None] * da

    points = torch.cat([corners1, corners2, crossings.reshape(num_pairs, 16, 2)], dim=1)  # (P, 24, 2)
    valid = torch.cat([inside1, inside2, crossing.reshape(num_pairs, 16)], dim=1)
    count = valid.sum(dim=1)

    points = torch.where(valid[..., None], points, torch.zeros_like(points))
    mean = points.sum(dim=1) / count.clamp(min=1)[:, None].to(points.dtype)
    rel = points - mean[:, None]
    angle = torch.atan2(rel[..., 1], rel[..., 0])
    angle = torch.where(valid, angle, torch.full_like(angle, 4.0))  # invalid ones sort last
    order = angle.argsort(dim=1)
    rel = rel.gather(1, order[..., None].expand(-1, -1, 2))
    valid = valid.gather(1, order)
    # Repeat the first vertex in the unused slots: repeated vertices add nothing to the shoelace sum.
    rel = torch.where(valid[..., None], rel, rel[:, :1].expand_as(rel))
    area = 0.5 * _cross(rel, rel.roll(-1, dims=1)).sum(dim=1).abs()
    return torch.where(count >= 3, area, torch.zeros_like(area))


def box_iou_rotated(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of every rotated box in boxes1 (N, 5) with every one in boxes2 (M, 5) -> (N, M) float32."""
    out = torch.zeros(boxes1.shape[0], boxes2.shape[0], dtype=torch.float32, device=boxes1.device)
    dtype = torch.promote_types(boxes1.dtype, torch.float32)
    boxes1, boxes2 = boxes1.to(dtype), boxes2.to(device=boxes1.device, dtype=dtype)
    # Only pairs whose circumscribed circles overlap can intersect; the exact test runs on those.
    radius1 = 0.5 * torch.hypot(boxes1[:, 2], boxes1[:, 3])
    radius2 = 0.5 * torch.hypot(boxes2[:, 2], boxes2[:, 3])
    distance = torch.cdist(boxes1[:, :2], boxes2[:, :2], compute_mode="donot_use_mm_for_euclid_dist")
    near = distance < radius1[:, None] + radius2[None]
    rows, cols = near.nonzero(as_tuple=True)
    for start in range(0, rows.numel(), 32768):  # bounds the (pairs, 24, 2) work tensors
        r, c = rows[start : start + 32768], cols[start : start + 32768]
        b1, b2 = boxes1[r], boxes2[c]
        # Measure both boxes from the midpoint of their centers, as the C++ kernel does, so that
        # float32 keeps its precision for boxes far from the origin.
        mid = (b1[:, :2] + b2[:, :2]) * 0.5
        b1 = torch.cat([b1[:, :2] - mid, b1[:, 2:]], dim=1)
        b2 = torch.cat([b2[:, :2] - mid, b2[:, 2:]], dim=1)
        inter = _paired_intersection_area(rotated_box_corners(b1), rotated_box_corners(b2))
        area1, area2 = b1[:, 2] * b1[:, 3], b2[:, 2] * b2[:, 3]
        union = area1 + area2 - inter
        degenerate = (area1 < 1e-14) | (area2 < 1e-14) | (union <= 0)
        iou = torch.where(degenerate, torch.zeros_like(inter), inter / union.clamp(min=1e-14))
        out[r, c] = iou.float()
    return out


def nms_rotated(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS of rotated boxes dets (N, 5): int64 indices of the kept ones, best score first."""
    if dets.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=dets.device)
    order = scores.argsort(descending=True)
    overlaps = (box_iou_rotated(dets[order], dets[order]) > iou_threshold).cpu().numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlaps[i]
    return order[torch.as_tensor(keep, dtype=torch.int64, device=dets.device)]


# ---------------------------------------------------------------------------------------------
# ROIAlignRotated. rois are (batch index, x_center, y_center, width, height, angle in degrees).
# ---------------------------------------------------------------------------------------------


def _bilinear_gather(
    rows: torch.Tensor, height: int, width: int, batch: torch.Tensor, y: torch.Tensor, x: torch.Tensor
):
    """Bilinear samples at (y, x) of shape (R, ...) in image batch[r] of features (N, C, H, W),
    given as rows (N*H*W, C).

    Follows the C++ rule: a point further than one pixel outside the map reads 0, a point within that
    pixel reads the border, and a point past the last row/column reads that row/column.
    Returns (R, ..., C).
    """
    inside = (y >= -1.0) & (y <= height) & (x >= -1.0) & (x <= width)
    y, x = y.clamp(min=0), x.clamp(min=0)
    y_low, x_low = y.floor().long(), x.floor().long()
    y_last, x_last = y_low >= height - 1, x_low >= width - 1
    y_low, x_low = y_low.clamp(max=height - 1), x_low.clamp(max=width - 1)
    y = torch.where(y_last, y_low.to(y.dtype), y)
    x = torch.where(x_last, x_low.to(x.dtype), x)
    y_high, x_high = (y_low + 1).clamp(max=height - 1), (x_low + 1).clamp(max=width - 1)
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx

    base = (batch * (height * width)).view(-1, *([1] * (y.dim() - 1)))
    out = 0
    for yi, xi, weight in (
        (y_low, x_low, hy * hx), (y_low, x_high, hy * lx),
        (y_high, x_low, ly * hx), (y_high, x_high, ly * lx),
    ):
        values = rows.index_select(0, (base + yi * width + xi).reshape(-1)).view(*y.shape, -1)
        out = out + values * (weight * inside)[..., None]
    return out


def roi_align_rotated_forward(
    input: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
) -> torch.Tensor:
    """(N, C, H, W) features, (R, 6) rois -> (R, C, pooled_height, pooled_width)."""
    num_rois, channels = rois.shape[0], input.shape[1]
    out = input.new_zeros(num_rois, channels, pooled_height, pooled_width)
    if num_rois == 0:
        return out
    rois = rois.to(input.dtype)
    batch = rois[:, 0].long()
    # Half-pixel offset: the C++ kernel always uses aligned (continuous) coordinates.
    center_x = rois[:, 1] * spatial_scale - 0.5
    center_y = rois[:, 2] * spatial_scale - 0.5
    roi_w = rois[:, 3] * spatial_scale
    roi_h = rois[:, 4] * spatial_scale
    if bool(((roi_w < 0) | (roi_h < 0)).any()):
        raise ValueError("roi_align_rotated_forward: ROIs in ROIAlignRotated must have non-negative size")
    theta = rois[:, 5] * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    bin_h, bin_w = roi_h / pooled_height, roi_w / pooled_width

    # Samples per bin: fixed, or adaptive per ROI (ceil of the bin size); ROIs are grouped by it.
    if sampling_ratio > 0:
        grids = torch.full((num_rois, 2), sampling_ratio, dtype=torch.long, device=rois.device)
    else:
        grids = torch.stack([torch.ceil(bin_h), torch.ceil(bin_w)], dim=1).long()
    height, width = input.shape[2:]
    rows = input.permute(0, 2, 3, 1).reshape(-1, channels)  # (N*H*W, C), for row gathers
    ph = torch.arange(pooled_height, device=rois.device, dtype=input.dtype)
    pw = torch.arange(pooled_width, device=rois.device, dtype=input.dtype)
    for grid_h, grid_w in torch.unique(grids, dim=0).tolist():
        if grid_h == 0 or grid_w == 0:
            continue  # an empty ROI pools to zeros
        idx = ((grids[:, 0] == grid_h) & (grids[:, 1] == grid_w)).nonzero().squeeze(1)
        acc = 0
        for iy in range(grid_h):
            # (Rg, PH, 1): sample offsets from the ROI center along its height axis
            yy = -roi_h[idx, None] / 2 + (ph[None] + (iy + 0.5) / grid_h) * bin_h[idx, None]
            yy = yy[:, :, None]
            for ix in range(grid_w):
                xx = -roi_w[idx, None] / 2 + (pw[None] + (ix + 0.5) / grid_w) * bin_w[idx, None]
                xx = xx[:, None, :]  # (Rg, 1, PW)
                c, s = cos[idx, None, None], sin[idx, None, None]
                y = yy * c - xx * s + center_y[idx, None, None]
                x = yy * s + xx * c + center_x[idx, None, None]
                acc = acc + _bilinear_gather(rows, height, width, batch[idx], y, x)  # (Rg, PH, PW, C)
        out[idx] = (acc / (grid_h * grid_w)).permute(0, 3, 1, 2).to(out.dtype)
    return out


def roi_align_rotated_backward(
    grad: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
    sampling_ratio: int,
) -> torch.Tensor:
    """Gradient w.r.t. the (batch_size, channels, height, width) features of the forward above."""
    with torch.enable_grad():
        features = grad.new_zeros(batch_size, channels, height, width, requires_grad=True)
        out = roi_align_rotated_forward(
            features, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio
        )
        if not out.requires_grad:  # no ROI samples the map
            return features.detach()
        (grad_features,) = torch.autograd.grad(out, features, grad)
    return grad_features


if __name__ == "detectron2._C":
    # Only as detectron2's own _C: registering this op next to a compiled _C would clash with it.
    _nms_rotated_op = torch.library.custom_op("detectron2::nms_rotated", nms_rotated, mutates_args=())
