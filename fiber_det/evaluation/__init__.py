from .build import build_batched_test_loader, build_evaluator
from .coco import FiberCOCOEvaluator
from .inference import evaluate_datasets, evaluator_protocol, inference_on_dataset
from .grounding import GroundingRecallEvaluator, first_hit_ranks, recall_at_k, union_boxes
from .lvis import LVISDetectionEvaluator
from .refexp import RefExpEvaluator, refexp_precision, top1_overlaps

__all__ = [k for k in globals().keys() if not k.startswith("_")]
