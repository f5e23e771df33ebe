"""COCO bbox AP (ARCHITECTURE.md section 11): Detectron2's COCOEvaluator protocol (100 detections per
image; AP, AP50, AP75, APs, APm, APl and per-category AP) with a choice of COCOeval implementation.

Backends:
- "faster_coco_eval": the PyPI package's C++ COCOeval (same matching and accumulation as
  pycocotools, tested to 1e-6 in tests/test_evaluation_coco.py), much faster on large splits;
- "pycocotools": the official Python COCOeval;
- "auto": faster_coco_eval when it imports, else pycocotools.
"""
import logging
from unittest import mock

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation import coco_evaluation as d2_coco_evaluation

logger = logging.getLogger(__name__)

COCO_EVAL_BACKENDS = ("auto", "faster_coco_eval", "pycocotools")


def resolve_coco_eval_backend(backend: str) -> str:
    """The backend that ``backend`` (one of COCO_EVAL_BACKENDS) stands for here."""
    if backend not in COCO_EVAL_BACKENDS:
        raise ValueError(f"TEST.COCO_EVAL_BACKEND must be one of {COCO_EVAL_BACKENDS}, got {backend!r}")
    if backend == "pycocotools":
        return backend
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError as e:
        if backend == "faster_coco_eval":
            raise ImportError(
                "TEST.COCO_EVAL_BACKEND is 'faster_coco_eval' but the package does not import "
                f"({e}); `pip install faster-coco-eval` or use 'auto' / 'pycocotools'"
            ) from e
        logger.info("faster-coco-eval is not installed: COCO AP is computed with pycocotools")
        return "pycocotools"
    return "faster_coco_eval"


class FiberCOCOEvaluator(COCOEvaluator):
    """Detectron2's COCOEvaluator (bbox only, 100 detections per image) whose COCOeval is
    faster-coco-eval's or pycocotools', see :func:`resolve_coco_eval_backend`.

    ``stats`` holds, after ``evaluate()``, the 12 COCOeval summary numbers per task (0-1 scale).
    """

    def __init__(self, dataset_name: str, *, backend: str = "auto", output_dir=None, distributed: bool = True):
        self.backend = resolve_coco_eval_backend(backend)
        # use_fast_impl=True makes Detectron2 build its COCOeval from the module-level name
        # COCOeval_opt, which _eval_predictions points at faster-coco-eval's class.
        super().__init__(
            dataset_name, tasks=("bbox",), distributed=distributed, output_dir=output_dir,
            use_fast_impl=self.backend == "faster_coco_eval",
        )
        self.protocol = f"COCO bbox AP, pycocotools protocol, 100 detections/image, backend {self.backend}"
        self.stats = {}

    def reset(self):
        super().reset()
        self.stats = {}

    def _eval_predictions(self, predictions, img_ids=None):
        logger.info(f"Evaluating with the {self.protocol}")
        if self.backend == "pycocotools":
            return super()._eval_predictions(predictions, img_ids)
        from faster_coco_eval import COCOeval_faster

        # Detectron2 v0.6 has no argument for the COCOeval class; its fast path would otherwise
        # need the compiled detectron2._C. Evaluation runs in one thread, so the swap is local.
        with mock.patch.object(d2_coco_evaluation, "COCOeval_opt", COCOeval_faster):
            return super()._eval_predictions(predictions, img_ids)

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        if coco_eval is not None:
            self.stats[iou_type] = [float(s) for s in coco_eval.stats]
        return super()._derive_coco_results(coco_eval, iou_type, class_names)
