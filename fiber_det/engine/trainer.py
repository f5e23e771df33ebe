"""fiber-det's trainer: Detectron2's DefaultTrainer with the FIBER data pipeline, evaluators,
optimizer and schedule, plus the reference recipe's training machinery (section 12):

- AMP (fp16 with a GradScaler, or bf16), gradient accumulation, a non-finite-loss guard
  (:class:`FiberStepTrainer`);
- an EMA of the weights, used for evaluation (:mod:`.ema`);
- exact resume: checkpoints (written atomically) hold the model, optimizer, LR scheduler, grad scaler,
  EMA, iteration, every process's RNG states and data-loader position;
- DDP over NCCL or gloo (CPU), see :mod:`.launch`;
- metrics.json, TensorBoard and console lines every SOLVER.LOG_PERIOD iterations.
"""
import logging
import os
import weakref

import torch
from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import FiberCheckpointer
from ..data.build import build_fiber_train_loader
from ..data.datasets import register_datasets_from_config
from ..data.mapper import FiberDatasetMapper
from ..evaluation import build_batched_test_loader, build_evaluator
from ..evaluation.inference import evaluate_datasets
from .ema import EMAHook, ModelEMA
from .hooks import GatherResumeState, TrainingMetrics, WeightDecaySchedule
from .optimizer import build_fiber_lr_scheduler, build_fiber_optimizer, schedule_steps
from .train_loop import AMP_DTYPES, FiberStepTrainer, capture_rng_state, restore_rng_state

logger = logging.getLogger(__name__)


def create_ddp_model(model: torch.nn.Module, cfg) -> torch.nn.Module:
    """DistributedDataParallel when there are several processes: on the process's GPU, or on the CPU
    (gloo) where Detectron2's ``create_ddp_model`` would pass a GPU id."""
    if comm.get_world_size() == 1:
        return model
    kwargs = {"broadcast_buffers": False, "find_unused_parameters": cfg.SOLVER.DDP_FIND_UNUSED_PARAMETERS}
    if next(model.parameters()).is_cuda:
        kwargs["device_ids"] = [comm.get_local_rank()]
    return DistributedDataParallel(model, **kwargs)


class FiberTrainer(DefaultTrainer):
    def __init__(self, cfg):
        # DefaultTrainer.__init__'s construction, with FiberStepTrainer instead of SimpleTrainer /
        # AMPTrainer (CUDA-only there) and a DDP wrapper that also works on the CPU.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        if cfg.SOLVER.AMP.ENABLED and cfg.SOLVER.AMP.DTYPE not in AMP_DTYPES:
            raise ValueError(f"SOLVER.AMP.DTYPE must be one of {sorted(AMP_DTYPES)}, got {cfg.SOLVER.AMP.DTYPE!r}")
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, cfg)
        # The data stream's seed also seeds the per-iteration RNGs; it is saved in checkpoints.
        loader_state = data_loader.state_dict() if hasattr(data_loader, "state_dict") else {}
        seed = loader_state.get("loader", {}).get("seed", max(cfg.SEED, 0))
        self._trainer = FiberStepTrainer(
            model, data_loader, optimizer,
            amp_dtype=AMP_DTYPES[cfg.SOLVER.AMP.DTYPE] if cfg.SOLVER.AMP.ENABLED else None,
            accumulate=cfg.SOLVER.ACCUMULATE_STEPS, skip_nonfinite=cfg.SOLVER.SKIP_NONFINITE,
            reseed=cfg.SOLVER.RESEED_EACH_ITER, seed=seed,
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # Reads released FIBER checkpoints too; writes atomically.
        self.checkpointer = FiberCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.ema = ModelEMA(model, cfg.MODEL_EMA.DECAY) if cfg.MODEL_EMA.ENABLED else None
        if self.ema is not None:
            self.checkpointer.add_checkpointable("ema", self.ema)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.gathered_rank_states = None
        self._rng_to_restore = None
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_train_loader(cls, cfg):
        register_datasets_from_config(cfg)
        return build_fiber_train_loader(cfg, FiberDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        register_datasets_from_config(cfg)
        return build_batched_test_loader(
            dataset_name, FiberDatasetMapper(cfg, is_train=False), cfg.TEST.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        # DefaultTrainer.test with fiber-det's loop: progress with ETA, batches of one padded shape.
        return evaluate_datasets(cfg, model, cls.build_test_loader, cls.build_evaluator, evaluators)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_fiber_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_fiber_lr_scheduler(cfg, optimizer)

    def build_hooks(self):
        cfg = self.cfg
        ret = [
            hooks.IterationTimer(),
            # Before LRScheduler, which steps the LR at its after_step.
            TrainingMetrics(cfg.SOLVER.IMS_PER_BATCH),
            hooks.LRScheduler(),
            WeightDecaySchedule(schedule_steps(cfg), cfg.SOLVER.GAMMA, cfg.SOLVER.WEIGHT_DECAY_SCHEDULE_RATIO)
            if cfg.SOLVER.WEIGHT_DECAY_SCHEDULE else None,
            EMAHook(self.ema) if self.ema is not None else None,
            GatherResumeState(cfg.SOLVER.CHECKPOINT_PERIOD) if comm.get_world_size() > 1 else None,
        ]
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))

        def test_and_save_results():
            if self.ema is not None and cfg.MODEL_EMA.USE_FOR_EVAL:
                with self.ema.applied():
                    self._last_eval_results = self.test(self.cfg, self.model)
            else:
                self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        # After the checkpointer: if evaluation fails, the checkpoint is there to debug with.
        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results))
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=cfg.SOLVER.LOG_PERIOD))
        return ret

    def build_writers(self):
        # default_writers' three, with the smoothing window from the config.
        window = self.cfg.SOLVER.LOG_SMOOTHING_WINDOW
        PathManager.mkdirs(self.cfg.OUTPUT_DIR)
        return [CommonMetricPrinter(self.max_iter, window_size=window),
                JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), window_size=window),
                TensorboardXWriter(self.cfg.OUTPUT_DIR, window_size=window)]

    # ---- resume state ----
    def rank_state(self) -> dict:
        """This process's part of the resume state: its RNG states and data-loader position."""
        state = {"rng": capture_rng_state()}
        if hasattr(self.data_loader, "state_dict"):
            state["data_loader"] = self.data_loader.state_dict()
        return state

    def state_dict(self):
        ret = super().state_dict()  # iteration, hooks (LR scheduler)
        ret["_trainer"] = self._trainer.state_dict()  # optimizer, grad scaler, seed
        gathered = self.gathered_rank_states
        ret["ranks"] = gathered if gathered is not None else [self.rank_state()]
        self.gathered_rank_states = None
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" not in state_dict:
            logger.warning("checkpoint has no optimizer/scaler state (written by an older fiber-det); "
                           "they start afresh")
            return
        self._trainer.load_state_dict(state_dict["_trainer"])
        ranks, rank = state_dict.get("ranks", []), comm.get_rank()
        if len(ranks) != comm.get_world_size():
            logger.warning(f"checkpoint holds the state of {len(ranks)} processes, this run has "
                           f"{comm.get_world_size()}: the data stream and RNGs do not continue exactly")
        if not ranks:
            return
        mine = ranks[rank % len(ranks)]
        if "data_loader" in mine and hasattr(self.data_loader, "load_state_dict"):
            self.data_loader.load_state_dict(mine["data_loader"])
        self._rng_to_restore = mine["rng"]

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        # The data stream starts where the checkpoint left it (or at the beginning).
        self._trainer.reset_data_loader_iter()

    def train(self):
        if self._rng_to_restore is not None:
            restore_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        return super().train()
