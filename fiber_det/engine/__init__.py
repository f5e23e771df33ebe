from .ema import EMAHook, ModelEMA
from .launch import launch
from .optimizer import build_fiber_lr_scheduler, build_fiber_optimizer, fiber_param_groups
from ..evaluation import build_evaluator
from .train_loop import FiberStepTrainer
from .trainer import FiberTrainer

__all__ = ["EMAHook", "FiberStepTrainer", "FiberTrainer", "ModelEMA", "build_evaluator", "build_fiber_lr_scheduler",
           "build_fiber_optimizer", "fiber_param_groups", "launch"]
