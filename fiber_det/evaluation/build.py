"""Evaluator choice per dataset (its metadata's ``evaluator_type``) and the evaluation data loader."""
import os

import torch
from detectron2.data import MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.build import trivial_batch_collator
from detectron2.data.common import DatasetFromList, MapDataset
from detectron2.data.samplers import InferenceSampler

from .coco import FiberCOCOEvaluator
from .grounding import GroundingRecallEvaluator
from .lvis import LVISDetectionEvaluator
from .refexp import RefExpEvaluator


def build_evaluator(cfg, dataset_name: str, output_folder=None):
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
    if kind == "coco":
        return FiberCOCOEvaluator(dataset_name, backend=cfg.TEST.COCO_EVAL_BACKEND, output_dir=output_folder)
    if kind == "lvis":
        return LVISDetectionEvaluator(
            dataset_name, protocols=cfg.TEST.LVIS_PROTOCOLS, max_dets_per_image=cfg.TEST.LVIS_MAX_DETS_PER_IMAGE,
            fixed_ap_dets_per_class=cfg.TEST.LVIS_FIXED_AP_DETS_PER_CLASS, output_dir=output_folder,
        )
    if kind == "grounding":
        return GroundingRecallEvaluator(dataset_name, output_dir=output_folder)
    if kind == "refexp":
        return RefExpEvaluator(dataset_name, output_dir=output_folder)
    raise ValueError(f"dataset {dataset_name}: no evaluator for evaluator_type {kind!r}")


def build_batched_test_loader(dataset_name: str, mapper, batch_size: int = 1, num_workers: int = 0):
    """Detectron2's test loader (InferenceSampler: every image exactly once, split across workers)
    with ``batch_size`` images per forward; the model pads a batch to its largest image."""
    if batch_size < 1:
        raise ValueError(f"TEST.IMS_PER_BATCH must be >= 1, got {batch_size}")
    dicts = get_detection_dataset_dicts([dataset_name], filter_empty=False)
    dataset = MapDataset(DatasetFromList(dicts, copy=False), mapper)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=InferenceSampler(len(dataset)),
        num_workers=num_workers,
        collate_fn=trivial_batch_collator,
    )
