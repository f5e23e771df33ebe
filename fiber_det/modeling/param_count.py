"""Parameter counts of a FIBER model by the modules ARCHITECTURE.md reports."""
from collections import OrderedDict

from torch import nn

_I2T = ("qkv_i2t", "qkv_text_i2t", "proj_i2t", "alpha_i2t", "norm_i2t_i")
_T2I = ("crossattention_t2i", "alpha_t2i")


def _group(name: str) -> str:
    if name.startswith("backbone.swin."):
        return "image-to-text modules" if any(k in name for k in _I2T) else "Swin"
    if name.startswith("backbone.text."):
        return "text-to-image modules" if any(k in name for k in _T2I) else "text encoder"
    if name.startswith("backbone.fpn."):
        return "FPN"
    if name.startswith("head."):
        return "head"
    return "other"


def count_parameters(model: nn.Module) -> "OrderedDict[str, int]":
    """{group: number of parameters}, in the order of the reference's table, plus "total"."""
    counts = OrderedDict((k, 0) for k in (
        "Swin", "image-to-text modules", "text encoder", "text-to-image modules", "FPN", "head", "other"))
    for name, p in model.named_parameters():
        counts[_group(name)] += p.numel()
    if counts["other"] == 0:
        del counts["other"]
    counts["total"] = sum(counts.values())
    return counts
