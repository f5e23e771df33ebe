"""Flickr30k Entities from its original release (github.com/BryanPlummer/flickr30k_entities):

    flickr30k_entities/
      Sentences/<image id>.txt     5 captions an image, phrases marked up: [/EN#18/people A man]
      Annotations/<image id>.xml   PASCAL VOC-like: <size>, and <object>s with one or more <name>
                                   (entity ids) and a <bndbox>, or <nobndbox>/<scene> flags
      train.txt val.txt test.txt   image ids of each split

into the same dataset dicts as the MDETR-style loader (:func:`load_mdetr_grounding_json`): one dict per
sentence, with ``caption``, ``phrases`` (the phrases to evaluate) and box annotations with
``tokens_positive`` and ``phrase_ids``.

As in MDETR's Flickr evaluator (which FIBER uses): boxes are the file's integer xmin/ymin/xmax/ymax
taken as XYXY pixel coordinates; a phrase is evaluated when its entity has at least one box, so
phrases of entities marked ``nobndbox`` or ``scene`` only, and of the "notvisual" entity 0, are
kept in the caption but not evaluated; every mention of an entity is its own phrase; in the
"merged" variant each entity's boxes are replaced by the box enclosing them.
"""
import logging
import os
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

logger = logging.getLogger(__name__)

__all__ = [
    "parse_sentence",
    "read_sentences",
    "read_entity_boxes",
    "read_split",
    "load_flickr30k_entities",
    "register_flickr30k_entities",
]

# A sentence's id in the dataset dicts is image id * this + its index in the image's file.
SENTENCE_ID_STRIDE = 100


def parse_sentence(line: str, where: str = "") -> Dict:
    """One marked-up sentence -> {"caption", "phrases": [{"phrase", "entity_id", "types", "span"}]}.

    The caption is the sentence's words joined by single spaces, without the markup; ``span`` is
    the phrase's [start, end) character range in it.
    """
    words: List[str] = []
    phrases: List[Dict] = []
    offset = 0  # length of the caption so far
    current: Optional[Dict] = None
    for token in line.split():
        if current is None and token.startswith("["):
            parts = token[1:].split("/")
            if len(parts) < 2 or not parts[1].startswith("EN#"):
                raise ValueError(f"{where}: phrase marker {token!r} is not of the form [/EN#<id>/<type>")
            current = {"entity_id": parts[1][3:], "types": parts[2:], "words": [], "start": None}
            continue
        closes = current is not None and token.endswith("]")
        if closes:
            token = token[:-1]
        start = offset + (1 if words else 0)
        words.append(token)
        offset = start + len(token)
        if current is not None:
            if current["start"] is None:
                current["start"] = start
            current["words"].append(token)
            if closes:
                phrases.append({
                    "phrase": " ".join(current["words"]),
                    "entity_id": current["entity_id"],
                    "types": current["types"],
                    "span": [current["start"], offset],
                })
                current = None
    if current is not None:
        raise ValueError(f"{where}: phrase [/EN#{current['entity_id']} is not closed by ']'")
    return {"caption": " ".join(words), "phrases": phrases}


def read_sentences(path: str) -> List[Dict]:
    """Every sentence of a Sentences/<id>.txt file, in file order (see :func:`parse_sentence`)."""
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    return [parse_sentence(line, f"{path}, line {i + 1}") for i, line in enumerate(lines) if line]


def read_entity_boxes(path: str) -> Dict:
    """An Annotations/<id>.xml file -> {"width", "height", "boxes": {entity id: [[x0, y0, x1, y1], ...]},
    "nobox": [entity ids], "scene": [entity ids]}. A box listed under several names belongs to each."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path}: not a Flickr30k Entities annotation file ({e})") from e
    size = root.find("size")
    if size is None or size.find("width") is None or size.find("height") is None:
        raise ValueError(f"{path}: no <size> with <width> and <height>")
    out = {"width": int(size.find("width").text), "height": int(size.find("height").text),
           "boxes": {}, "nobox": [], "scene": []}
    for k, obj in enumerate(root.findall("object")):
        names = [n.text.strip() for n in obj.findall("name") if n.text and n.text.strip()]
        if not names:
            raise ValueError(f"{path}: <object> number {k + 1} has no <name>")
        box = obj.find("bndbox")
        if box is not None:
            try:
                coords = [int(float(box.find(t).text)) for t in ("xmin", "ymin", "xmax", "ymax")]
            except (AttributeError, TypeError, ValueError) as e:
                raise ValueError(f"{path}: <object> {names}: <bndbox> needs integer xmin, ymin, xmax, ymax") from e
            for name in names:
                out["boxes"].setdefault(name, []).append(coords)
            continue
        for flag in ("nobox", "scene"):
            node = obj.find("nobndbox" if flag == "nobox" else "scene")
            if node is not None and int(node.text) > 0:
                out[flag].extend(names)
    return out


def read_split(path: str) -> List[str]:
    """Image ids of a split list (train.txt / val.txt / test.txt), one per line."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def _enclosing(boxes: List[List[int]]) -> List[List[int]]:
    return [[min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]]


