"""Shared test utilities: a tiny RoBERTa-style tokenizer and model made on the fly (no downloads)."""

from __future__ import annotations

import itertools
import json
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
    """Train a byte-level BPE (RoBERTa-style) on :func:`tiny_corpus`; save it loadable by AutoTokenizer.

    Special tokens as in roberta-base: ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, plus
    ``<mask>``=4; encodings are ``<s> X </s>``. Returns the folder.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer

    out = Path(tmp_dir)
    out.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        tiny_corpus(),
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    bpe.save_model(str(out))  # vocab.json + merges.txt, the files roberta-base ships
    (out / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "RobertaTokenizer", "model_max_length": 256})
    )
    # Round trip through transformers so the folder also gets tokenizer.json and the special-token map.
    AutoTokenizer.from_pretrained(str(out)).save_pretrained(str(out))
    return out


def make_tiny_roberta(
    tmp_dir: str | Path,
    vocab_size: int,
    hidden: int = 64,
    layers: int = 4,
    heads: int = 4,
    intermediate: int = 128,
    max_position_embeddings: int = 260,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised RobertaModel (config + safetensors, no pooler); returns the folder.

    ``max_position_embeddings`` 260 fits 256 tokens: RoBERTa positions start at pad_token_id + 1 = 2.
    """
    import torch
    from transformers import RobertaConfig, RobertaModel

    config = RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_position_embeddings,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = RobertaModel(config, add_pooling_layer=False)
    out = Path(tmp_dir)
    model.save_pretrained(str(out), safe_serialization=True)
    return out


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
