"""Referring-expression precision@1 (RefCOCO/+/g, ARCHITECTURE.md section 11).

The top-scoring predicted box of an entry is correct if it overlaps the ground-truth box by
IoU >= 0.5 (standard practice) or GIoU >= 0.5 (the criterion of the FIBER reference code; stricter,
since GIoU <= IoU). Both can be computed at once and every number is labelled with its criterion.
"""
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torchvision.ops import box_iou, generalized_box_iou

from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from .grounding import _unique_by_image_id

logger = logging.getLogger(__name__)

__all__ = ["RefExpEvaluator", "refexp_targets", "top1_overlaps", "refexp_precision", "criterion_label"]

CRITERIA = ("iou", "giou")
_OVERLAPS = {"iou": box_iou, "giou": generalized_box_iou}


def criterion_label(criterion: str, threshold: float) -> str:
    """The metric name, e.g. "P@1 (IoU>=0.5)" or "P@1 (GIoU>=0.5, reference)"."""
    if criterion == "iou":
        return f"P@1 (IoU>={threshold:g})"
    if criterion == "giou":
        return f"P@1 (GIoU>={threshold:g}, reference)"
    raise ValueError(f"unknown refexp criterion {criterion!r}; expected one of {CRITERIA}")


def refexp_targets(dataset_dict: dict) -> torch.Tensor:
    """The ground-truth boxes of one referring-expression entry: float64 (G, 4) XYXY_ABS
    (one box for RefCOCO; when there are several, matching any of them counts)."""
    boxes = [
        BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)
        for ann in dataset_dict.get("annotations", [])
    ]
    return torch.as_tensor(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))


def top1_overlaps(
    pred_boxes: torch.Tensor, scores: torch.Tensor, gt_boxes: torch.Tensor, criteria: Sequence[str] = CRITERIA
) -> Optional[Dict[str, float]]:
    """
    Overlap of the top-scoring prediction (the first one on ties) with the ground truth: for each
    criterion, the best value over the ground-truth boxes. None when there is no prediction or no
    ground-truth box.

    Args:
        pred_boxes: (P, 4) XYXY; scores: (P,); gt_boxes: (G, 4) XYXY.
    """
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return None
    top = pred_boxes[int(torch.argmax(scores))].to(torch.float64)[None]
    gt_boxes = gt_boxes.to(torch.float64)
    return {c: _OVERLAPS[c](top, gt_boxes).max().item() for c in criteria}


def refexp_precision(overlaps: Sequence[Optional[float]], threshold: float = 0.5) -> float:
    """Precision@1 in percent: the share of entries whose overlap is >= threshold (inclusive);
    None (no prediction) is a miss."""
    if len(overlaps) == 0:
        raise ValueError("refexp_precision: no entries to evaluate")
    return 100.0 * sum(o is not None and o >= threshold for o in overlaps) / len(overlaps)


