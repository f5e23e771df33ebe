"""Dataset dict -> model input: reads and augments the image, builds the caption and the spans
that name each class (for inference) and each box (for training)."""
import copy
import logging
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ..text.prompts import build_caption

logger = logging.getLogger(__name__)


def build_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    if is_train:
        augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, "choice")]
        if cfg.INPUT.RANDOM_FLIP == "horizontal":
            augs.append(T.RandomFlip(horizontal=True, vertical=False))
        elif cfg.INPUT.RANDOM_FLIP != "none":
            raise ValueError(f"INPUT.RANDOM_FLIP must be 'horizontal' or 'none', got {cfg.INPUT.RANDOM_FLIP!r}")
        return augs
    return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]


class FiberDatasetMapper:
    @configurable
    def __init__(self, *, is_train: bool, augmentations: List[T.Augmentation], image_format: str = "BGR",
                 shuffle_categories: bool = True, separator: str = ". "):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.shuffle_categories = shuffle_categories
        self.separator = separator

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "augmentations": build_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "shuffle_categories": cfg.INPUT.SHUFFLE_CATEGORIES,
            "separator": cfg.INPUT.CATEGORY_SEPARATOR,
        }

    def _prompt(self, d: Dict):
        """(caption, class_spans, per-annotation spans)."""
        annos = d.get("annotations", [])
        if d.get("task") == "grounding":
            class_spans = [p["spans"] for p in d["phrases"]]
            return d["caption"], class_spans, [a["tokens_positive"] for a in annos]
        name = d.get("dataset_name")
        if name is None:
            raise ValueError(f"image {d.get('image_id')} ({d.get('file_name')}): detection dict without 'dataset_name'; "
                             "register it with fiber_det.data.datasets.register_coco_detection")
        classes = MetadataCatalog.get(name).thing_classes
        order = np.random.permutation(len(classes)) if (self.is_train and self.shuffle_categories) else None
        caption, spans = build_caption(classes, order, self.separator)
        return caption, [[s] for s in spans], [[spans[a["category_id"]]] for a in annos]

    def __call__(self, dataset_dict: Dict) -> Dict:
        d = copy.deepcopy(dataset_dict)
        image = utils.read_image(d["file_name"], format=self.image_format)
        utils.check_image_size(d, image)
        caption, class_spans, anno_spans = self._prompt(d)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        h, w = image.shape[:2]
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        d["caption"] = caption
        d["class_spans"] = class_spans
        annos = d.pop("annotations", [])
        if not self.is_train:
            return d
        kept, spans = [], []
        for obj, s in zip(annos, anno_spans):
            if obj.get("iscrowd", 0):
                continue
            kept.append(utils.transform_instance_annotations(obj, transforms, (h, w)))
            spans.append(s)
        instances = utils.annotations_to_instances(kept, (h, w))
        keep = instances.gt_boxes.nonempty().tolist()
        if not all(keep):
            logger.debug(f"image {d.get('image_id')}: dropped {keep.count(False)} empty boxes after augmentation")
        d["instances"] = instances[torch.tensor(keep, dtype=torch.bool)] if kept else instances
        d["instance_spans"] = [s for s, k in zip(spans, keep) if k]
        return d
