"""Tests for the Swin backbone with image-to-text cross-attention (fiber_det/modeling/backbone/swin.py)."""
import re

import pytest
import torch
import torch.nn.functional as F

from fiber_det.modeling.backbone.swin import (
    SwinTransformer,
    SwinTransformerBlock,
    load_plain_swin_state_dict,
    shifted_window_mask,
    swin_b_fusion_blocks,
)

from helpers import reference_keys

timm_swin = pytest.importorskip("timm.models.swin_transformer")

REFERENCE_PREFIX = "fusion_backbone.backbone.body."

TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4), window_size=7)
TEXT_DIM = 16
TINY_FUSION = [(2, 1), (3, 0), (3, 1)]


def tiny_swin(**kwargs) -> SwinTransformer:
    args = dict(TINY, drop_path_rate=0.0, frozen_stages=-1, text_dim=TEXT_DIM, fusion_blocks=TINY_FUSION)
    args.update(kwargs)
    return SwinTransformer(**args)


def tiny_timm_swin() -> torch.nn.Module:
    # always_partition keeps the reference's shifting even where a map is no larger than the window.
    return timm_swin.SwinTransformer(
        img_size=224, num_classes=0, drop_path_rate=0.0, always_partition=True, strict_img_size=False, **TINY
    )


def set_alphas(model: SwinTransformer, value: float) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha_i2t"):
                p.fill_(value)


def random_text(batch: int, length: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(batch, length, TEXT_DIM, generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length - 2 :] = 0
    return text, mask


def stage_outputs(model: SwinTransformer, images, text=None, text_mask=None):
    """Raw (un-normed) output of every stage via the step-wise API, NCHW."""
    x, hw = model.embed(images)
    outs = []
    for i, stage in enumerate(model.layers):
        for j in range(len(stage.blocks)):
            x = model.run_block(i, j, x, hw, text, text_mask)
        B, _, C = x.shape
        outs.append(x.view(B, *hw, C).permute(0, 3, 1, 2))
        _, x, hw = model.end_stage(i, x, hw)
    return outs


# ---- equivalence with timm --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(224, 224), (224, 448)])
def test_unfused_matches_timm(size):
    torch.manual_seed(0)
    ref = tiny_timm_swin().eval()
    model = tiny_swin(out_indices=(0, 1, 2, 3)).eval()
    missing, unexpected = load_plain_swin_state_dict(model, ref.state_dict())
    assert unexpected == []
    fusion_param = re.compile(r"layers\.\d\.blocks\.\d\.attn\.(alpha_i2t|qkv_i2t|qkv_text_i2t|proj_i2t)")
    out_norms = {f"norm{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    assert {k for k in missing if not fusion_param.match(k)} == out_norms
    assert len(missing) == 6 + 3 * 7

    images = torch.randn(1, 3, *size)
    text, text_mask = random_text(1)
    with torch.no_grad():
        expected = ref.forward_intermediates(images, indices=[0, 1, 2, 3], intermediates_only=True)
        for args in ((), (text, text_mask)):  # alpha_i2t = 0: text must not matter
            got = stage_outputs(model, images, *args)
            for i in range(4):
                assert got[i].shape == expected[i].shape
                assert (got[i] - expected[i]).abs().max() <= 1e-5, f"stage {i}"
        # forward() returns the normed outputs of out_indices
        feats = model(images, text, text_mask)
        assert list(feats) == ["res2", "res3", "res4", "res5"]
        assert torch.equal(feats["res2"], got[0])  # stage 0's norm is Identity, as in the reference
        for i in (1, 2, 3):
            norm = getattr(model, f"norm{i}")
            want = F.layer_norm(expected[i].permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias)
            assert (feats[f"res{i + 2}"] - want.permute(0, 3, 1, 2)).abs().max() <= 1e-5


def test_unfused_matches_timm_off_the_window_grid_without_shifts():
    """200x260: every stage's map (50x65, 25x33, 13x17, 7x9) is padded to windows and the merges see
    odd sizes. timm shifts before padding where the reference pads before shifting, so the whole
    network equals timm's only with the shifts off (the shifted blocks at such sizes are checked
    against timm's block on the padded map in test_block_pads_to_windows_before_shifting)."""
    torch.manual_seed(0)
    ref = tiny_timm_swin().eval()
    model = tiny_swin(out_indices=(0, 1, 2, 3)).eval()
    load_plain_swin_state_dict(model, ref.state_dict())
    for stage in ref.layers:
        for blk in stage.blocks:
            blk.shift_size, blk.attn_mask = (0, 0), None
    for stage in model.layers:
        for blk in stage.blocks:
            blk.shift_size = 0
    images = torch.randn(1, 3, 200, 260)
    with torch.no_grad():
        expected = ref.forward_intermediates(images, indices=[0, 1, 2, 3], intermediates_only=True)
        got = stage_outputs(model, images, *random_text(1))
    assert [tuple(e.shape[-2:]) for e in expected] == [(50, 65), (25, 33), (13, 17), (7, 9)]
    for i in range(4):
        assert got[i].shape == expected[i].shape
        assert (got[i] - expected[i]).abs().max() <= 1e-5, f"stage {i}"


@pytest.mark.parametrize("shift", [0, 3])
@pytest.mark.parametrize("hw", [(10, 13), (5, 4)])
def test_block_pads_to_windows_before_shifting(shift, hw):
    """At sizes that are no multiple of the window, the reference pads the normed map with zeros and
    shifts the padded map (timm shifts, then pads: a different network). With norm1's bias at 0,
    padding after the norm equals padding the input, so timm's block on the zero-padded map, cropped,
    is an independent oracle."""
    torch.manual_seed(0)
    dim, heads, ws = 32, 4, 7
    H, W = hw
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    block = SwinTransformerBlock(dim, heads, window_size=ws, shift_size=shift).eval()
    ref = timm_swin.SwinTransformerBlock(
        dim, (Hp, Wp), num_heads=heads, window_size=ws, shift_size=shift, always_partition=True, dynamic_mask=True
    ).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.2)
        block.norm1.bias.zero_()
    ref.load_state_dict(block.state_dict(), strict=False)

    x = torch.randn(2, H, W, dim)
    with torch.no_grad():
        got = block(x.reshape(2, H * W, dim), (H, W)).view(2, H, W, dim)
        want = ref(F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H)))[:, :H, :W]
    assert (got - want).abs().max() <= 1e-5


