"""Phrase-grounding Recall@k (Flickr30k Entities protocol, ARCHITECTURE.md section 11).

A phrase is hit at k when one of its k best-scored predicted boxes overlaps one of its ground-truth
boxes with IoU >= threshold ("any-box"), or overlaps the box enclosing all of them ("merged-box").

The metric itself is in plain torch functions (:func:`first_hit_ranks`, :func:`recall_at_k`);
:class:`GroundingRecallEvaluator` only adapts them to Detectron2's evaluation loop.
"""
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import box_iou

from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

logger = logging.getLogger(__name__)

__all__ = [
    "GroundingRecallEvaluator",
    "grounding_targets",
    "union_boxes",
    "first_hit_ranks",
    "recall_at_k",
]

BOX_MODES = ("any", "merged")


def grounding_targets(dataset_dict: dict) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """
    Ground truth of one grounding entry as flat (box, phrase) pairs: a box listed under several
    phrases appears once per phrase.

    Returns:
        boxes: float64 (M, 4) XYXY_ABS; phrase_ids: int64 (M,); num_phrases: len(dataset_dict["phrases"]).
    """
    where = f"grounding entry image_id={dataset_dict.get('image_id')!r}"
    if "phrases" not in dataset_dict:
        raise KeyError(f"{where} has no 'phrases'; grounding evaluation needs the dataset loader's phrase list")
    num_phrases = len(dataset_dict["phrases"])
    boxes, phrase_ids = [], []
    for ann in dataset_dict.get("annotations", []):
        ids = ann.get("phrase_ids", [])
        bad = [k for k in ids if not 0 <= k < num_phrases]
        if bad:
            raise ValueError(
                f"{where}, annotation id={ann.get('id')!r}: phrase_ids {bad} out of range for {num_phrases} phrases"
            )
        box = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)
        boxes.extend([box] * len(ids))
        phrase_ids.extend(ids)
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    return boxes, torch.as_tensor(phrase_ids, dtype=torch.int64), num_phrases


