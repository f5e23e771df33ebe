"""MDETR-style grounding files (ARCHITECTURE.md section 10): COCO-like JSON whose images carry a
caption and whose annotations carry ``tokens_positive`` character spans."""
import logging
import math
import os
from typing import Dict, List, Mapping, Optional, Union

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .io import read_annotation_json

logger = logging.getLogger(__name__)


def _overlaps(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _image_path(image_root: Union[str, Mapping[str, str]], img: Dict, json_file: str) -> str:
    if isinstance(image_root, str):
        return os.path.join(image_root, img["file_name"])
    source = img.get("data_source")
    if source not in image_root:
        raise ValueError(
            f"{json_file}: image id {img.get('id')} has data_source {source!r}; "
            f"image roots are given for {sorted(image_root)}"
        )
    return os.path.join(image_root[source], img["file_name"])


def load_mdetr_grounding_json(
    json_file: str, image_root: Union[str, Mapping[str, str]], dataset_name: Optional[str] = None
) -> List[Dict]:
    """Read an MDETR-style grounding file into Detectron2 dataset dicts.

    Each dict has ``caption``, ``phrases`` (the phrases to evaluate: ``tokens_positive_eval`` when
    the file has it, else the distinct span sets of the annotations) and ``annotations`` with
    ``tokens_positive`` and ``phrase_ids`` (indices of the phrases the box belongs to).

    ``image_root`` is a folder, or a mapping from the images' ``data_source`` to a folder (the
    GoldG file mixes COCO and Visual Genome images: {"coco": ..., "vg": ...}).
    """
    data = read_annotation_json(json_file, dataset_name, ("images", "annotations"), "an MDETR-style grounding file")
    anns_by_image: Dict[int, List[Dict]] = {}
    for ann in data["annotations"]:
        anns_by_image.setdefault(ann["image_id"], []).append(ann)

    records = []
    for img in data["images"]:
        caption = img.get("caption")
        if not isinstance(caption, str):
            raise ValueError(f"{json_file}: image id {img.get('id')} has no caption")
        anns = anns_by_image.get(img["id"], [])
        for ann in anns:
            box = ann.get("bbox")
            if not (isinstance(box, list) and len(box) == 4 and all(
                    isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
                raise ValueError(
                    f"{json_file}: image id {img['id']}, annotation id {ann.get('id')}: bbox {box} is not "
                    "4 finite numbers [x, y, w, h]"
                )
            for start, end in ann.get("tokens_positive", []):
                if not (0 <= start < end <= len(caption)):
                    raise ValueError(
                        f"{json_file}: image id {img['id']}, annotation id {ann.get('id')}: span [{start}, {end}] "
                        f"is outside the caption ({len(caption)} characters)"
                    )
        if "tokens_positive_eval" in img:
            phrases = [[list(s) for s in spans] for spans in img["tokens_positive_eval"]]
        else:
            phrases, seen = [], set()
            for ann in anns:
                key = tuple(tuple(s) for s in ann.get("tokens_positive", []))
                if key and key not in seen:
                    seen.add(key)
                    phrases.append([list(s) for s in key])
        annotations = []
        for ann in anns:
            spans = [list(s) for s in ann.get("tokens_positive", [])]
            phrase_ids = [
                k for k, p in enumerate(phrases) if any(_overlaps(a, b) for a in spans for b in p)
            ]
            annotations.append({
                "id": ann.get("id"),
                "bbox": [float(v) for v in ann["bbox"]],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 0,
                "iscrowd": int(ann.get("iscrowd", 0)),
                "tokens_positive": spans,
                "phrase_ids": phrase_ids,
            })
        records.append({
            "file_name": _image_path(image_root, img, json_file),
            "height": int(img["height"]),
            "width": int(img["width"]),
            "image_id": img["id"],
            "caption": caption,
            "phrases": [{"spans": p} for p in phrases],
            "annotations": annotations,
            "task": "grounding",
            "dataset_name": dataset_name,
        })
    logger.info(f"Loaded {len(records)} captions with {len(data['annotations'])} boxes from {json_file}")
    return records


def register_mdetr_grounding(
    name: str,
    json_file: str,
    image_root: Union[str, Mapping[str, str]],
    *,
    evaluator_type: str = "grounding",
    **metadata,
) -> None:
    """Register an MDETR-style grounding file. ``evaluator_type``: "grounding" (phrase Recall@k,
    Flickr30k) or "refexp" (precision@1 of referring expressions, RefCOCO/+/g)."""
    DatasetCatalog.register(name, lambda: load_mdetr_grounding_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type=evaluator_type, **metadata
    )
