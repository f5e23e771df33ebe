from .backbone.fusion import FiberBackbone, build_fiber_backbone
from .meta_arch import FIBER

__all__ = ["FIBER", "FiberBackbone", "build_fiber_backbone"]
