"""Hugging Face BERT-family text encoder with FIBER's text-to-image cross-attention.

ARCHITECTURE.md section 3. The top ``num_fusion_layers`` layers of the encoder get a cross-attention
from the text tokens to the image tokens of the paired Swin block:

    a  = dropout(dense(SelfAttention(h)))            # self-output *without* residual and LayerNorm
    c  = CrossAttention(query=a, key/value=image)    # output dense + dropout, no LayerNorm
    h' = attention.output.LayerNorm(h + a + alpha_t2i * c)
    out = FFN(h')                                    # intermediate + output (residual + LayerNorm)

``alpha_t2i`` starts at 0, so a fresh fused encoder computes exactly the pretrained text model.

The Hugging Face model is kept (``self.model``) and only its ``encoder.layer`` entries are replaced
by :class:`TextLayer`, which re-uses the original ``attention``/``intermediate``/``output``
submodules. Parameter names therefore stay those of the plain model, plus
``encoder.layer.{i}.alpha_t2i`` and ``encoder.layer.{i}.crossattention_t2i.*`` on fused layers —
the names of the official FIBER checkpoints. The layer forward is computed here rather than by
transformers' own layer forward, whose signature and mask format change between releases.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "TextToImageCrossAttention",
    "TextLayer",
    "FusedTextEncoder",
    "LoadResult",
    "load_text_state_dict",
    "build_tokenizer",
]

# Parameter names that a fused layer adds to a plain checkpoint.
FUSION_PARAM_MARKERS = (".alpha_t2i", ".crossattention_t2i.")


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    # (B, N, H * D) -> (B, H, N, D)
    b, n, _ = x.shape
    return x.view(b, n, num_heads, -1).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    # (B, H, N, D) -> (B, N, H * D)
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, additive_mask: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v, with dropout on the attention probabilities."""
    if additive_mask is not None and additive_mask.dtype != q.dtype:
        # e.g. an fp32 mask under fp16 autocast: clamp so dtype-min stays finite.
        additive_mask = additive_mask.clamp(min=torch.finfo(q.dtype).min).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask, dropout_p=dropout_p)


