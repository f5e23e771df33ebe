"""Captions from category lists and character spans -> token positive maps (ARCHITECTURE.md s. 9).

Detection data becomes grounding data by writing the category names into a caption
("cat. hot dog. tv") and pointing each box at the span of its category's name. This module builds
such captions (all categories, optionally shuffled and templated; or the reference's Objects365 /
LVIS recipe of present classes under a token budget plus sampled negatives; or chunks of a long
vocabulary for evaluation) and turns character spans into token positive maps for any fast tokenizer.
"""
import random
import re
from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple

import torch

Span = Tuple[int, int]
# Per-category prompt template: optional "prefix", "name" (replaces the category name) and "suffix".
Template = Mapping[str, str]


class CaptionTooLongError(ValueError):
    """A caption needs more tokens than the text encoder takes and boxes would be lost."""


def clean_name(name: str) -> str:
    """Category name as the reference writes it in prompts: '(...)' dropped, '_' -> ' '."""
    name = re.sub(r"\(.*?\)", "", name)
    name = name.replace("_", " ")
    return re.sub(r"\s+", " ", name).strip()


def build_caption(
    names: Sequence[str],
    order: Optional[Sequence[int]] = None,
    separator: str = ". ",
    templates: Optional[Sequence[Optional[Template]]] = None,
) -> Tuple[str, List[Optional[Span]]]:
    """Join category names into one prompt.

    Args:
        names: category names (cleaned with :func:`clean_name`).
        order: the categories to write, in caption order (default: all, in index order). Training
            shuffles it; a subset of indices writes only those categories.
        separator: text between two categories (no trailing separator).
        templates: optional per-category template (aligned with ``names``): ``prefix`` and
            ``suffix`` are written around the name and are not part of its span; ``name`` replaces
            the category name.

    Returns:
        the caption and, for each category index (in the original ``names`` order), the character
        span of its name, or None for a category not written (not in ``order``, or whose name is
        empty after cleaning — such a category can never be detected).
    """
    order = list(range(len(names))) if order is None else [int(i) for i in order]
    bad = [i for i in order if not 0 <= i < len(names)]
    if bad or len(set(order)) != len(order):
        raise ValueError(f"build_caption: order {order} must hold distinct indices in [0, {len(names)})")
    if templates is not None and len(templates) != len(names):
        raise ValueError(f"build_caption: {len(templates)} templates for {len(names)} categories")
    spans: List[Optional[Span]] = [None] * len(names)
    caption = ""
    for idx in order:
        template = (templates[idx] if templates is not None else None) or {}
        name = clean_name(template.get("name", names[idx]))
        if not name:
            continue
        if caption:
            caption += separator
        caption += template.get("prefix", "")
        spans[idx] = (len(caption), len(caption) + len(name))
        caption += name + template.get("suffix", "")
    return caption, spans


@dataclass
class PromptChunk:
    """One prompt of a chunked vocabulary: the categories it lists, its caption, their spans."""

    class_ids: List[int]
    caption: str
    spans: List[Span]  # aligned with class_ids


