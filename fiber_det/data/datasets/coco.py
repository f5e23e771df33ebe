"""COCO-format detection datasets (COCO, Objects365, ODinW, any custom export), used as
detection-as-grounding: the mapper builds the caption from the dataset's category names.

Category ids are mapped to contiguous indices in sorted-id order. A category with id 0 is a
background placeholder (Roboflow exports, which ODinW comes from, put the dataset's super-category
there) and is dropped; an annotation that uses it is an error.
"""
import logging
import math
import os
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .io import read_annotation_json

logger = logging.getLogger(__name__)


def _set_or_check_classes(dataset_name: str, json_file: str, names: List[str], id_map: Dict[int, int]) -> None:
    """Record the classes of ``dataset_name`` in its metadata, or check them against names given
    at registration (which win: benchmarks such as ODinW rename the categories of their files)."""
    meta = MetadataCatalog.get(dataset_name)
    registered = meta.get("thing_classes")
    if registered is None:
        meta.thing_classes = names
    elif len(registered) != len(names):
        raise ValueError(
            f"dataset '{dataset_name}': {json_file} has {len(names)} categories {names[:5]}..., but the dataset "
            f"was registered with {len(registered)} class names {list(registered)[:5]}..."
        )
    elif list(registered) != names:
        logger.info(f"dataset '{dataset_name}': using the registered class names instead of those of {json_file}")
    if meta.get("thing_dataset_id_to_contiguous_id") is None:
        meta.thing_dataset_id_to_contiguous_id = id_map
    elif dict(meta.thing_dataset_id_to_contiguous_id) != id_map:
        raise ValueError(f"dataset '{dataset_name}': category ids of {json_file} differ from the registered ones")


def _finite_box(bbox) -> bool:
    return isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(
        isinstance(v, (int, float)) and math.isfinite(v) for v in bbox
    )


def load_coco_detection(
    json_file: str, image_root: str, dataset_name: Optional[str] = None, *, drop_background: bool = True
) -> List[Dict]:
    """Read a COCO-format detection file into Detectron2 dataset dicts (boxes only).

    Each dict has ``task`` "detection" and ``dataset_name``; annotations have a contiguous
    ``category_id``. With ``dataset_name``, the metadata gets ``thing_classes`` and
    ``thing_dataset_id_to_contiguous_id`` (or they are checked against those registered).
    """
    data = read_annotation_json(json_file, dataset_name, ("images", "categories"), "a COCO detection file")
    categories = sorted(data["categories"], key=lambda c: c["id"])
    if drop_background and categories and categories[0]["id"] == 0:
        logger.info(f"{json_file}: dropping background category 0 ({categories[0].get('name')!r})")
        categories = categories[1:]
    id_map = {c["id"]: i for i, c in enumerate(categories)}
    if dataset_name is not None:
        _set_or_check_classes(dataset_name, json_file, [c["name"] for c in categories], id_map)

    anns_by_image: Dict[int, List[Dict]] = {}
    for ann in data.get("annotations", []):
        anns_by_image.setdefault(ann["image_id"], []).append(ann)
    records = []
    for img in data["images"]:
        annotations = []
        for ann in anns_by_image.get(img["id"], []):
            where = f"{json_file}: image id {img['id']}, annotation id {ann.get('id')}"
            if ann.get("ignore", 0):
                continue
            if ann.get("category_id") not in id_map:
                raise ValueError(f"{where}: category_id {ann.get('category_id')} is not a (non-background) category")
            if not _finite_box(ann.get("bbox")):
                raise ValueError(f"{where}: bbox {ann.get('bbox')} is not 4 finite numbers [x, y, w, h]")
            annotations.append({
                "id": ann.get("id"),
                "bbox": [float(v) for v in ann["bbox"]],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": id_map[ann["category_id"]],
                "iscrowd": int(ann.get("iscrowd", 0)),
            })
        records.append({
            "file_name": os.path.join(image_root, img["file_name"]),
            "height": int(img["height"]),
            "width": int(img["width"]),
            "image_id": img["id"],
            "annotations": annotations,
            "task": "detection",
            "dataset_name": dataset_name,
        })
    num_boxes = sum(len(r["annotations"]) for r in records)
    logger.info(f"Loaded {len(records)} images with {num_boxes} boxes in {len(categories)} categories from {json_file}")
    return records


def register_coco_detection(
    name: str,
    json_file: str,
    image_root: str,
    *,
    thing_classes: Optional[Sequence[str]] = None,
    prompt_style: str = "categories",
    prompt_templates: Optional[Sequence[Optional[Dict[str, str]]]] = None,
    drop_background: bool = True,
    evaluator_type: str = "coco",
    **metadata,
) -> None:
    """Register a COCO-format detection dataset (any custom one too) under ``name``.

    Args:
        thing_classes: class names to use instead of those in the file (one per non-background
            category, in id order).
        prompt_style: "categories" (training captions list every class, shuffled) or "sampled"
            (present classes within the token budget plus sampled negatives, for large
            vocabularies such as Objects365 and LVIS).
        prompt_templates: optional per-class {"prefix", "name", "suffix"} for the captions.
        drop_background: drop category id 0 (a Roboflow export's placeholder).
    """
    if prompt_style not in ("categories", "sampled"):
        raise ValueError(f"dataset '{name}': prompt_style must be 'categories' or 'sampled', got {prompt_style!r}")
    DatasetCatalog.register(
        name, lambda: load_coco_detection(json_file, image_root, name, drop_background=drop_background)
    )
    meta = MetadataCatalog.get(name)
    meta.set(json_file=json_file, image_root=image_root, evaluator_type=evaluator_type, prompt_style=prompt_style,
             **metadata)
    if thing_classes is not None:
        meta.thing_classes = list(thing_classes)
    if prompt_templates is not None:
        meta.prompt_templates = list(prompt_templates)