def additive_mask(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, N) mask, nonzero = attend -> (B, 1, 1, N) additive mask: 0 where valid, dtype-min elsewhere."""
    invalid = valid[:, None, None, :] == 0
    return torch.zeros(invalid.shape, dtype=dtype, device=valid.device).masked_fill(invalid, torch.finfo(dtype).min)


class _CrossAttentionProjections(nn.Module):
    """Query from the text states, key/value from the image tokens (names as in the reference)."""

    def __init__(self, hidden_size: int, image_dim: int, attention_dropout: float):
        super().__init__()
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(image_dim, hidden_size)
        self.value = nn.Linear(image_dim, hidden_size)
        self.dropout = nn.Dropout(attention_dropout)


class _CrossAttentionOutput(nn.Module):
    """Output projection + dropout; the reference's LayerNorm here is an Identity."""

    def __init__(self, hidden_size: int, hidden_dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(hidden_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(x))


class TextToImageCrossAttention(nn.Module):
    """Multi-head attention of text tokens (queries) over image tokens (keys/values).

    Keys: ``self.{query,key,value}`` and ``output.dense``. Heads and head width are the text
    model's; the key/value projections map the image width ``image_dim`` to the text width.
    """

    def __init__(
        self,
        hidden_size: int,
        image_dim: int,
        num_heads: int,
        attention_dropout: float = 0.1,
        hidden_dropout: float = 0.1,
    ):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden size {hidden_size} is not a multiple of the {num_heads} attention heads")
        self.num_heads = num_heads
        self.image_dim = image_dim
        self.self = _CrossAttentionProjections(hidden_size, image_dim, attention_dropout)
        self.output = _CrossAttentionOutput(hidden_size, hidden_dropout)

    def forward(
        self, x: torch.Tensor, image_tokens: torch.Tensor, image_attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (B, T, D) text; image_tokens: (B, L, C); image_attn_mask: additive (B, 1, 1, L) or None."""
        proj = self.self
        q = _split_heads(proj.query(x), self.num_heads)
        k = _split_heads(proj.key(image_tokens), self.num_heads)
        v = _split_heads(proj.value(image_tokens), self.num_heads)
        dropout_p = proj.dropout.p if self.training else 0.0
        return self.output(_merge_heads(_attend(q, k, v, image_attn_mask, dropout_p)))


class TextLayer(nn.Module):
    """One BERT-family layer, optionally with the text-to-image cross-attention.

    Holds the original layer's ``attention``, ``intermediate`` and ``output`` submodules (so their
    weights and state-dict names are untouched). With ``image_dim`` set, adds ``alpha_t2i``
    (initialised to 0) and ``crossattention_t2i``.
    """

    def __init__(self, hf_layer: nn.Module, num_heads: int, image_dim: int | None = None, config: Any = None):
        super().__init__()
        self.alpha_t2i = nn.Parameter(torch.zeros(1)) if image_dim is not None else None
        self.attention = hf_layer.attention
        self.crossattention_t2i = None
        if image_dim is not None:
            hidden = self.attention.self.query.in_features
            self.crossattention_t2i = TextToImageCrossAttention(
                hidden,
                image_dim,
                num_heads,
                attention_dropout=getattr(config, "attention_probs_dropout_prob", 0.1),
                hidden_dropout=getattr(config, "hidden_dropout_prob", 0.1),
            )
            self._init_cross_attention(getattr(config, "initializer_range", 0.02))
        self.intermediate = hf_layer.intermediate
        self.output = hf_layer.output
        self.num_heads = num_heads

    @property
    def is_fused(self) -> bool:
        return self.crossattention_t2i is not None

    @torch.no_grad()
    def _init_cross_attention(self, std: float) -> None:
        # What transformers' BERT init gives every new Linear, as in the reference.
        for m in self.crossattention_t2i.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, std)
                m.bias.zero_()

    def self_attention(self, h: torch.Tensor, ext_mask: torch.Tensor | None) -> torch.Tensor:
        """SelfAttention + dense + dropout, without the residual and LayerNorm of HF's SelfOutput."""
        attn = self.attention.self
        q = _split_heads(attn.query(h), self.num_heads)
        k = _split_heads(attn.key(h), self.num_heads)
        v = _split_heads(attn.value(h), self.num_heads)
        dropout_p = attn.dropout.p if self.training else 0.0
        ctx = _merge_heads(_attend(q, k, v, ext_mask, dropout_p))
        out = self.attention.output
        return out.dropout(out.dense(ctx))

    def forward(
        self,
        h: torch.Tensor,
        ext_mask: torch.Tensor | None,
        image_tokens: torch.Tensor | None = None,
        image_attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        a = self.self_attention(h, ext_mask)
        x = h + a
        if image_tokens is not None:
            c = self.crossattention_t2i(a, image_tokens, image_attn_mask)
            x = x + self.alpha_t2i * c
        x = self.attention.output.LayerNorm(x)
        # HF's BertOutput/RobertaOutput: dense, dropout, LayerNorm(. + x).
        return self.output(self.intermediate(x), x)


# Architectures (not weights) of the encoders the paper uses, so that a paper-scale model can be
# built with random weights on a machine that has no copy of them (PRETRAINED False).
KNOWN_ARCHITECTURES = {
    "roberta-base": dict(
        model_type="roberta", vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        max_position_embeddings=514, type_vocab_size=1, initializer_range=0.02, layer_norm_eps=1e-5,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
    ),
    "bert-base-uncased": dict(
        model_type="bert", vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12,
        pad_token_id=0,
    ),
}


def resolve_text_config(spec: Any, overrides: Mapping[str, Any] | None = None):
    """HF config of a text encoder spec (hub name, folder, dict or config), with overrides.

    A hub name that is not available locally falls back to KNOWN_ARCHITECTURES (architecture only).
    """
    overrides = dict(overrides or {})
    if isinstance(spec, str) and spec in KNOWN_ARCHITECTURES and not os.path.isdir(spec):
        # The local cache only: the bundled architecture is the hub's, so asking the hub (which, when
        # unreachable, transformers retries for up to a minute) could only cost time.
        try:
            return _resolve_config(spec, overrides, local_files_only=True)
        except OSError:
            return _resolve_config(KNOWN_ARCHITECTURES[spec], overrides)
    return _resolve_config(spec, overrides)


def _resolve_config(spec: Any, overrides: Mapping[str, Any], local_files_only: bool = False):
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(spec, PretrainedConfig):
        config = copy.deepcopy(spec)
        for key, value in overrides.items():
            setattr(config, key, value)
        return config
    if isinstance(spec, Mapping):
        values = dict(spec)
        model_type = values.pop("model_type", None)
        if model_type is None:
            raise ValueError(
                "text encoder config dict needs a 'model_type' (e.g. 'roberta' or 'bert'); "
                f"got keys {sorted(spec)}"
            )
        return AutoConfig.for_model(model_type, **{**values, **overrides})
    if isinstance(spec, (str, os.PathLike)):
        return AutoConfig.from_pretrained(os.fspath(spec), local_files_only=local_files_only, **overrides)
    raise TypeError(
        "model_name_or_path must be a hub name, a local folder, a config dict or a PretrainedConfig; "
        f"got {type(spec).__name__}"
    )


def _call_without_pooler(factory, *args, **kwargs):
    # BERT/RoBERTa take add_pooling_layer; encoders without a pooler (ELECTRA, ...) reject it.
    try:
        return factory(*args, add_pooling_layer=False, **kwargs)
    except TypeError as e:
        if "add_pooling_layer" not in str(e):
            raise
        return factory(*args, **kwargs)


def _build_hf_model(model_name_or_path: Any, pretrained: bool, overrides: Mapping[str, Any]) -> nn.Module:
    from transformers import AutoModel

    config = resolve_text_config(model_name_or_path, overrides)
    if pretrained:
        if not isinstance(model_name_or_path, (str, os.PathLike)):
            raise ValueError(
                "pretrained=True needs a hub name or a local folder with weights, "
                f"not a {type(model_name_or_path).__name__}; use pretrained=False to build from a config"
            )
        model = _call_without_pooler(AutoModel.from_pretrained, os.fspath(model_name_or_path), config=config)
        # Master weights stay fp32 whatever the checkpoint's dtype; AMP casts per op.
        return model.float()
    return _call_without_pooler(AutoModel.from_config, config)


def _check_bert_family(model: nn.Module) -> None:
    name = type(model).__name__
    config = model.config
    if getattr(config, "is_decoder", False):
        raise ValueError(f"{name}: the text encoder must be bidirectional; config.is_decoder is True")
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"{name}: position_embedding_type={config.position_embedding_type!r} is not supported "
            "(relative position scores are not computed by the fused layers); use 'absolute'"
        )
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not hasattr(model, "embeddings") or not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{name} is not a BERT-family encoder: expected `embeddings` and `encoder.layer`")
    required = (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.self.dropout",
        "attention.output.dense",
        "attention.output.dropout",
        "attention.output.LayerNorm",
        "intermediate",
        "output",
    )
    for i, layer in enumerate(layers):
        for path in required:
            obj = layer
            for part in path.split("."):
                obj = getattr(obj, part, None)
            if obj is None:
                raise ValueError(f"{name} is not a BERT-family encoder: encoder.layer.{i} has no `{path}`")


def _drop_non_persistent_buffers(module, state_dict, prefix, *args, **kwargs) -> None:
    # Older transformers saved e.g. `embeddings.position_ids` (the official FIBER checkpoints
    # have it); current releases keep it as a non-persistent buffer, so strict loading would
    # report it as unexpected. It is a constant arange; drop it.
    for name in module._non_persistent_buffers_set:
        state_dict.pop(prefix + name, None)


class FusedTextEncoder(nn.Module):
    """BERT-family encoder whose top ``num_fusion_layers`` layers attend to image tokens.

    Args:
        model_name_or_path: hub name or local folder (weights and/or config), a config dict with a
            ``model_type``, or a ``transformers.PretrainedConfig``.
        pretrained: load the weights (``AutoModel.from_pretrained``); else random weights from the
            architecture alone (``AutoModel.from_config``), with no download of weights.
        config_overrides: config attributes to change (e.g. ``{"num_hidden_layers": 2}``).
        num_fusion_layers: how many of the top layers get the cross-attention.
        image_dims: key/value input width per fused layer, bottom to top
            (FIBER-B: ``[512] * 4 + [1024] * 2``).
        use_checkpoint: gradient checkpointing of every layer (in training, with grad enabled).
        pad_image_tokens_masked: mask zero-padded image tokens in the cross-attention. False
            reproduces the reference, which attends to all image tokens (ARCHITECTURE.md section 3).
    """

    def __init__(
        self,
        model_name_or_path: Any,
        *,
        pretrained: bool = True,
        config_overrides: Mapping[str, Any] | None = None,
        num_fusion_layers: int = 6,
        image_dims: Sequence[int] | None = None,
        use_checkpoint: bool = False,
        pad_image_tokens_masked: bool = False,
    ):
        super().__init__()
        model = _build_hf_model(model_name_or_path, pretrained, dict(config_overrides or {}))
        _check_bert_family(model)
        config = model.config
        num_layers = len(model.encoder.layer)
        if not 0 <= num_fusion_layers <= num_layers:
            raise ValueError(f"num_fusion_layers={num_fusion_layers}, but the text model has {num_layers} layers")
        image_dims = [] if image_dims is None and num_fusion_layers == 0 else image_dims
        if image_dims is None or len(image_dims) != num_fusion_layers:
            raise ValueError(
                f"image_dims must give one key/value width per fused layer ({num_fusion_layers}), bottom to "
                f"top, e.g. [512] * 4 + [1024] * 2 for Swin-B; got {image_dims}"
            )
        num_heads = config.num_attention_heads
        first_fused = num_layers - num_fusion_layers
        model.encoder.layer = nn.ModuleList(
            TextLayer(
                layer,
                num_heads,
                image_dim=image_dims[i - first_fused] if i >= first_fused else None,
                config=config,
            )
            for i, layer in enumerate(model.encoder.layer)
        )
        for m in model.modules():
            if m._non_persistent_buffers_set:
                m.register_load_state_dict_pre_hook(_drop_non_persistent_buffers)

        self.model = model
        self.num_layers = num_layers
        self.fused_layer_ids = list(range(first_fused, num_layers))
        self.image_dims = [int(d) for d in image_dims]
        self.hidden_size = config.hidden_size
        self.use_checkpoint = use_checkpoint
        self.pad_image_tokens_masked = pad_image_tokens_masked

    @property
    def config(self):
        return self.model.config

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.encoder.layer

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (B, T, D) and the additive self-attention mask (B, 1, 1, T) in their dtype."""
        h = self.model.embeddings(input_ids=input_ids)
        return h, additive_mask(attention_mask, h.dtype)

    def run_layer(
        self,
        i: int,
        h: torch.Tensor,
        ext_mask: torch.Tensor,
        image_tokens: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Layer ``i`` on ``h`` (B, T, D); fused layers also read ``image_tokens`` (B, L, C_img).

        ``image_mask`` (B, L), True = valid, is used only with ``pad_image_tokens_masked``.
        Without image tokens a fused layer is exactly the plain layer.
        """
        layer = self.layers[i]
        image_attn_mask = None
        if image_tokens is not None:
            if not layer.is_fused:
                raise ValueError(
                    f"text layer {i} has no cross-attention (fused layers: {self.fused_layer_ids}); "
                    "pass image_tokens=None"
                )
            expected = layer.crossattention_t2i.image_dim
            if image_tokens.shape[-1] != expected or image_tokens.shape[0] != h.shape[0]:
                raise ValueError(
                    f"text layer {i} expects image tokens of shape (B={h.shape[0]}, L, {expected}); "
                    f"got {tuple(image_tokens.shape)}"
                )
            if self.pad_image_tokens_masked and image_mask is not None:
                image_attn_mask = additive_mask(image_mask, h.dtype)
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(layer, h, ext_mask, image_tokens, image_attn_mask, use_reentrant=False)
        return layer(h, ext_mask, image_tokens, image_attn_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """All layers, no image: {"hidden": (B, T, D), "masks": attention_mask, "embedded": hidden * mask}."""
        h, ext_mask = self.embed(input_ids, attention_mask)
        for i in range(self.num_layers):
            h = self.run_layer(i, h, ext_mask)
        return {
            "hidden": h,
            "masks": attention_mask,
            "embedded": h * attention_mask[..., None].to(h.dtype),
        }


class LoadResult(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    return dict(state)


def _read_checkpoint(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(source)
    if path.is_file():
        return _read_weight_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"text checkpoint {path} does not exist")
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return _read_weight_file(path / name)
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_read_weight_file(path / shard))
            return state
    raise FileNotFoundError(
        f"no weights in {path}: expected model.safetensors or pytorch_model.bin (as written by save_pretrained)"
    )


def load_text_state_dict(
    encoder: FusedTextEncoder,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    strict: bool = False,
) -> LoadResult:
    """Load plain (unfused) text-model weights into ``encoder``.

    ``source``: a folder written by ``save_pretrained``, a weight file, or a state dict. Keys may
    carry the model's prefix (``roberta.``/``bert.``, as in ``*ForMaskedLM`` checkpoints) or
    ``model.`` (this encoder's own state dict). The pooler and non-persistent buffers (e.g.
    ``embeddings.position_ids``) are ignored. Fusion parameters are expected to be missing and are
    reported in ``missing_keys`` like any other. With ``strict``, anything else missing or
    unexpected raises.
    """
    state = dict(source) if isinstance(source, Mapping) else _read_checkpoint(source)
    target = encoder.model
    target_keys = set(target.state_dict().keys())

    prefixes = {"", "model.", "roberta.", "bert.", f"{getattr(target, 'base_model_prefix', '')}."} - {"."}
    best = max(sorted(prefixes), key=lambda p: sum(k[len(p) :] in target_keys for k in state if k.startswith(p)))
    state = {(k[len(best) :] if k.startswith(best) else k): v for k, v in state.items()}

    ignored = {name for name, _ in target.named_buffers()} - target_keys
    has_pooler = getattr(target, "pooler", None) is not None
    state = {
        k: v for k, v in state.items() if k not in ignored and (has_pooler or not k.startswith("pooler."))
    }
    result = target.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if strict:
        bad_missing = [k for k in missing if not any(m in f".{k}" for m in FUSION_PARAM_MARKERS)]
        if bad_missing or unexpected:
            raise RuntimeError(
                f"text checkpoint {source if not isinstance(source, Mapping) else '<state dict>'} does not "
                f"match {type(target).__name__}: missing {bad_missing[:10]}"
                f"{' ...' if len(bad_missing) > 10 else ''}, unexpected {unexpected[:10]}"
                f"{' ...' if len(unexpected) > 10 else ''}"
            )
    return LoadResult(missing, unexpected)


def build_tokenizer(name_or_path: str | os.PathLike, **kwargs):
    """``AutoTokenizer.from_pretrained``; the tokenizer must be a fast one (character offsets)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(os.fspath(name_or_path), **kwargs)
    except OSError as e:
        raise OSError(
            f"cannot load the tokenizer {os.fspath(name_or_path)!r}: it is no local folder and could not be read "
            f"from the Hugging Face cache or hub ({e.__class__.__name__}); point MODEL.FIBER.TEXT.TOKENIZER "
            "(or MODEL.FIBER.TEXT.MODEL_NAME) at a folder holding it"
        ) from e
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"tokenizer {name_or_path} loaded as the slow {type(tokenizer).__name__}; fiber-det needs a fast "
            "tokenizer (backed by the `tokenizers` library) for character offsets — install `tokenizers` "
            "and make sure the folder has tokenizer.json or vocab files a fast tokenizer can read"
        )
    return tokenizer
