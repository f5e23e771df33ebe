from .optimizer import build_fiber_optimizer, fiber_param_groups
from .trainer import FiberTrainer, build_evaluator

__all__ = ["FiberTrainer", "build_evaluator", "build_fiber_optimizer", "fiber_param_groups"]
