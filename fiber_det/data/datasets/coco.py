"""COCO-format detection datasets, used as detection-as-grounding: the mapper builds the caption
from the dataset's category names."""
from typing import Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json


def load_coco_detection(json_file: str, image_root: str, dataset_name: str) -> List[Dict]:
    records = load_coco_json(json_file, image_root, dataset_name)
    for r in records:
        r["task"] = "detection"
        r["dataset_name"] = dataset_name
    return records


def register_coco_detection(name: str, json_file: str, image_root: str, **metadata) -> None:
    """Register a COCO-format detection dataset (any custom one too) under ``name``."""
    DatasetCatalog.register(name, lambda: load_coco_detection(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata)
