"""fiber-det's trainer: Detectron2's DefaultTrainer with the FIBER data pipeline, evaluators and
optimizer."""
import weakref

from detectron2.engine import DefaultTrainer

from ..checkpoint import FiberCheckpointer
from ..data.build import build_fiber_train_loader
from ..data.datasets import register_datasets_from_config
from ..data.mapper import FiberDatasetMapper
from ..evaluation import build_batched_test_loader, build_evaluator
from .optimizer import build_fiber_optimizer


class FiberTrainer(DefaultTrainer):
    def __init__(self, cfg):
        super().__init__(cfg)
        # Same checkpointables as DefaultTrainer's; reads released FIBER checkpoints too.
        self.checkpointer = FiberCheckpointer(self.checkpointer.model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        for hook in self._hooks:
            if hasattr(hook, "checkpointer"):
                hook.checkpointer = self.checkpointer

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
    def build_optimizer(cls, cfg, model):
        return build_fiber_optimizer(cfg, model)