def test_shifted_window_mask_regions():
    mask = shifted_window_mask((14, 14), window_size=7, shift_size=3)
    assert mask.shape == (4, 49, 49)
    assert (mask[0] == 0).all()  # the top-left window holds no wrapped-around tokens
    wrapped = (torch.arange(7) >= 4).long()  # rows/columns 4..6 of the last window came from the start
    same_col = wrapped[None, :].expand(7, 7).flatten()
    assert torch.equal(mask[1] == 0, same_col[:, None] == same_col[None, :])
    ids = (wrapped[:, None] * 3 + wrapped[None, :]).flatten()
    assert torch.equal(mask[3] == 0, ids[:, None] == ids[None, :])
    assert set(mask.unique().tolist()) == {0.0, -100.0}


# ---- image-to-text cross-attention --------------------------------------------------------------------


def test_cross_attention_matches_per_token_computation():
    """The fused attention output equals self-attention output + alpha * a per-token, per-head
    cross-attention over the valid text tokens only (padding dropped instead of masked)."""
    torch.manual_seed(0)
    model = tiny_swin(fusion_variant="v3").eval()
    set_alphas(model, 0.7)
    attn = model.layers[2].blocks[1].attn  # shifted block, 13x17 map at a 200x264 input: padded windows
    captured = {}
    attn.proj.register_forward_hook(lambda m, i, o: captured.__setitem__("self", o))
    attn.register_forward_hook(lambda m, i, o: captured.__setitem__("fused", o))
    images = torch.randn(2, 3, 200, 264)
    text, text_mask = random_text(2, length=5)
    with torch.no_grad():
        model(images, text, text_mask)
        s = captured["self"]  # (B * nW, N, C)
        B, heads, C = 2, attn.num_heads, attn.dim
        hd = C // heads
        q = attn.qkv_i2t(attn.norm_i2t_i(s)).view(B, -1, heads, hd)
        kv = attn.qkv_text_i2t(text).view(B, -1, 2, heads, hd)
        expected = torch.empty(B, q.shape[1], heads, hd)
        for b in range(B):
            valid = text_mask[b].bool()
            k, v = kv[b, valid, 0], kv[b, valid, 1]  # (T_valid, heads, hd)
            w = torch.einsum("nhd,thd->hnt", q[b], k).mul(hd**-0.5).softmax(-1)
            expected[b] = torch.einsum("hnt,thd->nhd", w, v)
        cross = attn.proj_i2t(expected.reshape(s.shape))
        assert (captured["fused"] - (s + 0.7 * cross)).abs().max() <= 1e-5


