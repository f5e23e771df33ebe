"""Captions from category lists and character spans -> token positive maps (ARCHITECTURE.md s. 9)."""
import re
from typing import List, Optional, Sequence, Tuple

import torch

Span = Tuple[int, int]


def clean_name(name: str) -> str:
    """Category name as the reference writes it in prompts: '(...)' dropped, '_' -> ' '."""
    name = re.sub(r"\(.*?\)", "", name)
    name = name.replace("_", " ")
    return re.sub(r"\s+", " ", name).strip()


def build_caption(
    names: Sequence[str], order: Optional[Sequence[int]] = None, separator: str = ". "
) -> Tuple[str, List[Span]]:
    """Join category names into one prompt.

    Returns the caption and, for each category index (in the original ``names`` order), the
    character span of its name. ``order`` permutes the categories in the caption (training shuffles).
    """
    order = list(range(len(names))) if order is None else list(order)
    spans: List[Optional[Span]] = [None] * len(names)
    caption = ""
    for i, idx in enumerate(order):
        if i > 0:
            caption += separator
        name = clean_name(names[idx])
        spans[idx] = (len(caption), len(caption) + len(name))
        caption += name
    if any(s is None for s in spans):
        missing = [i for i, s in enumerate(spans) if s is None]
        raise ValueError(f"build_caption: order does not cover categories {missing}")
    return caption, spans  # type: ignore[return-value]


def _char_to_token(encoding, batch_index: int, char: int) -> Optional[int]:
    if char < 0:
        return None
    return encoding.char_to_token(batch_index, char)


def spans_to_token_range(encoding, batch_index: int, start: int, end: int) -> Optional[Tuple[int, int]]:
    """Inclusive token range spelled by characters [start, end), with the reference's fallbacks
    (start+1, start+2 for the first token; end-2, end-3 for the last) when a lookup lands on a
    character that no token covers (e.g. a space)."""
    beg = _char_to_token(encoding, batch_index, start)
    if beg is None:
        beg = _char_to_token(encoding, batch_index, start + 1)
        if beg is None:
            beg = _char_to_token(encoding, batch_index, start + 2)
    last = _char_to_token(encoding, batch_index, end - 1)
    if last is None:
        last = _char_to_token(encoding, batch_index, end - 2)
        if last is None:
            last = _char_to_token(encoding, batch_index, end - 3)
    if beg is None or last is None:
        return None
    return beg, last


def positive_map_from_spans(
    encoding, spans_per_row: Sequence[Sequence[Span]], width: int, batch_index: int = 0
) -> torch.Tensor:
    """(len(spans_per_row), width) bool map: row j marks the tokens spelling any span of row j.

    Spans whose characters were truncated away (beyond the token budget) mark nothing; the caller
    decides whether a row left empty is an error.
    """
    pmap = torch.zeros(len(spans_per_row), width, dtype=torch.bool)
    for j, spans in enumerate(spans_per_row):
        for start, end in spans:
            rng = spans_to_token_range(encoding, batch_index, int(start), int(end))
            if rng is None:
                continue
            pmap[j, rng[0] : min(rng[1] + 1, width)] = True
    return pmap
