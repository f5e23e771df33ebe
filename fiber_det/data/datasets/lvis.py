"""LVIS v1 (train, val, and MDETR's 5k minival), as detection-as-grounding data.

The images are COCO 2017's: an image's file is found from its ``coco_url`` ("train2017/xxx.jpg" or
"val2017/xxx.jpg" under the COCO folder) or, in files that carry one, its ``file_name``. The 1203
class names are Detectron2's LVIS v1 list. Training captions use the "sampled" prompt style (the
vocabulary does not fit in one caption); evaluation needs chunked prompts.
"""
import logging
import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.lvis import get_lvis_instances_meta
from detectron2.structures import BoxMode

from .io import read_annotation_json

logger = logging.getLogger(__name__)


def _lvis_image_path(image_root: str, img: Dict, json_file: str) -> str:
    if "coco_url" in img:
        split_folder, file_name = img["coco_url"].split("/")[-2:]
        return os.path.join(image_root, split_folder, file_name)
    if "file_name" in img:
        return os.path.join(image_root, img["file_name"])
    raise ValueError(f"{json_file}: image id {img.get('id')} has neither 'coco_url' nor 'file_name'")


def load_lvis_detection(json_file: str, image_root: str, dataset_name: Optional[str] = None) -> List[Dict]:
    """Read an LVIS-format file into dataset dicts (``task`` "detection", contiguous
    ``category_id``, and LVIS's per-image ``not_exhaustive_category_ids`` / ``neg_category_ids``)."""
    data = read_annotation_json(json_file, dataset_name, ("images", "annotations", "categories"), "an LVIS file")
    cat_ids = sorted(c["id"] for c in data["categories"])
    id_map = {cid: i for i, cid in enumerate(cat_ids)}
    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name)
        classes = meta.get("thing_classes")
        if classes is not None and len(classes) != len(cat_ids):
            raise ValueError(
                f"dataset '{dataset_name}': {json_file} has {len(cat_ids)} categories, the dataset was registered "
                f"with {len(classes)}"
            )
        if classes is None:
            by_id = {c["id"]: c.get("synonyms", [c["name"]])[0] for c in data["categories"]}
            meta.thing_classes = [by_id[cid] for cid in cat_ids]

    anns_by_image: Dict[int, List[Dict]] = {}
    for ann in data["annotations"]:
        anns_by_image.setdefault(ann["image_id"], []).append(ann)
    records = []
    for img in data["images"]:
        annotations = []
        for ann in anns_by_image.get(img["id"], []):
            if ann["category_id"] not in id_map:
                raise ValueError(
                    f"{json_file}: image id {img['id']}, annotation id {ann.get('id')}: unknown category_id "
                    f"{ann['category_id']}"
                )
            annotations.append({
                "id": ann.get("id"),
                "bbox": [float(v) for v in ann["bbox"]],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": id_map[ann["category_id"]],
                "iscrowd": 0,
            })
        records.append({
            "file_name": _lvis_image_path(image_root, img, json_file),
            "height": int(img["height"]),
            "width": int(img["width"]),
            "image_id": img["id"],
            "not_exhaustive_category_ids": img.get("not_exhaustive_category_ids", []),
            "neg_category_ids": img.get("neg_category_ids", []),
            "annotations": annotations,
            "task": "detection",
            "dataset_name": dataset_name,
        })
    logger.info(f"Loaded {len(records)} images with {len(data['annotations'])} boxes from {json_file}")
    return records


def register_lvis_detection(name: str, json_file: str, image_root: str, *, prompt_style: str, **metadata) -> None:
    """Register an LVIS-format file under ``name`` with the LVIS v1 class names (``metadata`` may
    override them with ``thing_classes``, e.g. for a file with another vocabulary)."""
    DatasetCatalog.register(name, lambda: load_lvis_detection(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="lvis", prompt_style=prompt_style,
        **{**get_lvis_instances_meta("lvis_v1"), **metadata},
    )
