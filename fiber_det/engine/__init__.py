from .optimizer import build_fiber_optimizer, fiber_param_groups
from ..evaluation import build_evaluator
from .trainer import FiberTrainer

__all__ = ["FiberTrainer", "build_evaluator", "build_fiber_optimizer", "fiber_param_groups"]
