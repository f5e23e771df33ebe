"""fiber-det's trainer: Detectron2's DefaultTrainer with the FIBER data pipeline, evaluators and
optimizer."""
import os
import weakref

from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator

from ..checkpoint import FiberCheckpointer
from ..compat import has_compiled_detectron2
from ..data.build import build_fiber_train_loader
from ..data.datasets import register_datasets_from_config
from ..data.mapper import FiberDatasetMapper
from ..evaluation import GroundingRecallEvaluator, RefExpEvaluator
from .optimizer import build_fiber_optimizer


def build_evaluator(cfg, dataset_name: str, output_folder=None):
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
    if kind == "coco":
        # Detectron2's fast COCOeval needs its compiled extension.
        return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=has_compiled_detectron2())
    if kind == "grounding":
        return GroundingRecallEvaluator(dataset_name, output_dir=output_folder)
    if kind == "refexp":
        return RefExpEvaluator(dataset_name, output_dir=output_folder)
    raise ValueError(f"dataset {dataset_name}: no evaluator for evaluator_type {kind!r}")


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
        return build_detection_test_loader(cfg, dataset_name, mapper=FiberDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_fiber_optimizer(cfg, model)
