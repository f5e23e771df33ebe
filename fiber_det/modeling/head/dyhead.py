"""DyHead tower (ARCHITECTURE.md section 6): DyConv blocks of modulated deformable convolutions over
three neighbouring FPN levels, scale attention and DyReLU task attention, on
``torchvision.ops.deform_conv2d``.
"""
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d


def h_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x + 3.0) / 6.0


def deform_conv2d_sampled(x, offset, weight, bias, stride: int, padding: int, mask):
    """Modulated deformable 3x3-style conv as bilinear sampling (``grid_sample``) + one matmul.

    Same maths and offset layout as ``torchvision.ops.deform_conv2d`` (channel 2k is dy, 2k+1 is
    dx of tap k = i * kw + j; samples outside the image read zeros), equal to it to float rounding
    in values and gradients, and several times faster on CPU, where torchvision's kernel is slow.
    """
    B, C, H, W = x.shape
    O, _, kh, kw = weight.shape
    K = kh * kw
    Ho, Wo = offset.shape[-2:]
    ki = torch.arange(kh, device=x.device, dtype=x.dtype).repeat_interleave(kw)
    kj = torch.arange(kw, device=x.device, dtype=x.dtype).repeat(kh)
    base_y = (torch.arange(Ho, device=x.device, dtype=x.dtype) * stride - padding)[None, :, None] + ki[:, None, None]
    base_x = (torch.arange(Wo, device=x.device, dtype=x.dtype) * stride - padding)[None, None, :] + kj[:, None, None]
    off = offset.view(B, K, 2, Ho, Wo)
    py, px = base_y + off[:, :, 0], base_x + off[:, :, 1]  # (B, K, Ho, Wo) pixel coordinates
    # align_corners=False maps pixel p to (2p + 1) / size - 1 exactly, also for size-1 maps.
    grid = torch.stack([(2 * px + 1) / W - 1, (2 * py + 1) / H - 1], dim=-1).view(B, K * Ho, Wo, 2)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(B, C, K, Ho, Wo) * mask.view(B, 1, K, Ho, Wo)
    out = torch.matmul(weight.reshape(O, C * K), sampled.reshape(B, C * K, Ho * Wo)).view(B, O, Ho, Wo)
    return out + bias.view(1, O, 1, 1)


