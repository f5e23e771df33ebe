"""Make detectron2 v0.6 usable with today's numpy, Pillow and torch, with or without its C++ ops.

``fiber_det/__init__.py`` calls :func:`ensure_detectron2` before anything imports detectron2;
code that imports detectron2 without importing fiber_det first must call it itself.

Two kinds of detectron2 are supported (``tools/setup_env.sh`` installs the second when the first is
absent):

- a genuine build whose ``detectron2._C`` is a compiled extension: used as it is;
- the pure-Python ``pb1-detectron2`` sources with ``detectron2/_C.py`` copied from
  :mod:`fiber_det.compat.detectron2_C`. Then detectron2's DeformConv/ModulatedDeformConv run through
  ``torchvision.ops.deform_conv2d``, and COCOEvaluator needs ``use_fast_impl=False``: pass
  ``use_fast_impl=has_compiled_detectron2()``.

README.md beside this file lists every shim and install-time patch.
"""
import importlib.machinery
import importlib.util

from . import shims

__all__ = ["ensure_detectron2", "has_compiled_detectron2", "uses_standin_C"]

_INSTALL_HINT = "run `bash tools/setup_env.sh` from the fiber-det checkout"
_ensured = False


def _C_origin() -> str:
    """File that ``detectron2._C`` would load from; raises ImportError naming the fix if none."""
    if importlib.util.find_spec("detectron2") is None:
        raise ImportError(f"fiber-det needs detectron2, which this Python cannot import: {_INSTALL_HINT}")
    spec = importlib.util.find_spec("detectron2._C")
    if spec is None or not spec.origin:
        import detectron2

        raise ImportError(
            f"detectron2 at {detectron2.__path__[0]} has no _C module (neither a compiled one nor "
            f"fiber-det's stand-in): {_INSTALL_HINT}"
        )
    return spec.origin


def has_compiled_detectron2() -> bool:
    """True when ``detectron2._C`` is a compiled extension (a genuine detectron2 build)."""
    return _C_origin().endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def uses_standin_C() -> bool:
    """True when ``detectron2._C`` is fiber-det's pure-Python stand-in."""
    if has_compiled_detectron2():
        return False
    from detectron2 import _C

    return getattr(_C, "FIBER_DET_STANDIN", False)


def ensure_detectron2() -> None:
    """Apply the runtime shims; idempotent. Must run before detectron2's submodules are imported.

    Raises ImportError, saying what to do, when detectron2 or its ``_C`` module is missing or foreign.
    """
    global _ensured
    if _ensured:
        return
    shims.restore_numpy_aliases()
    shims.restore_pil_linear()
    if not has_compiled_detectron2():
        if not uses_standin_C():
            raise ImportError(
                f"detectron2._C at {_C_origin()} is neither compiled nor fiber-det's stand-in: "
                f"{_INSTALL_HINT}"
            )
        shims.route_deform_conv_to_torchvision()
    _ensured = True
