"""Anchors and box coding with the reference's legacy "+1" pixel convention (ARCHITECTURE.md s. 6).

A box (x1, y1, x2, y2) in this convention is ``x2 - x1 + 1`` pixels wide. The reference generates
one square anchor per location, centred at ``(x * stride + (stride - 1) / 2, ...)``, spanning
``size`` pixels in that convention.
"""
import math
from typing import List, Sequence

import torch


def level_anchors(size: float, stride: int, height: int, width: int, device=None) -> torch.Tensor:
    """(height*width, 4) anchors of one level, row-major over (y, x) like flattened NCHW features."""
    half = (size - 1) / 2.0
    centre = (stride - 1) / 2.0
    shifts_x = torch.arange(width, device=device, dtype=torch.float32) * stride
    shifts_y = torch.arange(height, device=device, dtype=torch.float32) * stride
    sy, sx = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    sx, sy = sx.reshape(-1), sy.reshape(-1)
    base = torch.tensor([centre - half, centre - half, centre + half, centre + half], device=device)
    return torch.stack([sx, sy, sx, sy], dim=1) + base


class AnchorGenerator:
    """One square anchor per feature location per level; sizes[i] at strides[i]."""

    def __init__(self, sizes: Sequence[float], strides: Sequence[int]):
        if len(sizes) != len(strides):
            raise ValueError(f"anchor sizes {list(sizes)} and strides {list(strides)} differ in length")
        self.sizes = [float(s) for s in sizes]
        self.strides = [int(s) for s in strides]
        self._cache = {}

    def __call__(self, feature_shapes: Sequence[Sequence[int]], device) -> List[torch.Tensor]:
        key = (tuple(tuple(s) for s in feature_shapes), str(device))
        if key not in self._cache:
            self._cache[key] = [
                level_anchors(size, stride, h, w, device)
                for size, stride, (h, w) in zip(self.sizes, self.strides, feature_shapes)
            ]
        return self._cache[key]


class LegacyBoxCoder:
    """Encodes boxes as (dx, dy, dw, dh) deltas w.r.t. anchors, "+1" widths, weighted, dw/dh clamped."""

    def __init__(self, weights=(10.0, 10.0, 5.0, 5.0), clamp: float = math.log(1000.0 / 16)):
        self.weights = tuple(float(w) for w in weights)
        self.clamp = clamp

    @staticmethod
    def _centre_size(boxes: torch.Tensor):
        w = boxes[..., 2] - boxes[..., 0] + 1
        h = boxes[..., 3] - boxes[..., 1] + 1
        return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h

    def encode(self, gt: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        ax, ay, aw, ah = self._centre_size(anchors)
        gx, gy, gw, gh = self._centre_size(gt)
        wx, wy, ww, wh = self.weights
        return torch.stack(
            [wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], dim=-1
        )

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        anchors = anchors.to(deltas.dtype)
        ax, ay, aw, ah = self._centre_size(anchors)
        wx, wy, ww, wh = self.weights
        dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.clamp)
        dh = (deltas[..., 3] / wh).clamp(max=self.clamp)
        cx, cy = dx * aw + ax, dy * ah + ay
        w, h = torch.exp(dw) * aw, torch.exp(dh) * ah
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w - 1, cy + 0.5 * h - 1], dim=-1)
