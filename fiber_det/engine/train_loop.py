"""One training step: Detectron2's SimpleTrainer plus autocast (fp16 with a GradScaler, or bf16),
gradient accumulation, a non-finite-loss guard and per-iteration reseeding; and the RNG state helpers
that checkpoints use."""
import contextlib
import logging
import random
import time
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch
import torch.distributed as dist
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def iteration_seed(seed: int, iteration: int, rank: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(iteration), int(rank)]).generate_state(1)[0])


def seed_global_rngs(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every CUDA device) global RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng_state() -> Dict[str, Any]:
    """This process's global RNG states, as tensors and plain Python values (loadable with
    ``torch.load(weights_only=True)``)."""
    version, py_state, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss_next": gauss},
        "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            logger.warning(f"checkpoint has CUDA RNG states for {len(state['cuda'])} devices, this machine "
                           f"{torch.cuda.device_count()}; CUDA RNG states not restored")


def _all_ranks_true(flag: bool, device: torch.device) -> bool:
    if comm.get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


class FiberStepTrainer(SimpleTrainer):
    """SimpleTrainer's step with the reference recipe's additions.

    - ``amp_dtype``: None (fp32), torch.float16 (autocast + GradScaler) or torch.bfloat16 (autocast);
    - ``accumulate``: micro-batches per optimizer step; each micro-batch's loss is divided by it and
      DDP synchronises gradients only on the last one;
    - a non-finite loss on any process raises FloatingPointError naming the iteration and the losses,
      or, with ``skip_nonfinite``, drops the step on every process (counted in ``nonfinite_skipped``);
    - ``reseed``: seed the global RNGs from (seed, iteration, rank) before the step, so dropout and
      DropBlock masks do not depend on what ran before (exact resume).
    """

    def __init__(self, model, data_loader, optimizer, *, amp_dtype: Optional[torch.dtype] = None,
                 accumulate: int = 1, skip_nonfinite: bool = False, reseed: bool = True, seed: int = 0):
        if accumulate < 1:
            raise ValueError(f"SOLVER.ACCUMULATE_STEPS must be >= 1, got {accumulate}")
        if amp_dtype not in (None, torch.float16, torch.bfloat16):
            raise ValueError(f"autocast dtype must be float16 or bfloat16, got {amp_dtype}")
        super().__init__(model, data_loader, optimizer)
        self.amp_dtype = amp_dtype
        self.device_type = next(model.parameters()).device.type
        self.grad_scaler = torch.amp.GradScaler(self.device_type, enabled=amp_dtype == torch.float16)
        self.accumulate = accumulate
        self.skip_nonfinite = skip_nonfinite
        self.reseed = reseed
        self.seed = int(seed)
        self.nonfinite_skipped = 0

    def reset_data_loader_iter(self) -> None:
        """Start a new pass over the data loader (after its position was restored)."""
        self._data_loader_iter = iter(self.data_loader)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.amp_dtype)

    def run_step(self):
        assert self.model.training, "[FiberStepTrainer] model was changed to eval mode!"
        if self.reseed:
            seed_global_rngs(iteration_seed(self.seed, self.iter, comm.get_rank()))
        self.optimizer.zero_grad(set_to_none=True)
        data_time, totals = 0.0, {}
        for k in range(self.accumulate):
            start = time.perf_counter()
            data = next(self._data_loader_iter)
            data_time += time.perf_counter() - start
            last = k == self.accumulate - 1
            no_sync = isinstance(self.model, DistributedDataParallel) and not last
            with self.model.no_sync() if no_sync else contextlib.nullcontext():
                with self._autocast():
                    loss_dict = self.model(data)
                if isinstance(loss_dict, torch.Tensor):
                    loss_dict = {"total_loss": loss_dict}
                losses = sum(loss_dict.values())
                if not _all_ranks_true(bool(torch.isfinite(losses.detach()).item()), losses.device):
                    self._on_nonfinite(loss_dict, k)
                    return
                self.grad_scaler.scale(losses / self.accumulate).backward()
            for name, v in loss_dict.items():
                totals[name] = totals.get(name, 0.0) + v.detach().float() / self.accumulate
        self._write_metrics(totals, data_time)
        if self.grad_scaler.is_enabled():
            # Unscales before optimizer.step(), so full-model clipping sees true gradients; skips the
            # step when a gradient overflowed.
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
            get_event_storage().put_scalar("loss_scale", self.grad_scaler.get_scale(), smoothing_hint=False)
        else:
            self.optimizer.step()

    def _on_nonfinite(self, loss_dict: Mapping[str, torch.Tensor], micro_batch: int) -> None:
        values = {k: float(v.detach()) for k, v in loss_dict.items()}
        where = f"iteration {self.iter}" + (f", micro-batch {micro_batch}" if self.accumulate > 1 else "")
        if not self.skip_nonfinite:
            raise FloatingPointError(
                f"non-finite loss at {where} (rank {comm.get_rank()}): {values}. "
                "Set SOLVER.SKIP_NONFINITE True to skip such steps instead."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_skipped += 1
        logger.warning(f"skipping the step at {where}: non-finite loss on some process (here: {values}); "
                       f"{self.nonfinite_skipped} skipped so far")
        get_event_storage().put_scalar("nonfinite_skipped", self.nonfinite_skipped, smoothing_hint=False)

    def state_dict(self):
        ret = super().state_dict()
        ret["grad_scaler"] = self.grad_scaler.state_dict()
        ret["seed"] = self.seed
        ret["nonfinite_skipped"] = self.nonfinite_skipped
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if state_dict.get("grad_scaler"):
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
        self.seed = int(state_dict.get("seed", self.seed))
        self.nonfinite_skipped = int(state_dict.get("nonfinite_skipped", 0))
