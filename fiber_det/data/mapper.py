"""Dataset dict -> model input: reads and augments the image, checks the annotations, builds the
caption and the spans that name each class (for inference) and each box (for training)."""
import copy
import logging
import os
import random
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from detectron2.utils.logger import log_every_n_seconds
from PIL import Image, ImageOps

from ..text.prompts import (
    CaptionTooLongError,
    build_caption,
    category_token_lengths,
    check_caption_fits,
    chunk_categories,
    count_tokens,
    lost_spans,
    sample_detection_prompt,
    validate_control_prob,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------
def read_image(file_name: str, format: str = "BGR") -> np.ndarray:
    """Read an image as an HWC uint8 array in ``format`` ("BGR" or "RGB").

    EXIF orientation is applied. 16-bit images (mode "I;16*", or "I" holding values above 255) are
    scaled to 0-255 rather than clipped; grayscale, palette, CMYK and RGBA images are converted to
    RGB as the reference does (alpha is dropped).
    """
    if format not in ("BGR", "RGB"):
        raise ValueError(f"read_image: format must be 'BGR' or 'RGB', got {format!r}")
    with Image.open(file_name) as pil:
        pil = ImageOps.exif_transpose(pil)
        if pil.mode.startswith("I") or pil.mode == "F":
            arr = np.asarray(pil).astype(np.float64)
            if pil.mode.startswith("I;16") or arr.max(initial=0) > 255:
                arr = arr / 257.0  # 65535 -> 255
            gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
            image = np.repeat(gray[:, :, None], 3, axis=2)
        else:
            image = np.asarray(pil.convert("RGB"))
    if format == "BGR":
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


# ---------------------------------------------------------------------------------------------
# Augmentations
# ---------------------------------------------------------------------------------------------
def reference_output_size(h: int, w: int, size: int, max_size: Optional[int]) -> Tuple[int, int]:
    """Output (h, w) of the reference's Resize: the shorter side becomes ``size`` unless the longer
    side would exceed ``max_size``; the shorter side is then rounded and the longer truncated."""
    if max_size is not None:
        short, long = float(min(w, h)), float(max(w, h))
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


class ReferenceResize(T.Augmentation):
    """Resize the shorter edge to a length drawn from ``short_edge_lengths``, the longer edge capped
    at ``max_size``, with the reference's rounding (maskrcnn_benchmark ``Resize.get_size``)."""

    def __init__(self, short_edge_lengths: Sequence[int], max_size: Optional[int]):
        super().__init__()
        if isinstance(short_edge_lengths, int):
            short_edge_lengths = (short_edge_lengths,)
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        size = int(random.choice(list(self.short_edge_lengths)))
        new_h, new_w = reference_output_size(h, w, size, self.max_size)
        if (new_h, new_w) == (h, w):
            return T.NoOpTransform()
        return T.ResizeTransform(h, w, new_h, new_w)


def build_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    min_size = cfg.INPUT.MIN_SIZE_TRAIN if is_train else cfg.INPUT.MIN_SIZE_TEST
    max_size = cfg.INPUT.MAX_SIZE_TRAIN if is_train else cfg.INPUT.MAX_SIZE_TEST
    style = cfg.INPUT.RESIZE_STYLE
    if style == "reference":
        augs: List[T.Augmentation] = [ReferenceResize(min_size, max_size)]
    elif style == "detectron2":
        sampling = cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING if is_train else "choice"
        augs = [T.ResizeShortestEdge(min_size, max_size, sampling)]
    else:
        raise ValueError(f"INPUT.RESIZE_STYLE must be 'reference' or 'detectron2', got {style!r}")
    if is_train:
        if cfg.INPUT.RANDOM_FLIP == "horizontal":
            augs.append(T.RandomFlip(horizontal=True, vertical=False))
        elif cfg.INPUT.RANDOM_FLIP != "none":
            raise ValueError(f"INPUT.RANDOM_FLIP must be 'horizontal' or 'none', got {cfg.INPUT.RANDOM_FLIP!r}")
    return augs


# ---------------------------------------------------------------------------------------------
# The mapper
# ---------------------------------------------------------------------------------------------
def _where(d: Dict) -> str:
    return f"dataset '{d.get('dataset_name')}', image id {d.get('image_id')}"


class FiberDatasetMapper:
    """Turns a dataset dict into the model's input.

    Output keys: ``image`` (CHW uint8 tensor), ``caption``, ``class_spans`` (one span list per class
    or phrase; empty for a class the caption does not list) and, in training, ``instances``
    (gt_boxes, gt_classes) with the aligned ``instance_spans``.

    Detection dicts get a caption built from their dataset's ``thing_classes`` in the style of the
    dataset's metadata ``prompt_style``: "categories" (every class; shuffled in training, in class
    order otherwise) or "sampled" (in training: the present classes that fit the token budget plus
    sampled negatives, see :func:`fiber_det.text.sample_detection_prompt`). Grounding dicts keep
    their caption. In evaluation, a "sampled" dataset's vocabulary does not fit one caption: its
    dicts get ``prompt_chunks`` instead of ``caption`` / ``class_spans``, one
    {"caption", "class_spans", "class_ids"} per ``prompt_chunk_size`` categories in class order
    (:func:`fiber_det.text.chunk_categories`; the model runs once per chunk).

    Training boxes are clipped to the image; boxes left with no area are dropped. Both are counted
    in ``self.stats`` and logged. With a tokenizer, a caption that would lose boxes (or, in
    evaluation, classes / phrases) to the token budget raises :class:`CaptionTooLongError`.
    """

    @configurable
    def __init__(
        self,
        *,
        is_train: bool,
        augmentations: List[T.Augmentation],
        image_format: str = "BGR",
        shuffle_categories: bool = True,
        separator: str = ". ",
        tokenizer=None,
        max_length: int = 256,
        control_prob: Sequence[float] = (0.0, 0.0, 0.5, 0.0),
        max_negatives: int = 85,
        prompt_chunk_size: int = 40,
    ):
        """
        Args:
            tokenizer: a fast tokenizer, or its name / folder (loaded on first use), or None (no
                token-budget checks; "sampled" prompts then cannot be built).
            max_length: the text encoder's token budget (special tokens included).
            control_prob, max_negatives: negative sampling of "sampled" prompts (DATASETS.CONTROL_PROB
                and DATASETS.RANDOM_SAMPLE_NEG); a dataset's metadata ``control_prob`` overrides.
            prompt_chunk_size: categories per evaluation prompt of a "sampled" dataset (TEST.PROMPT_CHUNK_SIZE).
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.shuffle_categories = shuffle_categories
        self.separator = separator
        self._tokenizer = tokenizer
        self.max_length = max_length
        self.control_prob = validate_control_prob(control_prob)
        self.max_negatives = max_negatives
        self.stats: Counter = Counter()
        self._token_lengths: Dict[str, List[int]] = {}
        self._checked_captions: Dict[Tuple[str, int], int] = {}
        self.prompt_chunk_size = prompt_chunk_size
        self._prompt_chunks: Dict[str, List[Dict]] = {}
        self._warned: set = set()

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        text = cfg.MODEL.FIBER.TEXT
        return {
            "is_train": is_train,
            "augmentations": build_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "shuffle_categories": cfg.INPUT.SHUFFLE_CATEGORIES,
            "separator": cfg.INPUT.CATEGORY_SEPARATOR,
            "tokenizer": text.TOKENIZER or text.MODEL_NAME,
            "max_length": text.MAX_LENGTH,
            "control_prob": cfg.DATASETS.CONTROL_PROB,
            "max_negatives": cfg.DATASETS.RANDOM_SAMPLE_NEG,
            "prompt_chunk_size": cfg.TEST.PROMPT_CHUNK_SIZE,
        }

    @property
    def tokenizer(self):
        if isinstance(self._tokenizer, (str, os.PathLike)):
            from ..modeling.backbone.text import build_tokenizer

            self._tokenizer = build_tokenizer(self._tokenizer)
        return self._tokenizer

    # ---- annotations ----
    def _warn_once(self, key, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(msg)

    def _check_boxes(self, d: Dict, annos: List[Dict], h: int, w: int) -> List[Dict]:
        """Drop crowd boxes, clip the others to the image and drop those left without area."""
        kept = []
        for a in annos:
            if a.get("iscrowd", 0):
                continue
            box = [float(v) for v in BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)]
            clipped = [min(max(box[0], 0.0), w), min(max(box[1], 0.0), h),
                       min(max(box[2], 0.0), w), min(max(box[3], 0.0), h)]
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                self.stats["boxes_dropped_empty"] += 1
                self._warn_once(
                    (d.get("dataset_name"), d.get("image_id"), a.get("id")),
                    f"{_where(d)}, annotation id {a.get('id')}: box {a['bbox']} ({BoxMode(a['bbox_mode']).name}) has "
                    f"no area inside the {w}x{h} image; dropped",
                )
                continue
            if clipped != box:
                self.stats["boxes_clipped"] += 1
                logger.debug(f"{_where(d)}, annotation id {a.get('id')}: box {box} clipped to {clipped}")
            kept.append(dict(a, bbox=clipped, bbox_mode=BoxMode.XYXY_ABS))
        if self.stats["boxes_dropped_empty"] or self.stats["boxes_clipped"]:
            log_every_n_seconds(
                logging.INFO,
                f"FiberDatasetMapper: {self.stats['boxes_clipped']} boxes clipped to their image and "
                f"{self.stats['boxes_dropped_empty']} boxes without area dropped so far",
                n=600,
                name=__name__,
            )
        return kept

    # ---- captions ----
    def _check_fits(self, d: Dict, caption: str, what: str) -> None:
        key = (d.get("dataset_name"), len(caption))
        if key not in self._checked_captions:
            self._checked_captions[key] = check_caption_fits(self.tokenizer, caption, self.max_length,
                                                             f"{_where(d)} ({what})")

    def _detection_prompt(self, d: Dict, annos: List[Dict]):
        name = d.get("dataset_name")
        if name is None:
            raise ValueError(
                f"image {d.get('image_id')} ({d.get('file_name')}): detection dict without 'dataset_name'; "
                "register the dataset with fiber_det.data.datasets.register_coco_detection (or use fiber-det's "
                "built-in names, see datasets/README.md)"
            )
        meta = MetadataCatalog.get(name)
        classes = meta.get("thing_classes")
        if classes is None:
            raise ValueError(f"{_where(d)}: the dataset's metadata has no thing_classes")
        style = meta.get("prompt_style", "categories")
        if style == "sampled" and self.is_train:
            if self.tokenizer is None:
                raise ValueError(f"{_where(d)}: 'sampled' prompts need a tokenizer for the token budget")
            if name not in self._token_lengths:
                self._token_lengths[name] = category_token_lengths(self.tokenizer, classes, self.separator)
            prompt = sample_detection_prompt(
                classes, [a["category_id"] for a in annos], self._token_lengths[name],
                budget=self.max_length - 2, control_prob=meta.get("control_prob", self.control_prob),
                max_negatives=self.max_negatives, separator=self.separator, rng=random,
            )
            if prompt.dropped:
                dropped = set(prompt.dropped)
                n_before = len(annos)
                annos = [a for a in annos if a["category_id"] not in dropped]
                self.stats["boxes_dropped_over_budget"] += n_before - len(annos)
                logger.warning(
                    f"{_where(d)}: {len(dropped)} present classes do not fit in {self.max_length - 2} tokens; "
                    f"removed their {n_before - len(annos)} boxes"
                )
            caption, spans = prompt.caption, prompt.spans
            check_caption_fits(self.tokenizer, caption, self.max_length, f"{_where(d)} (sampled prompt)")
        else:
            order = (np.random.permutation(len(classes)).tolist()
                     if self.is_train and self.shuffle_categories else None)
            caption, spans = build_caption(classes, order, self.separator, meta.get("prompt_templates"))
            if self.tokenizer is not None:
                self._check_fits(d, caption, f"all {len(classes)} categories")
        anno_spans = []
        for a in annos:
            span = spans[a["category_id"]]
            if span is None:
                raise ValueError(
                    f"{_where(d)}, annotation id {a.get('id')}: class {a['category_id']} "
                    f"({classes[a['category_id']]!r}) has no name to write in the caption; rename it in the "
                    "dataset's thing_classes or prompt_templates"
                )
            anno_spans.append([span])
        class_spans = [[s] if s is not None else [] for s in spans]
        return caption, class_spans, anno_spans, annos

    def _uses_prompt_chunks(self, d: Dict) -> bool:
        name = d.get("dataset_name")
        return (not self.is_train and name is not None
                and MetadataCatalog.get(name).get("prompt_style", "categories") == "sampled")

    def _chunked_prompts(self, d: Dict) -> List[Dict]:
        """The evaluation prompts of a large vocabulary (the same for every image of the dataset)."""
        name = d["dataset_name"]
        if name not in self._prompt_chunks:
            meta = MetadataCatalog.get(name)
            classes = meta.get("thing_classes")
            if classes is None:
                raise ValueError(f"{_where(d)}: the dataset's metadata has no thing_classes")
            chunks = chunk_categories(classes, self.prompt_chunk_size, self.separator, meta.get("prompt_templates"))
            if self.tokenizer is not None:
                for i, chunk in enumerate(chunks):
                    check_caption_fits(self.tokenizer, chunk.caption, self.max_length,
                                       f"dataset '{name}', prompt chunk {i} of {len(chunks)} "
                                       f"(TEST.PROMPT_CHUNK_SIZE={self.prompt_chunk_size}: lower it)")
            self._prompt_chunks[name] = [
                {"caption": c.caption, "class_spans": [[span] for span in c.spans], "class_ids": c.class_ids}
                for c in chunks
            ]
        return self._prompt_chunks[name]

    def _grounding_prompt(self, d: Dict, annos: List[Dict]):
        caption = d["caption"]
        for a in annos:
            for start, end in a["tokens_positive"]:
                if not 0 <= start < end <= len(caption):
                    raise ValueError(
                        f"{_where(d)}, annotation id {a.get('id')}: span [{start}, {end}] is outside the caption "
                        f"({len(caption)} characters)"
                    )
        class_spans = [p["spans"] for p in d["phrases"]]
        anno_spans = [a["tokens_positive"] for a in annos]
        if self.tokenizer is not None:
            rows = anno_spans if self.is_train else class_spans
            lost = lost_spans(self.tokenizer, caption, rows, self.max_length)
            if lost:
                what = ([f"annotation id {annos[j].get('id')}" for j in lost] if self.is_train
                        else [f"phrase {j}" for j in lost])
                raise CaptionTooLongError(
                    f"{_where(d)}: the caption has {count_tokens(self.tokenizer, caption)} tokens; the model takes "
                    f"{self.max_length} (MODEL.FIBER.TEXT.MAX_LENGTH) and {', '.join(what)} would be cut off. "
                    f"Caption starts: {caption[:80]!r}"
                )
        return caption, class_spans, anno_spans, annos

    # ---- the whole sample ----
    def _read(self, d: Dict) -> np.ndarray:
        try:
            image = read_image(d["file_name"], format=self.image_format)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{_where(d)}: image file {d['file_name']} not found (check the dataset's image folder under "
                f"$FIBER_DATASETS; `python -m fiber_det.data.datasets.check --images` lists what is missing)"
            ) from e
        try:
            utils.check_image_size(d, image)
        except utils.SizeMismatchError as e:
            hint = (" The sizes are swapped: the file has an EXIF rotation the annotation did not apply."
                    if (image.shape[0], image.shape[1]) == (d.get("width"), d.get("height")) else "")
            raise utils.SizeMismatchError(f"{_where(d)}: {e}{hint}") from e
        return image

    def __call__(self, dataset_dict: Dict) -> Dict:
        d = copy.deepcopy(dataset_dict)
        image = self._read(d)
        h0, w0 = image.shape[:2]
        annos = d.pop("annotations", [])
        if self.is_train:
            annos = self._check_boxes(d, annos, h0, w0)
        prompt_chunks = None
        if d.get("task") == "grounding":
            caption, class_spans, anno_spans, annos = self._grounding_prompt(d, annos)
        elif self._uses_prompt_chunks(d):
            prompt_chunks = self._chunked_prompts(d)
        else:
            caption, class_spans, anno_spans, annos = self._detection_prompt(d, annos)

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        h, w = image.shape[:2]
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if prompt_chunks is not None:
            d["prompt_chunks"] = prompt_chunks
            return d
        d["caption"] = caption
        d["class_spans"] = class_spans
        if not self.is_train:
            return d

        objs = [utils.transform_instance_annotations(a, transforms, (h, w)) for a in annos]
        instances = utils.annotations_to_instances(objs, (h, w))
        keep = instances.gt_boxes.nonempty()
        if not bool(keep.all()):
            self.stats["boxes_empty_after_augmentation"] += int((~keep).sum())
            logger.debug(f"{_where(d)}: dropped {int((~keep).sum())} boxes left empty by the augmentation")
        d["instances"] = instances[keep]
        d["instance_spans"] = [s for s, k in zip(anno_spans, keep.tolist()) if k]
        return d