def test_text_changes_output_only_with_nonzero_alpha():
    torch.manual_seed(0)
    model = tiny_swin().eval()
    images = torch.randn(2, 3, 112, 140)
    text_a, mask = random_text(2, seed=1)
    text_b, _ = random_text(2, seed=2)
    with torch.no_grad():
        plain = model(images)
        assert all(torch.equal(plain[k], v) for k, v in model(images, text_a, mask).items())
        set_alphas(model, 0.5)
        fused_a, fused_b = model(images, text_a, mask), model(images, text_b, mask)
        unfused = model(images)  # text=None on fusion blocks: the unfused network
    # res4 is stage 2, whose last block is a fusion block
    for key in ("res4", "res5"):
        assert (fused_a[key] - fused_b[key]).abs().max() > 1e-3
        assert (fused_a[key] - plain[key]).abs().max() > 1e-3
    assert torch.equal(fused_a["res3"], plain["res3"])  # before the first fusion block
    for key in plain:
        assert torch.equal(unfused[key], plain[key])


def test_padded_text_tokens_do_not_matter():
    torch.manual_seed(0)
    model = tiny_swin().eval()
    set_alphas(model, 0.5)
    images = torch.randn(2, 3, 112, 112)
    text = torch.randn(2, 4, TEXT_DIM)
    padded = torch.cat([text, 100 * torch.randn(2, 3, TEXT_DIM)], dim=1)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]] * 2)
    with torch.no_grad():
        short = model(images, text, torch.ones(2, 4))
        long = model(images, padded, mask)
    for key in short:
        assert (short[key] - long[key]).abs().max() <= 1e-5


def test_text_batch_mismatch_is_reported():
    model = tiny_swin().eval()
    x, hw = model.embed(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="2 images but 3 captions"):
        model.run_block(0, 0, x, hw, torch.randn(3, 4, TEXT_DIM))


# ---- training behaviour ---------------------------------------------------------------------------------


@pytest.mark.parametrize("frozen_stages", [-1, 0, 1, 2])
def test_frozen_stages(frozen_stages):
    model = tiny_swin(frozen_stages=frozen_stages).train()
    expect_frozen = {"patch_embed": frozen_stages >= 0}
    expect_frozen.update({f"layers.{i}.": frozen_stages > i for i in range(4)})
    for name, p in model.named_parameters():
        for prefix, frozen in expect_frozen.items():
            if name.startswith(prefix):
                assert p.requires_grad != frozen, name
        if name.startswith("norm"):
            assert p.requires_grad, name
    assert model.patch_embed.training != (frozen_stages >= 0)
    for i, stage in enumerate(model.layers):
        assert all(m.training != (frozen_stages > i) for m in stage.modules())


def test_gradient_checkpointing_gives_same_outputs_and_grads():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 96)
    text, text_mask = random_text(2)
    results = []
    for use_checkpoint in (False, True):
        torch.manual_seed(1)
        model = tiny_swin(use_checkpoint=use_checkpoint, frozen_stages=1).train()
        set_alphas(model, 0.3)
        text_in = text.clone().requires_grad_(True)
        feats = model(images, text_in, text_mask)
        sum(f.square().mean() for f in feats.values()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((feats, grads, text_in.grad.clone()))
    (f0, g0, t0), (f1, g1, t1) = results
    for key in f0:
        assert torch.allclose(f0[key], f1[key], atol=1e-6)
    assert g0.keys() == g1.keys() and "layers.3.blocks.1.attn.qkv_text_i2t.weight" in g0
    for name in g0:
        assert torch.allclose(g0[name], g1[name], atol=1e-6), name
    assert t0.abs().sum() > 0 and torch.allclose(t0, t1, atol=1e-6)


def test_shift_mask_is_cached_per_size():
    model = tiny_swin().eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 96))
        masks = dict(model._shift_masks)
        model(torch.randn(1, 3, 64, 96))
    # stage maps 16x24, 8x12, 4x6, 2x3 padded to whole 7x7 windows; the last two share one mask
    assert {k[0] for k in masks} == {(21, 28), (14, 14), (7, 7)}
    assert all(model._shift_masks[k] is v for k, v in masks.items())


