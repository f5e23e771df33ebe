"""Small text models made on the spot, for the CPU quickstart and the tests: a byte-level BPE
tokenizer trained on a corpus (RoBERTa's special tokens and layout) and a randomly initialised
RoBERTa-architecture encoder, both saved as folders that ``from_pretrained`` loads."""
import json
from pathlib import Path
from typing import Iterable, Union

PathLike = Union[str, Path]


def train_bpe_tokenizer(corpus: Iterable[str], out_dir: PathLike, vocab_size: int = 1000,
                        model_max_length: int = 256) -> Path:
    """Train a byte-level BPE on ``corpus`` and save it as a RoBERTa tokenizer folder.

    Special tokens as in roberta-base: ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, ``<mask>``=4;
    encodings are ``<s> X </s>``.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(corpus), vocab_size=vocab_size, min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False,
    )
    bpe.save_model(str(out))  # vocab.json + merges.txt, the files roberta-base ships
    (out / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "RobertaTokenizer", "model_max_length": model_max_length})
    )
    # Round trip through transformers so the folder also gets tokenizer.json and the special tokens.
    AutoTokenizer.from_pretrained(str(out)).save_pretrained(str(out))
    return out


def init_random_roberta(out_dir: PathLike, vocab_size: int, hidden: int = 64, layers: int = 4, heads: int = 4,
                        intermediate: int = 128, max_position_embeddings: int = 260, seed: int = 0) -> Path:
    """Save a randomly initialised RobertaModel (config + safetensors, no pooler).

    ``max_position_embeddings`` 260 fits 256 tokens: RoBERTa positions start at pad_token_id + 1 = 2.
    """
    import torch
    from transformers import RobertaConfig, RobertaModel

    config = RobertaConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate, max_position_embeddings=max_position_embeddings, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = RobertaModel(config, add_pooling_layer=False)
    out = Path(out_dir)
    model.save_pretrained(str(out), safe_serialization=True)
    return out
