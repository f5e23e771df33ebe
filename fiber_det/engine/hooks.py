"""Training hooks: per-step observability, the weight-decay schedule and gathering every process's
resume state."""
import resource
import time

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

from .ema import _unwrap


class TrainingMetrics(HookBase):
    """Puts, every step, into the EventStorage (hence metrics.json and TensorBoard):
    ``lr/<group>`` for each optimizer parameter group (the LR this step used), ``gate/<name>`` for the
    fusion gates (backbone parameters named ``alpha*``), ``images_per_sec`` and the process's memory
    (``max_rss_mb``; ``cuda_max_alloc_mb`` on GPU)."""

    def __init__(self, images_per_step: int):
        self.images_per_step = images_per_step
        self._gates = None
        self._last = None

    def before_train(self):
        model = _unwrap(self.trainer.model)
        self._gates = [(n, p) for n, p in model.named_parameters()
                       if n.startswith("backbone.") and n.rsplit(".", 1)[-1].startswith("alpha")]
        self._last = time.perf_counter()

    def after_step(self):
        storage = self.trainer.storage
        for i, group in enumerate(self.trainer.optimizer.param_groups):
            storage.put_scalar(f"lr/{group.get('name', i)}", group["lr"], smoothing_hint=False)
        gates = {f"gate/{n}": float(p.detach().float().mean()) for n, p in self._gates}
        if gates:
            storage.put_scalars(smoothing_hint=False, **gates)
        now = time.perf_counter()
        storage.put_scalar("images_per_sec", self.images_per_step / max(now - self._last, 1e-9))
        self._last = now
        storage.put_scalar("max_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                           smoothing_hint=False)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            storage.put_scalar("cuda_max_alloc_mb", torch.cuda.max_memory_allocated() / 2**20, smoothing_hint=False)


class WeightDecaySchedule(HookBase):
    """The reference's weight-decay steps: after step ``it``, every parameter group's weight decay is
    its initial value x ``gamma`` ** (number of ``milestones`` m with it + 1 >= m * ``ratio``).

    The reference multiplies the groups' weight decay in place when a milestone is passed; computing
    it from the iteration gives the same values and needs no state, so a resumed run continues
    exactly (the optimizer's saved groups are overwritten at the first step anyway).
    """

    def __init__(self, milestones, gamma: float, ratio: float):
        self.milestones = tuple(milestones)
        self.gamma = gamma
        self.ratio = ratio

    def factor(self, iterations_done: int) -> float:
        return self.gamma ** sum(iterations_done >= m * self.ratio for m in self.milestones)

    def before_train(self):
        for group in self.trainer.optimizer.param_groups:
            group.setdefault("initial_weight_decay", group["weight_decay"])
        self._apply(self.trainer.start_iter)

    def after_step(self):
        self._apply(self.trainer.iter + 1)

    def _apply(self, iterations_done: int):
        factor = self.factor(iterations_done)
        for group in self.trainer.optimizer.param_groups:
            group["weight_decay"] = group["initial_weight_decay"] * factor


class GatherResumeState(HookBase):
    """Before each checkpoint, collect every process's data-loader position and RNG state into the
    trainer (only the main process writes checkpoints). Must run on all processes, before the
    checkpointer hook."""

    def __init__(self, period: int):
        self.period = period

    def after_step(self):
        it, max_iter = self.trainer.iter, self.trainer.max_iter
        if (it + 1) % self.period == 0 or it >= max_iter - 1:
            self.trainer.gathered_rank_states = comm.all_gather(self.trainer.rank_state())