class RefExpEvaluator(DatasetEvaluator):
    """
    Precision@1 of referring-expression grounding. Each output's ``instances`` carry ``pred_boxes``
    (XYXY, original image size) and ``scores``; the best-scored box over all phrases is the answer.
    Ground truth is the entry's annotations, looked up by ``image_id``; entries without an
    annotation are not evaluated (they are counted); an output without detections is a miss.

    Returns ``{"refexp": {"P@1 (IoU>=0.5)": .., "P@1 (GIoU>=0.5, reference)": .., "num": ..}}``.
    """

    def __init__(
        self,
        dataset_name: str,
        thresholds: Union[float, Sequence[float]] = 0.5,
        criteria: Union[str, Sequence[str]] = CRITERIA,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        dataset_dicts: Optional[Sequence[dict]] = None,
    ):
        """
        Args:
            dataset_name: a name registered in DatasetCatalog (ground truth is read from it lazily),
                or only a label when ``dataset_dicts`` is given.
            thresholds: overlap threshold(s), inclusive.
            criteria: "iou", "giou", or several of them; each (criterion, threshold) gives one number.
            distributed: gather results from all workers and evaluate on the main one.
            output_dir: if set, the per-entry overlaps are written there as JSON.
            dataset_dicts: explicit ground truth instead of ``DatasetCatalog.get(dataset_name)``.
        """
        criteria = (criteria,) if isinstance(criteria, str) else tuple(criteria)
        unknown = [c for c in criteria if c not in CRITERIA]
        if not criteria or unknown:
            raise ValueError(f"RefExpEvaluator: criteria must be among {CRITERIA}, got {criteria}")
        thresholds = (thresholds,) if isinstance(thresholds, (int, float)) else tuple(thresholds)
        if not thresholds:
            raise ValueError("RefExpEvaluator: thresholds is empty")
        self._dataset_name = dataset_name
        self._thresholds = tuple(float(t) for t in thresholds)
        self._criteria = criteria
        self._distributed = distributed
        self._output_dir = output_dir
        self._dataset_dicts = dataset_dicts
        self._targets = None  # image_id -> gt boxes, built on first use
        self._cpu_device = torch.device("cpu")
        self.reset()

    @property
    def protocol(self) -> str:
        """What the numbers mean, e.g. "referring expressions P@1 (IoU>=0.5), P@1 (GIoU>=0.5, reference)"."""
        return "referring expressions " + ", ".join(
            criterion_label(c, t) for c in self._criteria for t in self._thresholds
        )

    def reset(self):
        self._records: List[dict] = []

    def _target(self, image_id: int) -> torch.Tensor:
        if self._targets is None:
            dicts = self._dataset_dicts
            if dicts is None:
                dicts = DatasetCatalog.get(self._dataset_name)
            self._targets = {}
            for d in dicts:
                if d["image_id"] in self._targets:
                    raise ValueError(
                        f"dataset '{self._dataset_name}': image_id {d['image_id']} appears twice; "
                        "referring-expression entries need a unique image_id per expression"
                    )
                self._targets[d["image_id"]] = refexp_targets(d)
        if image_id not in self._targets:
            raise KeyError(f"image_id {image_id!r} is not in dataset '{self._dataset_name}'")
        return self._targets[image_id]

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            gt_boxes = self._target(inp["image_id"])
            inst = out["instances"].to(self._cpu_device)
            overlaps = top1_overlaps(inst.pred_boxes.tensor, inst.scores, gt_boxes, self._criteria)
            self._records.append({"image_id": inp["image_id"], "has_box": len(gt_boxes) > 0, "overlaps": overlaps})

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            records = list(itertools.chain(*comm.gather(self._records, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            records = self._records

        records = _unique_by_image_id(records)
        evaluated = [r for r in records if r["has_box"]]
        num_without_box = len(records) - len(evaluated)
        if not evaluated:
            logger.warning(
                f"[RefExpEvaluator] {self._dataset_name}: no entry with a ground-truth box among "
                f"{len(records)} processed entries; nothing to evaluate."
            )
            return {}

        metrics = OrderedDict()
        for criterion in self._criteria:
            values = [None if r["overlaps"] is None else r["overlaps"][criterion] for r in evaluated]
            for t in self._thresholds:
                metrics[criterion_label(criterion, t)] = refexp_precision(values, t)
        metrics["num"] = len(evaluated)
        metrics["num_without_box"] = num_without_box
        logger.info(
            f"Referring-expression precision on {self._dataset_name}: "
            + ", ".join(f"{k}={v:.2f}" for k, v in metrics.items() if k.startswith("P@1"))
            + f" over {len(evaluated)} entries ({num_without_box} without a box skipped)"
        )
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "refexp_results.json")
            with PathManager.open(path, "w") as f:
                json.dump({"criteria": list(self._criteria), "thresholds": list(self._thresholds), "entries": evaluated}, f)
            logger.info(f"Saved per-entry referring-expression overlaps to {path}")
        return {"refexp": metrics}
