"""Shared test utilities: a tiny RoBERTa-style tokenizer and model made on the fly (no downloads)."""

from __future__ import annotations

import itertools
from pathlib import Path

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
COLOURS = ("red", "green", "blue", "yellow", "black", "white", "orange", "purple", "brown", "grey")
SHAPES = ("square", "circle", "triangle", "rectangle", "star", "ellipse", "box", "disk")
POSITIONS = ("left", "right", "top", "bottom", "center", "middle", "corner", "front", "back")
COMMON_WORDS = (
    "a an the of on in at with and or to from by near next behind above below under over "
    "is are was were there this that these those one two three four five many some small large "
    "big little tall short old young man woman child people group standing sitting holding "
    "riding walking playing looking wearing eating table street road field water sky grass "
    "building room kitchen picture image photo shows side his her their its wooden metal plastic "
    "glass round flat shiny dark bright striped spotted empty full open closed first second third "
    "last other each every both several few dozen pair stack pile row bunch slice piece plate "
    "tray shelf window door wall floor ceiling lamp light tree flower rock sand snow beach park "
    "city house car road sign pole fence bridge river lake mountain hill cloud sun moon night day "
    "morning evening while during after before because running jumping flying swimming sleeping "
    "cooking reading writing talking smiling laughing throwing catching cutting pouring"
).split()


def tiny_corpus() -> list[str]:
    """A few thousand short English lines: colours, shapes, positions, COCO names, common words."""
    lines = [
        f"a {c} {s} on the {p}" for c, s, p in itertools.product(COLOURS, SHAPES, POSITIONS)
    ]
    lines += [f"the {c} {name} is next to a {s}" for c, name, s in zip(
        itertools.cycle(COLOURS), COCO_CLASSES, itertools.cycle(SHAPES))]
    lines += [". ".join(COCO_CLASSES[i : i + 8]) + "." for i in range(0, len(COCO_CLASSES), 8)]
    lines += [" ".join(COMMON_WORDS[i : i + 12]) for i in range(0, len(COMMON_WORDS), 12)]
    lines += [f"{w} {name}" for w, name in zip(itertools.cycle(COMMON_WORDS), COCO_CLASSES * 3)]
    return lines


def make_tiny_tokenizer(tmp_dir: str | Path, vocab_size: int = 1000) -> Path:
    """A byte-level BPE (RoBERTa-style) trained on :func:`tiny_corpus`, loadable by AutoTokenizer."""
    from fiber_det.text.tiny import train_bpe_tokenizer

    return train_bpe_tokenizer(tiny_corpus(), tmp_dir, vocab_size=vocab_size)


def make_tiny_roberta(tmp_dir: str | Path, vocab_size: int, hidden: int = 64, layers: int = 4, heads: int = 4,
                      intermediate: int = 128, max_position_embeddings: int = 260, seed: int = 0) -> Path:
    """A randomly initialised RobertaModel folder (config + safetensors, no pooler)."""
    from fiber_det.text.tiny import init_random_roberta

    return init_random_roberta(tmp_dir, vocab_size, hidden=hidden, layers=layers, heads=heads,
                               intermediate=intermediate, max_position_embeddings=max_position_embeddings, seed=seed)


def tiny_fiber_cfg(text_dir, **overrides):
    """A very small FIBER config (Swin 32-wide, 2 fusion pairs, 1 DyConv block) on a tiny text encoder."""
    from detectron2.config import get_cfg

    from fiber_det.config import add_fiber_config

    cfg = get_cfg()
    add_fiber_config(cfg)
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu",
        "MODEL.FIBER.SWIN.EMBED_DIM", 32, "MODEL.FIBER.SWIN.DEPTHS", [2, 2, 2, 2],
        "MODEL.FIBER.SWIN.NUM_HEADS", [1, 2, 4, 8], "MODEL.FIBER.SWIN.WINDOW_SIZE", 7,
        "MODEL.FIBER.SWIN.DROP_PATH_RATE", 0.0, "MODEL.FIBER.SWIN.FROZEN_STAGES", -1,
        "MODEL.FIBER.TEXT.MODEL_NAME", str(text_dir), "MODEL.FIBER.TEXT.MAX_LENGTH", 32,
        "MODEL.FIBER.FUSION.NUM_LAYERS", 2, "MODEL.FIBER.FPN.OUT_CHANNELS", 32,
        "MODEL.FIBER.HEAD.NUM_CONVS", 1, "MODEL.FIBER.HEAD.GN_GROUPS", 8,
        "MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64], [128], [256], [512]],
    ])
    for k, v in overrides.items():
        cfg.merge_from_list([k, v])
    return cfg


def text_encoder_dir(tokenizer_dir, roberta_dir, out_dir):
    """One folder holding both the tokenizer and the model, as MODEL.FIBER.TEXT.MODEL_NAME expects."""
    import shutil
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for src in (Path(tokenizer_dir), Path(roberta_dir)):
        for f in src.iterdir():
            shutil.copy(f, out / f.name)
    return out


REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"


def reference_keys(variant: str = "v2", prefix: str = "") -> dict:
    """{key without ``prefix``: shape} of the released checkpoint's key list (../shared/reference);
    skips the calling test when the list is absent."""
    import re

    import pytest

    path = REFERENCE_DIR / f"official_fiber_fine_grained_state_dict_{variant}.txt"
    if not path.is_file():
        pytest.skip(f"reference key list {path} not found")
    keys = {}
    for line in path.read_text().splitlines():
        m = re.match(r"(\S+) \(([\d, ]*)\)", line)
        if m and m.group(1).startswith(prefix):
            keys[m.group(1)[len(prefix):]] = tuple(int(x) for x in m.group(2).split(",") if x.strip())
    return keys
