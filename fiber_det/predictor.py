"""FiberPredictor: a model on images with a user's text prompt -> labelled detections."""
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from .checkpoint import FiberCheckpointer
from .text.prompts import build_caption

Span = Tuple[int, int]


def prompt_to_phrases(caption: str, phrases: Optional[Sequence[str]] = None) -> Tuple[List[str], List[List[Span]]]:
    """Phrases to detect and their spans in ``caption``.

    Without ``phrases``, the caption is a list of class names separated by "." (e.g.
    "red circle. blue square"), as detection prompts are. With ``phrases``, each must occur in the
    caption; its first occurrence is used.
    """
    if phrases:
        spans = []
        for p in phrases:
            start = caption.find(p)
            if start < 0:
                raise ValueError(f"phrase {p!r} does not occur in the caption {caption!r}")
            spans.append([(start, start + len(p))])
        return list(phrases), spans
    names, spans = [], []
    for m in re.finditer(r"[^.]+", caption):
        text = m.group(0)
        stripped = text.strip()
        if not stripped:
            continue
        start = m.start() + text.index(stripped)
        names.append(stripped)
        spans.append([(start, start + len(stripped))])
    if not names:
        raise ValueError(f"the prompt {caption!r} names nothing to detect")
    return names, spans


class FiberPredictor:
    """Like Detectron2's DefaultPredictor, with a text prompt.

        predictor = FiberPredictor(cfg)
        instances, names = predictor(bgr_image, "red circle. blue square")
    """

    def __init__(self, cfg):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        FiberCheckpointer.for_inference(self.model, cfg).load(cfg.MODEL.WEIGHTS)
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT

    @torch.no_grad()
    def __call__(self, image: np.ndarray, caption: str, phrases: Optional[Sequence[str]] = None):
        """image: HWC uint8 in the config's INPUT.FORMAT (BGR by default)."""
        names, spans = prompt_to_phrases(caption, phrases)
        h, w = image.shape[:2]
        resized = self.aug.get_transform(image).apply_image(image)
        inputs = {
            "image": torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)),
            "height": h, "width": w, "caption": caption, "class_spans": spans,
        }
        return self.model([inputs])[0]["instances"].to("cpu"), names

    @staticmethod
    def caption_for_classes(class_names: Sequence[str]) -> str:
        return build_caption(class_names)[0]
