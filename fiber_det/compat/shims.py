"""Runtime shims for names that detectron2 v0.6 uses and today's libraries removed.

Each shim only adds what is missing, so it is a no-op on library versions that still have the name.
"""
import warnings

import numpy as np
from PIL import Image
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

# Aliases of Python builtins removed in numpy 1.24, used by detectron2.data.build,
# detectron2.evaluation.sem_seg_evaluation and detectron2.data.datasets.pascal_voc.
_NUMPY_ALIASES = {"bool": bool, "int": int, "float": float, "str": str, "object": object}


def restore_numpy_aliases() -> None:
    for name, builtin in _NUMPY_ALIASES.items():
        with warnings.catch_warnings():
            # numpy 2 warns, on asking for a removed alias, that it may reuse the name one day.
            warnings.simplefilter("ignore", FutureWarning)
            missing = not hasattr(np, name)
        if missing:
            setattr(np, name, builtin)


def restore_pil_linear() -> None:
    """``Image.LINEAR`` (removed in Pillow 10) is a default argument in detectron2's transforms."""
    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.Resampling.BILINEAR


def deform_conv(
    input, offset, weight, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1, im2col_step=64
):
    """detectron2's ``deform_conv`` through torchvision, on any device and with autograd.

    torchvision reads ``groups`` from ``weight`` and ``deformable_groups`` from ``offset``'s channels,
    whose (y, x) per-kernel-point layout is detectron2's; ``im2col_step`` only tunes the C++ kernel.
    """
    return deform_conv2d(
        input, offset, weight, stride=_pair(stride), padding=_pair(padding), dilation=_pair(dilation)
    )


def modulated_deform_conv(
    input, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1
):
    """detectron2's ``modulated_deform_conv`` (DCNv2) through torchvision; see :func:`deform_conv`."""
    return deform_conv2d(
        input,
        offset,
        weight,
        bias=bias,
        stride=_pair(stride),
        padding=_pair(padding),
        dilation=_pair(dilation),
        mask=mask,
    )


def route_deform_conv_to_torchvision() -> None:
    """Make DeformConv/ModulatedDeformConv call torchvision instead of the compiled ``_C`` kernels.

    Their ``forward`` looks up these two module-level functions at call time. detectron2's own
    versions need ``_C`` on CUDA and have no CPU backward (no CPU forward at all for the modulated one).
    """
    from detectron2.layers import deform_conv as d2_deform_conv

    d2_deform_conv.deform_conv = deform_conv
    d2_deform_conv.modulated_deform_conv = modulated_deform_conv


__all__ = [
    "restore_numpy_aliases",
    "restore_pil_linear",
    "route_deform_conv_to_torchvision",
    "deform_conv",
    "modulated_deform_conv",
]
