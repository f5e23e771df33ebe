"""A small, deterministic synthetic grounding + detection dataset.

Images show 2-6 coloured shapes (the detection classes, :data:`SHAPES`) on a smooth, noisy background
with a few faint lines. Every image comes with COCO detection annotations and with MDETR-style
grounding captions that refer to 1-3 of its objects by shape plus, where needed or by chance, size
("small"/"large"), colour (:data:`COLORS`) and position ("on the left", "at the top", "at the bottom
right", ...), e.g. ``"there is the large red circle on the left and a square."``. A phrase's span
(``tokens_positive``) is the whole noun phrase including its position, and every phrase picks out
exactly the one object it is attached to (see :func:`describes`).

Layout written by :func:`generate_synthetic_dataset` under ``root``::

    images/{train,val}/000000.png ...
    annotations/instances_{train,val}.json   COCO detection; annotations also carry "color" and "size"
    annotations/grounding_{train,val}.json   MDETR style, one image entry per (image, caption)
    meta.json, README.txt                    generator version and parameters (used to skip re-runs)

Determinism: each image draws from its own PCG64 stream keyed by (seed, split, index), and a separate
stream for its captions, so any image can be regenerated alone (:func:`render_sample`). Only raw PCG64
words are used (no numpy ``Generator`` sampling methods, whose streams NEP 19 allows to change between
numpy releases) and only exactly-rounded float arithmetic (no sin/exp), so pixels, boxes and captions
are the same on every machine. PNG bytes additionally depend on the zlib inside Pillow, so files are
byte-identical for the same Pillow build.

Defaults: 600 train / 100 val images of 256x256, 2-6 objects and 2 captions each (~2,400 train
boxes, ~1,200 train captions, ~80 MB). Rendering and PNG encoding take ~20 ms of CPU per image (about
14 s on one slow core), spread over ``num_workers`` threads.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "SHAPES",
    "COLORS",
    "SIZES",
    "POSITION_STRICT",
    "POSITION_LAX",
    "GENERATOR_VERSION",
    "SyntheticObject",
    "Phrase",
    "SyntheticCaption",
    "SyntheticSample",
    "position_words",
    "describes",
    "render_sample",
    "generate_synthetic_dataset",
]

logger = logging.getLogger(__name__)

# Bump whenever a change alters any output byte, so existing datasets are regenerated.
GENERATOR_VERSION = 1

SHAPES = ("circle", "square", "triangle")
# Base colours; each object jitters its colour by up to +-_COLOR_JITTER per channel.
COLORS = {
    "red": (215, 45, 40),
    "green": (40, 170, 60),
    "blue": (45, 80, 215),
    "yellow": (235, 210, 40),
}
# Object extent (the longer side of its box) as a fraction of the shorter image side. The gap between
# the two ranges keeps "small" and "large" unambiguous; at 256 px they are 16-36 px and 51-96 px.
SIZES = {"small": (0.0625, 0.14), "large": (0.2, 0.375)}
# An object is "on the left" when its box centre lies in the left POSITION_STRICT of the width (same
# for right/top/bottom). A phrase may use a position only if every other object that matches the rest
# of the phrase lies outside the POSITION_LAX band, i.e. clearly on the other side.
POSITION_STRICT = 0.38
POSITION_LAX = 0.5

_SPLIT_KEYS = ("train", "val")
_SUPERSAMPLE = 4  # anti-aliasing: shapes are rasterised at 4x and box-filtered down
_COLOR_JITTER = 20
_NOISE = 6  # per-pixel uniform noise amplitude, added last
_MAX_OVERLAP = 0.2  # max intersection / smaller box area between two objects
_PLACEMENT_TRIES = 30
_TEMPLATES = ("{}.", "there is {}.", "a picture of {}.", "an image with {}.", "find {}.")


class _Stream:
    """Uniform draws from raw PCG64 words, keyed by a tuple of non-negative ints."""

    def __init__(self, *key: int):
        self._bits = np.random.PCG64(np.random.SeedSequence(list(key)))

    def uniform(self, low: float, high: float) -> float:
        word = int(self._bits.random_raw())
        return low + (high - low) * ((word >> 11) * 2.0**-53)

    def integer(self, low: int, high: int) -> int:
        """Uniform integer in [low, high)."""
        return low + ((int(self._bits.random_raw()) * (high - low)) >> 64)

    def choice(self, seq: Sequence):
        return seq[self.integer(0, len(seq))]

    def sample(self, seq: Sequence, k: int) -> list:
        pool = list(seq)
        return [pool.pop(self.integer(0, len(pool))) for _ in range(k)]

    def byte_array(self, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform uint8 array: the raw words' bytes, in little-endian order on every machine."""
        count = int(np.prod(shape))
        words = self._bits.random_raw((count + 7) // 8).astype("<u8", copy=False)
        return words.view(np.uint8)[:count].reshape(shape)


@dataclass(frozen=True)
class SyntheticObject:
    shape: str
    color: str
    size: str  # "small" or "large"
    bbox: tuple[float, float, float, float]  # x, y, w, h in pixels (multiples of 1/_SUPERSAMPLE)
    area: float  # pixel area of the shape (supersampled pixel count / _SUPERSAMPLE**2)


@dataclass(frozen=True)
class Phrase:
    start: int
    end: int  # exclusive character offset
    object_index: int  # index into SyntheticSample.objects


@dataclass(frozen=True)
class SyntheticCaption:
    text: str
    phrases: tuple[Phrase, ...]


@dataclass(frozen=True)
class SyntheticSample:
    image: np.ndarray  # (H, W, 3) uint8
    objects: tuple[SyntheticObject, ...]
    captions: tuple[SyntheticCaption, ...]


@dataclass(frozen=True)
class _Description:
    shape: str
    size: Optional[str] = None
    color: Optional[str] = None
    hpos: Optional[str] = None  # "left" / "right"
    vpos: Optional[str] = None  # "top" / "bottom"

    @property
    def num_attributes(self) -> int:
        return sum(v is not None for v in (self.size, self.color, self.hpos, self.vpos))


def position_words(
    bbox: Sequence[float], image_size: tuple[int, int], band: float
) -> tuple[Optional[str], Optional[str]]:
    """(horizontal, vertical) position of a box centre: "left"/"right"/None, "top"/"bottom"/None.

    ``band`` is the fraction of the width/height from each border that counts as that side.
    """
    height, width = image_size
    x, y, w, h = bbox
    cx, cy = x + w / 2, y + h / 2
    hpos = "left" if cx < band * width else "right" if cx > (1 - band) * width else None
    vpos = "top" if cy < band * height else "bottom" if cy > (1 - band) * height else None
    return hpos, vpos


def describes(
    obj: SyntheticObject,
    image_size: tuple[int, int],
    shape: str,
    size: Optional[str] = None,
    color: Optional[str] = None,
    hpos: Optional[str] = None,
    vpos: Optional[str] = None,
    band: float = POSITION_STRICT,
) -> bool:
    """Whether a phrase with these attributes (None = not mentioned) fits ``obj``.

    A phrase is unambiguous when it fits its object with ``band=POSITION_STRICT`` and fits no other
    object of the image with ``band=POSITION_LAX``.
    """
    obj_h, obj_v = position_words(obj.bbox, image_size, band)
    return (
        obj.shape == shape
        and size in (None, obj.size)
        and color in (None, obj.color)
        and hpos in (None, obj_h)
        and vpos in (None, obj_v)
    )


# ---------------------------------------------------------------------------------------------------
# Image rendering


def _background(stream: _Stream, height: int, width: int) -> np.ndarray:
    """Smooth muted colour gradient: a random 2x2..5x5 colour grid, bilinearly upsampled. uint8.

    Interpolation runs in fixed point, so it is exact integer arithmetic everywhere.
    """
    gh, gw = stream.integer(2, 6), stream.integer(2, 6)
    grid = np.empty((gh, gw, 3), dtype=np.uint16)
    for i in range(gh):
        for j in range(gw):
            gray = stream.integer(60, 191)
            grid[i, j] = [gray + stream.integer(-25, 26) for _ in range(3)]
    # Positions and weights in 1/128ths; uint16 holds 255 * 128 without overflow.
    ys = (np.arange(height) * ((gh - 1) * 128)) // max(height - 1, 1)
    xs = (np.arange(width) * ((gw - 1) * 128)) // max(width - 1, 1)
    y0, x0 = np.minimum(ys >> 7, gh - 2), np.minimum(xs >> 7, gw - 2)
    fy = (ys - y0 * 128).astype(np.uint16)[:, None, None]
    fx = (xs - x0 * 128).astype(np.uint16)[None, :, None]
    rows = (grid[:, x0] * (128 - fx) + grid[:, x0 + 1] * fx + 64) >> 7  # (gh, W, 3): along x first
    return ((rows[y0] * (128 - fy) + rows[y0 + 1] * fy + 64) >> 7).astype(np.uint8)


def _draw_clutter(stream: _Stream, image: np.ndarray) -> np.ndarray:
    """A few faint straight lines, so that edges alone do not give objects away."""
    height, width = image.shape[:2]
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for _ in range(stream.integer(0, 4)):
        points = [(stream.integer(0, width), stream.integer(0, height)) for _ in range(2)]
        x, y = points[0]
        shift = stream.choice((-35, 35))
        color = tuple(min(max(int(c) + shift, 0), 255) for c in image[y, x])
        draw.line(points, fill=color, width=stream.integer(1, 4))
    return np.asarray(canvas)


def _unit_rotation(stream: _Stream, max_tan_half: float) -> tuple[float, float]:
    """(cos, sin) of a random angle in [-2 atan(m), 2 atan(m)], by the rational parametrisation."""
    t = stream.uniform(-max_tan_half, max_tan_half)
    return (1 - t * t) / (1 + t * t), 2 * t / (1 + t * t)


def _shape_outline(stream: _Stream, shape: str, extent: float) -> Optional[list[tuple[float, float]]]:
    """Polygon vertices around (0, 0) whose box's longer side is ``extent``; None for a circle."""
    if shape == "circle":
        return None
    if shape == "square":
        c, s = _unit_rotation(stream, 0.18)  # up to ~20 degrees
        unit = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
    elif shape == "triangle":
        c, s = _unit_rotation(stream, 1.0)  # +-90 degrees covers all orientations (120-fold symmetry)
        half_root3 = math.sqrt(3) / 2
        unit = [(0.0, -1.0), (half_root3, 0.5), (-half_root3, 0.5)]  # circumradius 1, apex up
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    rotated = [(c * x - s * y, s * x + c * y) for x, y in unit]
    span = max(
        max(p[0] for p in rotated) - min(p[0] for p in rotated),
        max(p[1] for p in rotated) - min(p[1] for p in rotated),
    )
    return [(x * extent / span, y * extent / span) for x, y in rotated]


def _bounds(outline: Optional[list[tuple[float, float]]], extent: float) -> tuple[float, float, float, float]:
    """(min_x, min_y, max_x, max_y) of a shape centred at the origin."""
    if outline is None:
        return -extent / 2, -extent / 2, extent / 2, extent / 2
    xs, ys = [p[0] for p in outline], [p[1] for p in outline]
    return min(xs), min(ys), max(xs), max(ys)


def _overlap_ok(box: tuple[float, float, float, float], placed: list[tuple[float, float, float, float]]) -> bool:
    for other in placed:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw > 0 and ih > 0:
            smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
            if iw * ih > _MAX_OVERLAP * smaller:
                return False
    return True


def _composite(
    image: np.ndarray,
    outline: Optional[list[tuple[float, float]]],
    center: tuple[float, float],
    extent: float,
    bounds: tuple[float, float, float, float],
    rgb: tuple[int, int, int],
) -> tuple[tuple[float, float, float, float], float]:
    """Draw one anti-aliased shape into ``image`` (int32, in place); return its tight box and area."""
    height, width = image.shape[:2]
    ss = _SUPERSAMPLE
    px0 = max(int(math.floor(center[0] + bounds[0])) - 1, 0)
    py0 = max(int(math.floor(center[1] + bounds[1])) - 1, 0)
    px1 = min(int(math.ceil(center[0] + bounds[2])) + 1, width)
    py1 = min(int(math.ceil(center[1] + bounds[3])) + 1, height)
    mask = Image.new("L", ((px1 - px0) * ss, (py1 - py0) * ss), 0)
    draw = ImageDraw.Draw(mask)

    def to_mask(x: float, y: float) -> tuple[int, int]:
        return int(math.floor((center[0] + x - px0) * ss + 0.5)), int(math.floor((center[1] + y - py0) * ss + 0.5))

    if outline is None:
        r = extent / 2
        (ax, ay), (bx, by) = to_mask(-r, -r), to_mask(r, r)
        draw.ellipse([ax, ay, bx - 1, by - 1], fill=255)
    else:
        draw.polygon([to_mask(x, y) for x, y in outline], fill=255)
    left, upper, right, lower = mask.getbbox()
    x0, x1 = px0 + left / ss, px0 + right / ss
    y0, y1 = py0 + upper / ss, py0 + lower / ss
    area = mask.histogram()[255] / (ss * ss)
    # Box-filter the supersampled mask down to an 8-bit coverage alpha (integer arithmetic in Pillow).
    alpha = np.asarray(mask.reduce(ss), dtype=np.int32)[..., None]
    patch = image[py0:py1, px0:px1]
    patch[...] = (patch * (255 - alpha) + np.asarray(rgb, dtype=np.int32) * alpha + 127) // 255
    return (x0, y0, x1 - x0, y1 - y0), area


def _render_image(
    stream: _Stream, image_size: tuple[int, int], objects_per_image: tuple[int, int]
) -> tuple[np.ndarray, list[SyntheticObject]]:
    height, width = image_size
    image = _draw_clutter(stream, _background(stream, height, width)).astype(np.int32)
    short_side = min(height, width)
    objects: list[SyntheticObject] = []
    placed: list[tuple[float, float, float, float]] = []
    for _ in range(stream.integer(objects_per_image[0], objects_per_image[1] + 1)):
        for _ in range(_PLACEMENT_TRIES):
            shape, color = stream.choice(SHAPES), stream.choice(tuple(COLORS))
            size = stream.choice(tuple(SIZES))
            low, high = SIZES[size]
            extent = stream.uniform(low, high) * short_side
            outline = _shape_outline(stream, shape, extent)
            bounds = _bounds(outline, extent)
            cx = stream.uniform(1 - bounds[0], width - 1 - bounds[2])
            cy = stream.uniform(1 - bounds[1], height - 1 - bounds[3])
            box = (cx + bounds[0], cy + bounds[1], cx + bounds[2], cy + bounds[3])
            if not _overlap_ok(box, placed):
                continue
            rgb = tuple(min(max(c + stream.integer(-_COLOR_JITTER, _COLOR_JITTER + 1), 0), 255) for c in COLORS[color])
            bbox, area = _composite(image, outline, (cx, cy), extent, bounds, rgb)
            placed.append(box)
            objects.append(SyntheticObject(shape, color, size, bbox, area))
            break
    image += ((stream.byte_array(image.shape).astype(np.int32) * (2 * _NOISE + 1)) >> 8) - _NOISE
    return image.clip(0, 255).astype(np.uint8), objects


# ---------------------------------------------------------------------------------------------------
# Captions


def _unique_descriptions(
    objects: Sequence[SyntheticObject], index: int, image_size: tuple[int, int]
) -> list[_Description]:
    """Every attribute combination that picks out ``objects[index]`` and nothing else."""
    obj = objects[index]
    hpos, vpos = position_words(obj.bbox, image_size, POSITION_STRICT)
    found = []
    for size, color, h, v in itertools.product((None, obj.size), (None, obj.color), (None, hpos), (None, vpos)):
        desc = _Description(obj.shape, size, color, h, v)
        if not any(
            describes(other, image_size, **vars(desc), band=POSITION_LAX)
            for j, other in enumerate(objects)
            if j != index
        ):
            found.append(desc)
    # product() repeats combinations when a position is absent ((None, None)): keep one of each.
    return list(dict.fromkeys(found))


def _phrase_text(stream: _Stream, desc: _Description) -> str:
    words = [w for w in (desc.size, desc.color, desc.shape) if w is not None]
    article = "the" if stream.integer(0, 2) else ("an" if words[0][0] in "aeiou" else "a")
    text = " ".join([article] + words)
    if desc.hpos and desc.vpos:
        text += f" at the {desc.vpos} {desc.hpos}"
    elif desc.hpos:
        text += f" on the {desc.hpos}"
    elif desc.vpos:
        text += f" at the {desc.vpos}"
    return text


def _make_caption(
    stream: _Stream, objects: Sequence[SyntheticObject], image_size: tuple[int, int]
) -> Optional[SyntheticCaption]:
    candidates = {i: _unique_descriptions(objects, i, image_size) for i in range(len(objects))}
    candidates = {i: d for i, d in candidates.items() if d}
    if not candidates:
        return None
    referents = stream.sample(sorted(candidates), stream.integer(1, min(3, len(candidates)) + 1))
    phrases_text = []
    for i in referents:
        options = candidates[i]
        if stream.integer(0, 2):  # half the time the shortest description, else any valid one
            fewest = min(d.num_attributes for d in options)
            options = [d for d in options if d.num_attributes == fewest]
        phrases_text.append(_phrase_text(stream, stream.choice(options)))
    prefix, suffix = stream.choice(_TEMPLATES).split("{}")
    text, phrases = prefix, []
    for k, (i, phrase) in enumerate(zip(referents, phrases_text)):
        if k:
            text += " and " if k == len(referents) - 1 else ", "
        phrases.append(Phrase(len(text), len(text) + len(phrase), i))
        text += phrase
    return SyntheticCaption(text + suffix, tuple(phrases))


def _split_key(split: str) -> int:
    return zlib.crc32(split.encode("utf-8"))


def render_sample(
    split: str,
    index: int,
    image_size: tuple[int, int] = (256, 256),
    seed: int = 0,
    captions_per_image: int = 2,
    objects_per_image: tuple[int, int] = (2, 6),
) -> SyntheticSample:
    """Image ``index`` of ``split``, its objects and up to ``captions_per_image`` distinct captions.

    The result depends only on the arguments, never on other images. ``image_size`` is (height, width).
    Fewer captions come back when the image has fewer distinct unambiguous ones (rarely, none).
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    if not 1 <= objects_per_image[0] <= objects_per_image[1]:
        raise ValueError(f"objects_per_image must be (min, max) with 1 <= min <= max, got {objects_per_image}")
    image_size = (int(image_size[0]), int(image_size[1]))
    if min(image_size) < 32:
        raise ValueError(f"image_size {image_size} is too small for the shapes; use at least 32 px per side")
    image, objects = _render_image(_Stream(seed, _split_key(split), index, 0), image_size, objects_per_image)
    stream = _Stream(seed, _split_key(split), index, 1)
    captions: dict[str, SyntheticCaption] = {}
    for _ in range(3 * captions_per_image):
        if len(captions) == captions_per_image:
            break
        caption = _make_caption(stream, objects, image_size)
        if caption is None:
            break
        captions.setdefault(caption.text, caption)
    return SyntheticSample(image, tuple(objects), tuple(captions.values()))


# ---------------------------------------------------------------------------------------------------
# Writing the dataset


def _params(num_train, num_val, image_size, seed, captions_per_image, objects_per_image) -> dict:
    return {
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": [int(image_size[0]), int(image_size[1])],
        "seed": int(seed),
        "captions_per_image": int(captions_per_image),
        "objects_per_image": [int(objects_per_image[0]), int(objects_per_image[1])],
    }


def _paths(root: Path) -> dict[str, str]:
    paths = {"root": root, "meta": root / "meta.json", "readme": root / "README.txt"}
    for split in _SPLIT_KEYS:
        paths[f"images_{split}"] = root / "images" / split
        paths[f"instances_{split}"] = root / "annotations" / f"instances_{split}.json"
        paths[f"grounding_{split}"] = root / "annotations" / f"grounding_{split}.json"
    return {k: str(v) for k, v in paths.items()}


def _image_name(index: int) -> str:
    return f"{index:06d}.png"


def _is_up_to_date(paths: dict[str, str], params: dict) -> bool:
    try:
        meta = json.loads(Path(paths["meta"]).read_text())
    except (OSError, ValueError):
        return False
    if meta.get("version") != GENERATOR_VERSION or meta.get("params") != params:
        return False
    files = [Path(paths[f"{kind}_{split}"]) for kind in ("instances", "grounding") for split in _SPLIT_KEYS]
    files += [
        Path(paths[f"images_{split}"]) / _image_name(i)
        for split in _SPLIT_KEYS
        for i in range(params[f"num_{split}"])
    ]
    return all(f.is_file() for f in files)


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    tmp.replace(path)


def _write_split(split: str, count: int, paths: dict[str, str], params: dict, num_workers: int) -> None:
    image_dir = Path(paths[f"images_{split}"])
    image_dir.mkdir(parents=True, exist_ok=True)
    # Drop images left over from an earlier, larger run (only files with our own naming pattern).
    for stale in image_dir.glob("*.png"):
        if re.fullmatch(r"\d{6}\.png", stale.name) and int(stale.stem) >= count:
            stale.unlink()
    height, width = params["image_size"]

    def render_and_save(index: int) -> tuple[tuple[SyntheticObject, ...], tuple[SyntheticCaption, ...]]:
        sample = render_sample(
            split,
            index,
            (height, width),
            params["seed"],
            params["captions_per_image"],
            tuple(params["objects_per_image"]),
        )
        # Huffman-only deflate: the noise defeats LZ matching, and this is the fastest setting.
        Image.fromarray(sample.image).save(
            image_dir / _image_name(index), format="PNG", compress_level=6, compress_type=zlib.Z_HUFFMAN_ONLY
        )
        return sample.objects, sample.captions

    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)]
    coco = {"images": [], "annotations": [], "categories": categories}
    grounding = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
    }
    # Images are independent, so rendering them in threads (numpy and Pillow release the GIL) cannot
    # change the output; map() keeps index order for the annotations.
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        for index, (objects, captions) in enumerate(pool.map(render_and_save, range(count))):
            _add_annotations(coco, grounding, index, objects, captions, height, width)
    _write_json(Path(paths[f"instances_{split}"]), coco)
    _write_json(Path(paths[f"grounding_{split}"]), grounding)


def _add_annotations(
    coco: dict,
    grounding: dict,
    index: int,
    objects: Sequence[SyntheticObject],
    captions: Sequence[SyntheticCaption],
    height: int,
    width: int,
) -> None:
    name = _image_name(index)
    image_id = index + 1
    coco["images"].append({"id": image_id, "file_name": name, "height": height, "width": width})
    for obj in objects:
        coco["annotations"].append(
            {
                "id": len(coco["annotations"]) + 1,
                "image_id": image_id,
                "category_id": SHAPES.index(obj.shape) + 1,
                "bbox": list(obj.bbox),
                "area": obj.area,
                "iscrowd": 0,
                "color": obj.color,
                "size": obj.size,
            }
        )
    for sentence_id, caption in enumerate(captions):
        entry_id = len(grounding["images"]) + 1
        grounding["images"].append(
            {
                "id": entry_id,
                "file_name": name,
                "height": height,
                "width": width,
                "original_img_id": image_id,
                "sentence_id": sentence_id,
                "caption": caption.text,
                "dataset_name": "synthetic",
                "tokens_negative": [],
                "tokens_positive_eval": [[[p.start, p.end]] for p in caption.phrases],
            }
        )
        for phrase in caption.phrases:
            obj = objects[phrase.object_index]
            grounding["annotations"].append(
                {
                    "id": len(grounding["annotations"]) + 1,
                    "image_id": entry_id,
                    "bbox": list(obj.bbox),
                    "area": obj.area,
                    "iscrowd": 0,
                    "category_id": 1,
                    "tokens_positive": [[phrase.start, phrase.end]],
                }
            )


_README = """\
Synthetic grounding + detection dataset written by fiber_det.data.synthetic (generator version {version}).

images/{{train,val}}/NNNNNN.png        {height}x{width} RGB, {num_train} train / {num_val} val images
annotations/instances_{{split}}.json   COCO detection, categories: {categories}
                                     (annotations also carry "color" and "size")
annotations/grounding_{{split}}.json   MDETR style: one image entry per (image, caption), up to {captions} captions
                                     per image; "tokens_positive" spans cover whole referring phrases
meta.json                            generator version and parameters

Parameters: seed={seed}, objects per image {min_objects}-{max_objects}.
Regenerate with fiber_det.data.synthetic.generate_synthetic_dataset(root, ...); output is deterministic.
"""


def generate_synthetic_dataset(
    root,
    num_train: int = 600,
    num_val: int = 100,
    image_size: tuple[int, int] = (256, 256),
    seed: int = 0,
    captions_per_image: int = 2,
    objects_per_image: tuple[int, int] = (2, 6),
    overwrite: bool = False,
    num_workers: Optional[int] = None,
) -> dict[str, str]:
    """Write the dataset under ``root`` (see the module docstring) and return its paths.

    ``image_size`` is (height, width). When ``root`` already holds a complete dataset made by this
    generator version with the same parameters, nothing is written unless ``overwrite``.
    ``num_workers`` threads render images (default: the CPU count, at most 8); it does not change
    the output.

    Returns a dict of paths: ``root``, ``meta``, ``readme``, and for each split in ("train", "val")
    ``images_{split}`` (the folder that ``file_name`` is relative to), ``instances_{split}`` (COCO)
    and ``grounding_{split}`` (MDETR style).
    """
    if num_train < 0 or num_val < 0 or captions_per_image < 0:
        raise ValueError(
            f"num_train, num_val and captions_per_image must be non-negative, got "
            f"{num_train}, {num_val}, {captions_per_image}"
        )
    root = Path(root)
    paths = _paths(root)
    params = _params(num_train, num_val, image_size, seed, captions_per_image, objects_per_image)
    if not overwrite and _is_up_to_date(paths, params):
        logger.info("Synthetic dataset in %s is up to date; skipping generation.", root)
        return paths
    logger.info("Generating synthetic dataset in %s with %s ...", root, params)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    # Remove the marker first so that an interrupted run is never taken for a complete dataset.
    Path(paths["meta"]).unlink(missing_ok=True)
    if num_workers is None:
        num_workers = min(os.cpu_count() or 1, 8)
    for split in _SPLIT_KEYS:
        _write_split(split, params[f"num_{split}"], paths, params, max(int(num_workers), 1))
    height, width = params["image_size"]
    Path(paths["readme"]).write_text(
        _README.format(
            version=GENERATOR_VERSION,
            height=height,
            width=width,
            num_train=num_train,
            num_val=num_val,
            categories=", ".join(f"{i + 1}={name}" for i, name in enumerate(SHAPES)),
            captions=captions_per_image,
            seed=seed,
            min_objects=params["objects_per_image"][0],
            max_objects=params["objects_per_image"][1],
        )
    )
    meta = {
        "generator": "fiber_det.data.synthetic",
        "version": GENERATOR_VERSION,
        "params": params,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(SHAPES)],
        "colors": {name: list(rgb) for name, rgb in COLORS.items()},
        "sizes": {name: list(r) for name, r in SIZES.items()},
    }
    _write_json(Path(paths["meta"]), meta)
    return paths