def test_arbitrary_input_size_shapes():
    model = tiny_swin(out_indices=(1, 2, 3)).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 201, 263), *random_text(1))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "res3": (1, 32, 26, 33),
        "res4": (1, 64, 13, 17),
        "res5": (1, 128, 7, 9),
    }
    assert model.out_feature_strides == {"res3": 8, "res4": 16, "res5": 32}
    assert model.num_features == [16, 32, 64, 128]


# ---- configuration, checkpoints -------------------------------------------------------------------------


def test_swin_b_fusion_blocks():
    assert swin_b_fusion_blocks((2, 2, 18, 2)) == [(2, 14), (2, 15), (2, 16), (2, 17), (3, 0), (3, 1)]
    assert swin_b_fusion_blocks((2, 2, 2, 2), num_fusion=3) == [(2, 1), (3, 0), (3, 1)]
    assert swin_b_fusion_blocks((2, 2, 18, 2), num_fusion=0) == []


def test_invalid_fusion_block_is_reported():
    with pytest.raises(ValueError, match=r"fusion block \(3, 2\)"):
        tiny_swin(fusion_blocks=[(3, 2)])


def swin_b(variant: str = "v2", fused: bool = True) -> SwinTransformer:
    with torch.device("meta"):
        return SwinTransformer(
            fusion_blocks=swin_b_fusion_blocks((2, 2, 18, 2)) if fused else None, fusion_variant=variant
        )


@pytest.mark.parametrize("variant", ["v2", "v3"])
def test_swin_b_state_dict_matches_reference(variant):
    reference = reference_keys(variant, REFERENCE_PREFIX)
    assert len(reference) > 300
    ours = {k: tuple(v.shape) for k, v in swin_b(variant).state_dict().items()}
    assert ours == reference


def test_swin_b_parameter_counts():
    plain = sum(p.numel() for p in swin_b(fused=False).parameters())
    fused = sum(p.numel() for p in swin_b("v2").parameters())
    assert abs(plain - 86.9e6) < 0.1e6, plain
    assert abs((fused - plain) - 12.6e6) < 0.1e6, fused - plain


def test_load_official_layout_checkpoint():
    """Official Swin release naming: downsample closes a stage; attn_mask buffers, classification
    norm and head are dropped; a window-7 bias table is resized to the model's window."""
    torch.manual_seed(0)
    source = tiny_swin(fusion_blocks=None, out_indices=(3,))
    checkpoint = {k: v for k, v in source.state_dict().items() if not k.startswith("norm3")}
    checkpoint.update({
        "layers.0.blocks.1.attn_mask": torch.zeros(64, 49, 49),
        "norm.weight": torch.ones(128),
        "norm.bias": torch.zeros(128),
        "head.weight": torch.zeros(10, 128),
        "head.bias": torch.zeros(10),
    })
    target = tiny_swin(fusion_variant="v3")
    wrapped = {"model": {f"module.{k}": v for k, v in checkpoint.items()}}
    missing, unexpected = load_plain_swin_state_dict(target, wrapped)
    assert unexpected == []
    assert all("i2t" in k or re.match(r"norm\d\.", k) for k in missing)
    assert len(missing) == 6 + 3 * 9
    own = target.state_dict()
    for key, value in checkpoint.items():
        if key in own:
            assert torch.equal(own[key], value), key

    window12 = tiny_swin(window_size=12)
    missing, _ = load_plain_swin_state_dict(window12, checkpoint)
    assert window12.layers[0].blocks[0].attn.relative_position_bias_table.shape == (23 * 23, 2)
    assert not any("relative_position" in k for k in missing)


def test_load_rejects_a_different_architecture():
    source = tiny_swin(fusion_blocks=None)
    target = tiny_swin(embed_dim=24)
    with pytest.raises(ValueError, match="patch_embed.proj.weight has shape"):
        load_plain_swin_state_dict(target, source.state_dict())