def union_boxes(boxes: torch.Tensor, groups: torch.Tensor, num_groups: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    The box enclosing each group's boxes (the "merged-box" ground truth).

    Args:
        boxes: (M, 4) XYXY; groups: (M,) int64 group index in [0, num_groups).
    Returns:
        merged: (G, 4) one box per non-empty group; group_ids: (G,) their group indices, ascending.
    """
    group_ids = torch.unique(groups)
    inf = torch.full((num_groups, 2), float("inf"), dtype=boxes.dtype)
    lo = inf.scatter_reduce(0, groups[:, None].expand(-1, 2), boxes[:, :2], reduce="amin")
    hi = (-inf).scatter_reduce(0, groups[:, None].expand(-1, 2), boxes[:, 2:], reduce="amax")
    return torch.cat([lo, hi], dim=1)[group_ids], group_ids


def _rank_within_phrase(scores: torch.Tensor, pred_phrases: torch.Tensor) -> torch.Tensor:
    """0-based rank of each prediction among the predictions of its phrase, best score first;
    ties keep the order of the predicted list (stable sorts)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    phrase_sorted, by_phrase = torch.sort(pred_phrases[order], stable=True)
    _, counts = torch.unique_consecutive(phrase_sorted, return_counts=True)
    group_start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.empty_like(pred_phrases)
    rank[order[by_phrase]] = torch.arange(len(pred_phrases)) - group_start
    return rank


def first_hit_ranks(
    pred_boxes: torch.Tensor,
    scores: torch.Tensor,
    pred_phrases: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_phrases: torch.Tensor,
    num_phrases: int,
    iou_threshold: float = 0.5,
) -> torch.Tensor:
    """
    For each phrase, the 0-based rank (among that phrase's predictions, by descending score) of its
    best-ranked correct prediction, i.e. the smallest k - 1 at which the phrase is hit; -1 if no
    prediction is correct. Phrase p is hit at k  <=>  0 <= rank[p] < k.

    Args:
        pred_boxes: (P, 4) XYXY; scores: (P,); pred_phrases: (P,) int64 phrase index of each prediction.
        gt_boxes: (M, 4) XYXY; gt_phrases: (M,) int64 phrase index of each ground-truth box.
        num_phrases: number of phrases of the entry; phrases without ground truth get -1.
        iou_threshold: a prediction is correct if IoU >= threshold with a box of its phrase.
    """
    ranks = torch.full((num_phrases,), -1, dtype=torch.int64)
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return ranks
    pred_boxes, gt_boxes = pred_boxes.to(torch.float64), gt_boxes.to(torch.float64)
    same_phrase = pred_phrases[:, None] == gt_phrases[None, :]
    correct = ((box_iou(pred_boxes, gt_boxes) >= iou_threshold) & same_phrase).any(dim=1)
    rank = _rank_within_phrase(scores, pred_phrases)
    never = torch.iinfo(torch.int64).max
    best = torch.full((num_phrases,), never, dtype=torch.int64)
    best.scatter_reduce_(0, pred_phrases, torch.where(correct, rank, never), reduce="amin")
    return torch.where(best == never, ranks, best)


def recall_at_k(ranks: torch.Tensor, topk: Iterable[int]) -> Dict[int, float]:
    """Recall@k in percent from :func:`first_hit_ranks` values of the evaluated phrases."""
    if len(ranks) == 0:
        raise ValueError("recall_at_k: no phrases to evaluate")
    ranks = torch.as_tensor(ranks)
    return {k: 100.0 * ((ranks >= 0) & (ranks < k)).double().mean().item() for k in topk}


def _unique_by_image_id(records: List[dict]) -> List[dict]:
    """Keep the first record of each image: a sampler that pads or repeats images across workers
    must not count them twice."""
    seen, unique = set(), []
    for r in records:
        if r["image_id"] not in seen:
            seen.add(r["image_id"])
            unique.append(r)
    return unique


class GroundingRecallEvaluator(DatasetEvaluator):
    """
    Recall@k of phrase grounding. Each output's ``instances`` carry ``pred_boxes`` (XYXY, original
    image size), ``scores`` and ``pred_classes`` = the index of the phrase in the entry's
    ``"phrases"`` that the detection was scored for. Ground truth comes from the dataset dicts
    (``"phrases"``, and ``"phrase_ids"`` of each annotation), looked up by ``image_id``.

    Phrases without a ground-truth box are not evaluated (they are counted); an image whose output
    has no detections misses all its phrases. Only images passed to :meth:`process` are evaluated.
    """

    def __init__(
        self,
        dataset_name: str,
        topk: Sequence[int] = (1, 5, 10),
        iou_threshold: float = 0.5,
        box_mode: str = "any",
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        dataset_dicts: Optional[Sequence[dict]] = None,
    ):
        """
        Args:
            dataset_name: a name registered in DatasetCatalog (ground truth is read from it lazily),
                or only a label when ``dataset_dicts`` is given.
            topk: the k of Recall@k.
            iou_threshold: a box is correct if IoU >= this (inclusive).
            box_mode: "any" (match any ground-truth box of the phrase) or "merged" (match the box
                enclosing all of them).
            distributed: gather results from all workers and evaluate on the main one.
            output_dir: if set, the per-phrase results are written there as JSON.
            dataset_dicts: explicit ground truth instead of ``DatasetCatalog.get(dataset_name)``.
        """
        if box_mode not in BOX_MODES:
            raise ValueError(f"GroundingRecallEvaluator: box_mode must be one of {BOX_MODES}, got {box_mode!r}")
        topk = tuple(int(k) for k in topk)
        if not topk or min(topk) < 1:
            raise ValueError(f"GroundingRecallEvaluator: topk must be positive integers, got {topk}")
        self._dataset_name = dataset_name
        self._topk = topk
        self._iou_threshold = float(iou_threshold)
        self._box_mode = box_mode
        self._distributed = distributed
        self._output_dir = output_dir
        self._dataset_dicts = dataset_dicts
        self._targets = None  # image_id -> (gt boxes, gt phrase ids, num phrases), built on first use
        self._cpu_device = torch.device("cpu")
        self.reset()

    @property
    def task(self) -> str:
        """The key of this evaluator's metrics in the results, e.g. "grounding/any-box"."""
        return f"grounding/{self._box_mode}-box"

    @property
    def protocol(self) -> str:
        """What the numbers mean, e.g. "Flickr30k Entities Recall@1/5/10, any-box, IoU>=0.5"."""
        ks = "/".join(str(k) for k in self._topk)
        return f"Flickr30k Entities Recall@{ks}, {self._box_mode}-box, IoU>={self._iou_threshold:g}"

    def reset(self):
        self._records: List[dict] = []

    def _target(self, image_id: int) -> Tuple[torch.Tensor, torch.Tensor, int]:
        if self._targets is None:
            dicts = self._dataset_dicts
            if dicts is None:
                dicts = DatasetCatalog.get(self._dataset_name)
            self._targets = {}
            for d in dicts:
                if d["image_id"] in self._targets:
                    raise ValueError(
                        f"dataset '{self._dataset_name}': image_id {d['image_id']} appears twice; "
                        "grounding entries need a unique image_id per caption"
                    )
                boxes, phrase_ids, num_phrases = grounding_targets(d)
                if self._box_mode == "merged" and len(boxes):
                    boxes, phrase_ids = union_boxes(boxes, phrase_ids, num_phrases)
                self._targets[d["image_id"]] = (boxes, phrase_ids, num_phrases)
        if image_id not in self._targets:
            raise KeyError(f"image_id {image_id!r} is not in dataset '{self._dataset_name}'")
        return self._targets[image_id]

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            image_id = inp["image_id"]
            gt_boxes, gt_phrases, num_phrases = self._target(image_id)
            inst = out["instances"].to(self._cpu_device)
            pred_phrases = inst.pred_classes.to(torch.int64)
            if len(pred_phrases) and (pred_phrases.min() < 0 or pred_phrases.max() >= num_phrases):
                raise ValueError(
                    f"image_id {image_id}: pred_classes must be phrase indices in [0, {num_phrases}), "
                    f"got values in [{pred_phrases.min().item()}, {pred_phrases.max().item()}]"
                )
            ranks = first_hit_ranks(
                inst.pred_boxes.tensor, inst.scores, pred_phrases,
                gt_boxes, gt_phrases, num_phrases, self._iou_threshold,
            )
            has_box = torch.zeros(num_phrases, dtype=torch.bool)
            has_box[gt_phrases] = True
            self._records.append(
                {"image_id": image_id, "ranks": ranks.tolist(), "has_box": has_box.tolist()}
            )

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            records = list(itertools.chain(*comm.gather(self._records, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            records = self._records

        records = _unique_by_image_id(records)
        ranks = [rank for r in records for rank, ok in zip(r["ranks"], r["has_box"]) if ok]
        num_without_box = sum(not ok for r in records for ok in r["has_box"])
        if not ranks:
            logger.warning(
                f"[GroundingRecallEvaluator] {self._dataset_name}: no phrase with a ground-truth box "
                f"among {len(records)} processed images; nothing to evaluate."
            )
            return {}
        if self._targets is not None and len(records) < len(self._targets):
            logger.warning(
                f"[GroundingRecallEvaluator] {self._dataset_name}: evaluated {len(records)} of "
                f"{len(self._targets)} images (only processed images are evaluated)."
            )

        recall = recall_at_k(torch.as_tensor(ranks), self._topk)
        metrics = OrderedDict((f"R@{k}", v) for k, v in recall.items())
        metrics["num_phrases"] = len(ranks)
        metrics["num_phrases_without_box"] = num_without_box
        metrics["num_images"] = len(records)
        logger.info(
            f"Grounding recall on {self._dataset_name} ({self.protocol}): "
            + ", ".join(f"{k}={v:.2f}" for k, v in metrics.items() if k.startswith("R@"))
            + f" over {len(ranks)} phrases ({num_without_box} phrases without a box skipped)"
        )
        if self._output_dir:
            self._write_per_phrase(records)
        return {self.task: metrics}

    def _write_per_phrase(self, records: List[dict]):
        rows = []
        for r in records:
            for k, (rank, ok) in enumerate(zip(r["ranks"], r["has_box"])):
                if ok:
                    rows.append({
                        "image_id": r["image_id"],
                        "phrase_index": k,
                        "first_hit_rank": rank if rank >= 0 else None,
                        **{f"R@{t}": 0 <= rank < t for t in self._topk},
                    })
        PathManager.mkdirs(self._output_dir)
        path = os.path.join(self._output_dir, f"grounding_{self._box_mode}_box_results.json")
        with PathManager.open(path, "w") as f:
            json.dump({"protocol": self.protocol, "box_mode": self._box_mode, "iou_threshold": self._iou_threshold,
                       "phrases": rows}, f)
        logger.info(f"Saved per-phrase grounding results to {path}")
