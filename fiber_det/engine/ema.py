"""Exponential moving average of the model's weights (the reference keeps one with decay 0.999)."""
import contextlib
import logging
from typing import Dict

import torch
from detectron2.engine import HookBase
from torch.nn.parallel import DataParallel, DistributedDataParallel

logger = logging.getLogger(__name__)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, (DistributedDataParallel, DataParallel)) else model


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * value`` after every step, for every floating-point entry of
    the model's state dict (parameters and buffers); other entries are copied. A checkpointable:
    ``state_dict()`` is a state dict of the model's own shape, so a checkpoint's ``ema`` entry can be
    loaded as model weights."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"MODEL_EMA.DECAY must be in [0, 1), got {decay}")
        self.model = _unwrap(model)
        self.decay = decay
        self.state: Dict[str, torch.Tensor] = {}
        self.reset()
        self.loaded = False  # True once restored from a checkpoint

    def reset(self) -> None:
        """Start the average at the model's current weights."""
        self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def update(self) -> None:
        current = self.model.state_dict()
        avg, new, copy_keys = [], [], []
        for k, v in self.state.items():
            if v.is_floating_point():
                avg.append(v)
                new.append(current[k].detach().to(v.dtype))
            else:
                copy_keys.append(k)
        if avg:
            torch._foreach_mul_(avg, self.decay)
            torch._foreach_add_(avg, new, alpha=1.0 - self.decay)
        for k in copy_keys:
            self.state[k].copy_(current[k])

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.state

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        own = self.model.state_dict()
        missing, unexpected = set(own) - set(state), set(state) - set(own)
        if missing or unexpected:
            raise KeyError(f"EMA state does not match the model: missing {sorted(missing)[:10]}, "
                           f"unexpected {sorted(unexpected)[:10]}")
        self.state = {k: state[k].to(device=own[k].device, dtype=own[k].dtype).clone() for k in own}
        self.loaded = True

    @contextlib.contextmanager
    def applied(self):
        """Temporarily load the EMA weights into the model (e.g. for evaluation)."""
        backup = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.state)
        try:
            yield self.model
        finally:
            self.model.load_state_dict(backup)


class EMAHook(HookBase):
    """Updates a :class:`ModelEMA` after every step. Before training, an EMA that was not restored
    from a checkpoint starts at the (possibly just loaded) model weights."""

    def __init__(self, ema: ModelEMA):
        self.ema = ema

    def before_train(self):
        if not self.ema.loaded:
            self.ema.reset()
            logger.info(f"EMA of the weights (decay {self.ema.decay}) starts at the current weights")

    def after_step(self):
        self.ema.update()