def chunk_categories(
    names: Sequence[str],
    chunk_size: int = 40,
    separator: str = ". ",
    templates: Optional[Sequence[Optional[Template]]] = None,
) -> List[PromptChunk]:
    """Split a long vocabulary into prompts of ``chunk_size`` categories each, in index order (the
    reference's LVIS evaluation: categories sorted by id, 40 per prompt, 31 prompts for LVIS v1).

    Categories whose name is empty after cleaning are left out of every chunk.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_categories: chunk_size must be >= 1, got {chunk_size}")
    chunks = []
    for begin in range(0, len(names), chunk_size):
        ids = list(range(begin, min(begin + chunk_size, len(names))))
        caption, spans = build_caption(names, ids, separator, templates)
        kept = [i for i in ids if spans[i] is not None]
        chunks.append(PromptChunk(kept, caption, [spans[i] for i in kept]))
    return chunks


# ---------------------------------------------------------------------------------------------
# Token budget
# ---------------------------------------------------------------------------------------------
def count_tokens(tokenizer, text: str) -> int:
    """Tokens the text encoder sees for ``text``, special tokens included."""
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])


def check_caption_fits(tokenizer, caption: str, max_length: int, where: str) -> int:
    """Raise :class:`CaptionTooLongError` naming ``where`` if ``caption`` needs more than
    ``max_length`` tokens; return its token count."""
    n = count_tokens(tokenizer, caption)
    if n > max_length:
        raise CaptionTooLongError(
            f"{where}: the caption has {n} tokens; the model takes {max_length} "
            f"(MODEL.FIBER.TEXT.MAX_LENGTH), so the categories or phrases after the cut would be lost. "
            f"Split the vocabulary with fiber_det.text.chunk_categories, use the 'sampled' prompt style "
            f"for training, or shorten the caption. Caption starts: {caption[:80]!r}"
        )
    return n


def category_token_lengths(tokenizer, names: Sequence[str], separator: str = ". ") -> List[int]:
    """Tokens each category costs in a caption, counted as the reference does: the tokens of
    ``clean_name(name) + separator`` without special tokens (an upper bound: the separator's
    trailing space merges into the next name's first token in a real caption)."""
    return [len(tokenizer.tokenize(clean_name(n) + separator)) for n in names]


def fit_positive_classes(
    class_ids: Sequence[int], token_lengths: Sequence[int], budget: int, rng: random.Random
) -> Tuple[List[int], int]:
    """The reference's positive-overflow check: visit the present classes in random order and keep
    them while their summed token cost stays within ``budget`` (254 = 256 minus the two special
    tokens). Returns the kept classes and their token cost."""
    order = list(dict.fromkeys(int(c) for c in class_ids))
    rng.shuffle(order)
    kept, length = [], 0
    for c in order:
        length += token_lengths[c]
        if length > budget:
            break
        kept.append(c)
    return kept, length


# ---------------------------------------------------------------------------------------------
# Negative sampling (Objects365 / LVIS training captions)
# ---------------------------------------------------------------------------------------------
def validate_control_prob(control_prob: Sequence[float]) -> Tuple[float, float, float, float]:
    """Check a CONTROL_PROB tuple (p_one, p_zero, p_full, p_drop_positive)."""
    if len(control_prob) != 4:
        raise ValueError(f"CONTROL_PROB must have 4 entries (p_one, p_zero, p_full, p_drop), got {control_prob}")
    p = tuple(float(x) for x in control_prob)
    if any(x < 0 for x in p) or p[0] + p[1] + p[2] > 1.0 + 1e-9:
        raise ValueError(f"CONTROL_PROB {p}: probabilities must be >= 0 and p_one + p_zero + p_full <= 1")
    if p[3] != 0:
        raise ValueError(
            f"CONTROL_PROB {p}: the 4th entry (probability of dropping positive classes) must be 0, as the "
            "reference sampler asserts; positives are never dropped. (The released FIBER pre-training yaml "
            "sets (0.05, 0.05, 0.5, 0.2), which the reference itself rejects; GLIP uses (0, 0, 0.5, 0).)"
        )
    return p  # type: ignore[return-value]


def sample_negative_count(control_prob: Sequence[float], full_negative: int, rng: random.Random) -> int:
    """How many negative classes to draw: 1 with p_one, 0 with p_zero, ``full_negative`` with
    p_full, else uniform in [1, max(1, full_negative)] (the reference's control options)."""
    p_one, p_zero, p_full, _ = validate_control_prob(control_prob)
    u = rng.random()
    if u < p_one:
        return 1
    if u < p_one + p_zero:
        return 0
    if u < p_one + p_zero + p_full:
        return full_negative
    return rng.randrange(max(1, full_negative)) + 1


@dataclass
class SampledPrompt:
    caption: str
    spans: List[Optional[Span]]  # per category index; None where the category is not in the caption
    positives: List[int]  # present categories kept in the caption
    dropped: List[int]  # present categories dropped because they did not fit the budget
    negatives: List[int]  # absent categories written as negatives


def sample_detection_prompt(
    names: Sequence[str],
    present: Sequence[int],
    token_lengths: Sequence[int],
    *,
    budget: int = 254,
    control_prob: Sequence[float] = (0.0, 0.0, 0.5, 0.0),
    max_negatives: int = 85,
    separator: str = ". ",
    rng: Optional[random.Random] = None,
) -> SampledPrompt:
    """The reference's training caption for detection data with a large vocabulary.

    Keeps the present classes while they fit in ``budget`` tokens, draws the number of negatives
    with :func:`sample_negative_count` (``full`` = min(``max_negatives``, #classes)), samples that
    many classes without replacement (those that are present are discarded, as in the reference),
    keeps negatives while the remaining budget lasts, and writes positives and negatives in one
    shuffled order.
    """
    rng = rng or random.Random()
    num_classes = len(names)
    if len(token_lengths) != num_classes:
        raise ValueError(f"sample_detection_prompt: {len(token_lengths)} token lengths for {num_classes} classes")
    positives, length = fit_positive_classes(present, token_lengths, budget, rng)
    dropped = [c for c in dict.fromkeys(int(c) for c in present) if c not in positives]

    full_negative = min(max_negatives, num_classes)
    num_negatives = min(sample_negative_count(control_prob, full_negative, rng), num_classes)
    present_set = set(int(c) for c in present)
    negatives = [c for c in rng.sample(range(num_classes), num_negatives) if c not in present_set]
    rng.shuffle(negatives)
    remaining, kept_negatives = budget - length, []
    for c in negatives:
        remaining -= token_lengths[c]
        if remaining <= 0:
            break
        kept_negatives.append(c)

    order = kept_negatives + positives
    rng.shuffle(order)
    caption, spans = build_caption(names, order, separator)
    return SampledPrompt(caption, spans, positives, dropped, kept_negatives)


# ---------------------------------------------------------------------------------------------
# Spans -> tokens
# ---------------------------------------------------------------------------------------------
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


def lost_spans(tokenizer, caption: str, spans_per_row: Sequence[Sequence[Span]], max_length: int) -> List[int]:
    """Rows of ``spans_per_row`` that map to no token once ``caption`` is cut to ``max_length``
    tokens (what the model would see)."""
    encoding = tokenizer([caption], truncation=True, max_length=max_length)
    pmap = positive_map_from_spans(encoding, spans_per_row, max_length)
    return [j for j in range(len(spans_per_row)) if spans_per_row[j] and not bool(pmap[j].any())]
