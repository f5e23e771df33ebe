from . import datasets  # registers the built-in dataset names
from .build import build_fiber_train_loader
from .mapper import FiberDatasetMapper

__all__ = ["FiberDatasetMapper", "build_fiber_train_loader"]