def reinterpret_as(t: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """Reference quirk: read each image's block of ``t`` (B, C, H, W) as a contiguous
    (channels, height, width) array, i.e. the first channels*height*width values of the image's
    own memory, re-cut at the smaller width. Reads never cross images."""
    b = t.shape[0]
    return t.reshape(b, -1)[:, : channels * height * width].reshape(b, channels, height, width)


class ModulatedDeformConvGN(nn.Module):
    """3x3 modulated deformable conv with bias, then GroupNorm. Runs in fp32 even under autocast."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, gn_groups: int, deformable: bool,
                 impl: str = "auto"):
        super().__init__()
        if impl not in ("auto", "torchvision", "sampled"):
            raise ValueError(f"deformable conv impl must be auto, torchvision or sampled, got {impl!r}")
        self.impl = impl
        self.stride = stride
        self.deformable = deformable
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=True)
        self.bn = nn.GroupNorm(gn_groups, out_channels)

    def forward(self, x, offset: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None):
        if not self.deformable:
            return self.bn(self.conv(x))
        impl = self.impl if self.impl != "auto" else ("torchvision" if x.is_cuda else "sampled")
        # fp32 even under autocast (fp64 stays fp64): half-precision offsets sample the wrong pixels.
        dt = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            args = (x.to(dt), offset.to(dt), self.conv.weight.to(dt), self.conv.bias.to(dt))
            if impl == "torchvision":
                y = deform_conv2d(*args, stride=self.stride, padding=1, mask=mask.to(dt))
            else:
                y = deform_conv2d_sampled(*args, stride=self.stride, padding=1, mask=mask.to(dt))
        return self.bn(y)


class DyReLU(nn.Module):
    """Task attention: max(a1*x + b1, a2*x + b2) with coefficients from a pooled descriptor."""

    def __init__(self, channels: int, reduction: int = 4, lambda_a: float = 1.0,
                 init_a=(1.0, 0.0), init_b=(0.0, 0.0)):
        super().__init__()
        self.channels = channels
        self.lambda_a = lambda_a * 2.0
        self.init_a, self.init_b = tuple(init_a), tuple(init_b)
        squeeze = channels // reduction
        # Index layout 0/2 matches the reference's keys (relu.fc.0, relu.fc.2).
        self.fc = nn.Sequential(nn.Linear(channels, squeeze), nn.ReLU(inplace=True), nn.Linear(squeeze, 4 * channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        y = h_sigmoid(self.fc(x.mean(dim=(2, 3)))).view(b, 4 * c, 1, 1)
        a1, b1, a2, b2 = torch.split(y, c, dim=1)
        a1 = (a1 - 0.5) * self.lambda_a + self.init_a[0]
        a2 = (a2 - 0.5) * self.lambda_a + self.init_a[1]
        b1 = b1 - 0.5 + self.init_b[0]
        b2 = b2 - 0.5 + self.init_b[1]
        return torch.max(x * a1 + b1, x * a2 + b2)


class DyConv(nn.Module):
    """One tower block. For level l it mixes conv(level l+1) upsampled, conv(level l), and a
    stride-2 conv(level l-1), weighted by scale attention, then applies DyReLU.

    ``offset_quirk`` reproduces the reference's level-(l+1) conv reading level l's offsets and
    masks re-cut to its own shape (see ``reinterpret_as``); off, it computes them on level l+1.
    """

    def __init__(self, channels: int = 256, gn_groups: int = 16, deformable: bool = True, offset_quirk: bool = True,
                 deform_impl: str = "auto"):
        super().__init__()
        # Index order is the reference's: 0 = level l+1, 1 = level l, 2 = level l-1 (stride 2).
        self.DyConv = nn.ModuleList([
            ModulatedDeformConvGN(channels, channels, s, gn_groups, deformable, deform_impl) for s in (1, 1, 2)
        ])
        self.AttnConv = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, 1, kernel_size=1), nn.ReLU(inplace=True))
        self.relu = DyReLU(channels)
        self.deformable = deformable
        self.offset_quirk = offset_quirk
        self.offset = nn.Conv2d(channels, 27, kernel_size=3, stride=1, padding=1) if deformable else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def _offsets(self, feature: torch.Tensor):
        offset_mask = self.offset(feature)
        return offset_mask[:, :18], offset_mask[:, 18:].sigmoid()

    def forward(self, feats: List[torch.Tensor]) -> List[torch.Tensor]:
        outs = []
        for level, feature in enumerate(feats):
            offset = mask = None
            if self.deformable:
                offset, mask = self._offsets(feature)
            mixed = [self.DyConv[1](feature, offset, mask)]
            if level > 0:
                mixed.append(self.DyConv[2](feats[level - 1], offset, mask))
            if level < len(feats) - 1:
                upper = feats[level + 1]
                up_offset = up_mask = None
                if self.deformable:
                    h, w = upper.shape[-2:]
                    if self.offset_quirk:
                        up_offset, up_mask = reinterpret_as(offset, 18, h, w), reinterpret_as(mask, 9, h, w)
                    else:
                        up_offset, up_mask = self._offsets(upper)
                up = self.DyConv[0](upper, up_offset, up_mask)
                mixed.append(F.interpolate(up, size=feature.shape[-2:], mode="bilinear", align_corners=True))
            stacked = torch.stack(mixed)
            attn = h_sigmoid(torch.stack([self.AttnConv(m) for m in mixed]))
            outs.append(self.relu((stacked * attn).mean(dim=0)))
        return outs