def load_flickr30k_entities(
    entities_root: str,
    image_root: str,
    split_file: str,
    dataset_name: Optional[str] = None,
    *,
    merged: bool = False,
) -> List[Dict]:
    """Dataset dicts of one split of the original Flickr30k Entities release.

    Args:
        entities_root: the folder holding Sentences/ and Annotations/.
        image_root: the folder of the Flickr30k images (<image id>.jpg).
        split_file: the split's list of image ids (e.g. ``entities_root/test.txt``).
        merged: one box per entity, enclosing all of its boxes (MDETR's "mergedGT").
    """
    if not os.path.isfile(split_file):
        raise FileNotFoundError(
            f"dataset '{dataset_name}': Flickr30k Entities split list {split_file} not found "
            "(see datasets/README.md for the expected layout under $FIBER_DATASETS)"
        )
    records, num_sentences, num_boxes = [], 0, 0
    for image_id in read_split(split_file):
        sentence_file = os.path.join(entities_root, "Sentences", f"{image_id}.txt")
        xml_file = os.path.join(entities_root, "Annotations", f"{image_id}.xml")
        for path in (sentence_file, xml_file):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"dataset '{dataset_name}': image {image_id} of {split_file}: {path} not found")
        entities = read_entity_boxes(xml_file)
        boxes_of = entities["boxes"]
        if merged:
            boxes_of = {e: _enclosing(b) for e, b in boxes_of.items()}
        for k, sentence in enumerate(read_sentences(sentence_file)):
            num_sentences += 1
            evaluated = [p for p in sentence["phrases"] if p["entity_id"] in boxes_of]
            annotations = []
            entity_order = list(dict.fromkeys(p["entity_id"] for p in evaluated))
            for entity in entity_order:
                phrase_ids = [i for i, p in enumerate(evaluated) if p["entity_id"] == entity]
                spans = [list(evaluated[i]["span"]) for i in phrase_ids]
                for x0, y0, x1, y1 in boxes_of[entity]:
                    annotations.append({
                        "id": len(annotations),
                        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                        "bbox_mode": BoxMode.XYWH_ABS,
                        "category_id": 0,
                        "iscrowd": 0,
                        "tokens_positive": [list(s) for s in spans],
                        "phrase_ids": phrase_ids,
                    })
            num_boxes += len(annotations)
            records.append({
                "file_name": os.path.join(image_root, f"{image_id}.jpg"),
                "height": entities["height"],
                "width": entities["width"],
                "image_id": int(image_id) * SENTENCE_ID_STRIDE + k,
                "caption": sentence["caption"],
                "phrases": [{"spans": [list(p["span"])]} for p in evaluated],
                "annotations": annotations,
                "task": "grounding",
                "dataset_name": dataset_name,
            })
    logger.info(
        f"Loaded {num_sentences} sentences with {num_boxes} boxes from Flickr30k Entities {split_file}"
        + (" (merged boxes)" if merged else "")
    )
    return records


def register_flickr30k_entities(
    name: str, entities_root: str, image_root: str, split_file: str, *, merged: bool = False, **metadata
) -> None:
    """Register one split of the original Flickr30k Entities release (evaluated with Recall@k)."""
    DatasetCatalog.register(
        name, lambda: load_flickr30k_entities(entities_root, image_root, split_file, name, merged=merged)
    )
    MetadataCatalog.get(name).set(
        entities_root=entities_root, image_root=image_root, split_file=split_file, evaluator_type="grounding", **metadata
    )
