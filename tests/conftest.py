import os

# Tests never download: Hugging Face libraries read these at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

import fiber_det  # noqa: E402,F401  (its compat shims must load before any test imports detectron2)
import torch  # noqa: E402

from helpers import make_tiny_roberta, make_tiny_tokenizer  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    """Folder with a ~1000-token byte-level BPE tokenizer, loadable by AutoTokenizer."""
    return make_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory, tiny_tokenizer_dir):
    """Folder with a random 4-layer, 64-wide RobertaModel matching the tiny tokenizer's vocabulary."""
    from transformers import AutoTokenizer

    vocab_size = len(AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir)))
    return make_tiny_roberta(tmp_path_factory.mktemp("tiny_roberta"), vocab_size)


@pytest.fixture(scope="session")
def tiny_text_dir(tmp_path_factory, tiny_tokenizer_dir, tiny_roberta_dir):
    """Tokenizer + tiny RoBERTa in one folder (what MODEL.FIBER.TEXT.MODEL_NAME points at)."""
    from helpers import text_encoder_dir

    return text_encoder_dir(tiny_tokenizer_dir, tiny_roberta_dir, tmp_path_factory.mktemp("tiny_text"))
