"""FPN of the reference (ARCHITECTURE.md section 5): C3..C5 -> P3..P7 with 1x1 laterals, 3x3
outputs, nearest top-down, P6 = conv(P5) stride 2, P7 = conv(relu(P6)) stride 2. Parameter names
follow the reference (fpn_inner2.., fpn_layer2.., top_blocks.p6/p7) so its checkpoints map 1:1."""
from typing import List

import torch
import torch.nn.functional as F
from torch import nn


class DropBlock2D(nn.Module):
    """DropBlock (Ghiasi et al. 2018) as the reference's FPN uses it: blocks of ``block_size``
    zeroed with per-position seed probability drop_prob / block_size^2, output rescaled."""

    def __init__(self, drop_prob: float, block_size: int):
        super().__init__()
        self.drop_prob, self.block_size = drop_prob, block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        gamma = self.drop_prob / (self.block_size ** 2)
        seeds = (torch.rand(x.shape[0], *x.shape[2:], device=x.device) < gamma).to(x.dtype)
        block = 1 - F.max_pool2d(seeds[:, None], self.block_size, stride=1, padding=self.block_size // 2)
        if self.block_size % 2 == 0:
            block = block[:, :, :-1, :-1]
        return x * block * (block.numel() / block.sum().clamp(min=1.0))


def _conv(in_ch: int, out_ch: int, k: int, stride: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=k // 2)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)
    return conv


class LastLevelP6P7(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.p6 = _conv(channels, channels, 3, stride=2)
        self.p7 = _conv(channels, channels, 3, stride=2)

    def forward(self, p5: torch.Tensor) -> List[torch.Tensor]:
        p6 = self.p6(p5)
        return [p6, self.p7(F.relu(p6))]


class ReferenceFPN(nn.Module):
    def __init__(self, in_channels: List[int], out_channels: int = 256, drop_block: bool = True,
                 drop_block_prob: float = 0.3, drop_block_size: int = 3):
        super().__init__()
        # Reference names count from C2 (index 1), so C3..C5 are fpn_inner2..4.
        self.names = [str(i + 2) for i in range(len(in_channels))]
        for name, ch in zip(self.names, in_channels):
            setattr(self, f"fpn_inner{name}", _conv(ch, out_channels, 1))
            setattr(self, f"fpn_layer{name}", _conv(out_channels, out_channels, 3))
        self.top_blocks = LastLevelP6P7(out_channels)
        self.drop_block = DropBlock2D(drop_block_prob, drop_block_size) if drop_block else None

    def forward(self, feats: List[torch.Tensor]) -> List[torch.Tensor]:
        last_inner = getattr(self, f"fpn_inner{self.names[-1]}")(feats[-1])
        results = [getattr(self, f"fpn_layer{self.names[-1]}")(last_inner)]
        for name, feat in zip(self.names[-2::-1], feats[-2::-1]):
            lateral = getattr(self, f"fpn_inner{name}")(feat)
            last_inner = lateral + F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            merged = self.drop_block(last_inner) if self.drop_block is not None else last_inner
            results.insert(0, getattr(self, f"fpn_layer{name}")(merged))
        return results + self.top_blocks(results[-1])
