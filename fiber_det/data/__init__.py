from . import datasets  # registers the built-in dataset names
from .mapper import FiberDatasetMapper

__all__ = ["FiberDatasetMapper"]
