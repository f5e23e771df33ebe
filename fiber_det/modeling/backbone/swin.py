"""Swin Transformer (v1) image backbone with FIBER's image-to-text cross-attention.

The network is the detection variant of Swin used by FIBER (ARCHITECTURE.md, section 2): inputs of any
size are padded to the patch size, every block pads its map to a multiple of the window (and shifts the
*padded* map), stage outputs go through per-stage LayerNorms, and the patch merging sits at the end of
a stage (``layers.{i}.downsample``), so parameter names equal the reference checkpoint's.

Chosen blocks ("fusion blocks") carry an extra cross-attention inside their attention module: after
the windowed self-attention and its output projection, every window token attends to all text tokens of
its image, and ``x = self_attn_out + alpha_i2t * cross_out`` with ``alpha_i2t`` initialised to 0.

Besides a plain ``forward``, the model offers the step-wise API the fused backbone uses to interleave
image blocks with text layers: ``embed``, ``run_block`` and ``end_stage``.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from timm.layers import DropPath, Mlp, PatchEmbed, to_2tuple, trunc_normal_

__all__ = [
    "WindowAttention",
    "SwinTransformerBlock",
    "PatchMerging",
    "SwinStage",
    "SwinTransformer",
    "swin_b_fusion_blocks",
    "load_plain_swin_state_dict",
]

# Value the reference adds to attention logits between tokens of different shifted-window regions.
_SHIFT_MASK_VALUE = -100.0
# Shifted-window masks kept per model: one per stage for the current and the previous input size.
_MASK_CACHE_SIZE = 8


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window_size**2, C); windows of one image are contiguous, image-major."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, C)


def window_reverse(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, window_size**2, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // window_size, W // window_size, window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


def relative_position_index(window_size: int) -> torch.Tensor:
    """Index into the (2w-1)^2 bias table for every (query, key) pair of a w x w window: (w*w, w*w)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)  # 2, w*w
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)  # w*w, w*w, 2
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


def shifted_window_mask(
    padded_hw: tuple[int, int], window_size: int, shift_size: int, device: torch.device | None = None
) -> torch.Tensor:
    """Additive mask (nW, N, N) keeping attention inside the regions a cyclic shift glued together.

    ``padded_hw`` is the map size after padding to the window; the shift is applied to the padded map
    (as in the reference), so the regions are the last ``window_size`` and ``shift_size`` rows/columns
    of the padded map.
    """
    Hp, Wp = padded_hw

    def region(n: int) -> torch.Tensor:
        # 0 for [0, n - window), 1 for [n - window, n - shift), 2 for [n - shift, n)
        idx = torch.arange(n, device=device)
        return (idx >= n - window_size).long() + (idx >= n - shift_size).long()

    ids = region(Hp)[:, None] * 3 + region(Wp)[None, :]
    ids = window_partition(ids[None, :, :, None], window_size).squeeze(-1)  # nW, N
    different = ids[:, None, :] != ids[:, :, None]
    return torch.zeros(different.shape, device=device).masked_fill(different, _SHIFT_MASK_VALUE)


def _text_attention_mask(text_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T) with 1 = valid -> additive (B, 1, 1, T) mask: 0 for valid, a large negative for padding."""
    if text_mask is None:
        return None
    invalid = ~text_mask.bool()
    bias = torch.zeros(invalid.shape, dtype=dtype, device=text_mask.device)
    return bias.masked_fill(invalid, torch.finfo(dtype).min)[:, None, None, :]


class WindowAttention(nn.Module):
    """Windowed multi-head self-attention with relative position bias, optionally followed by an
    image-to-text cross-attention (FIBER's i2t fusion).

    Args:
        dim: channels of the tokens.
        num_heads: heads of both attentions.
        window_size: side of the square window.
        qkv_bias: bias in the q/k/v projections (self- and cross-attention).
        qk_scale: override of the self-attention scale (the cross-attention always uses head_dim**-0.5).
        attn_drop, proj_drop: dropout on attention weights / after the output projections.
        text_dim: width of the text states; None builds a plain attention without cross-attention.
        text_query_norm: LayerNorm the cross-attention query input ("v3" variant).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        text_dim: int | None = None,
        text_query_norm: bool = False,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"WindowAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.attn_drop = attn_drop

        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # Persistent, as in the reference checkpoints (it is derived from window_size all the same).
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

        self.has_text_attention = text_dim is not None
        if self.has_text_attention:
            self.alpha_i2t = nn.Parameter(torch.zeros(1))
            self.norm_i2t_i = nn.LayerNorm(dim) if text_query_norm else nn.Identity()
            self.qkv_i2t = nn.Linear(dim, dim, bias=qkv_bias)  # query only; the name is the reference's
            self.qkv_text_i2t = nn.Linear(text_dim, dim * 2, bias=qkv_bias)
            self.proj_i2t = nn.Linear(dim, dim)
            self.proj_drop_i2t = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> torch.Tensor:
        """(num_heads, N, N) bias of every (query, key) pair in a window."""
        n = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            x: (B * nW, N, C) windows, image-major (as :func:`window_partition` returns them).
            mask: (nW, N, N) additive shifted-window mask, or None.
            text: (B, T, text_dim) text states; ignored by blocks without cross-attention.
            text_mask: (B, T), 1 for valid tokens; None means all valid.
        """
        Bw, N, C = x.shape
        q, k, v = self.qkv(x).reshape(Bw, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias().unsqueeze(0)  # 1, nH, N, N
        if mask is not None:
            nW = mask.shape[0]
            if Bw % nW:
                raise ValueError(f"WindowAttention: {Bw} windows are not a multiple of the mask's {nW} windows")
            bias = (bias + mask.unsqueeze(1)).unsqueeze(0).expand(Bw // nW, -1, -1, -1, -1).reshape(Bw, -1, N, N)
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale
        )
        x = self.proj_drop(self.proj(x.transpose(1, 2).reshape(Bw, N, C)))

        if text is not None and self.has_text_attention:
            x = x + self.alpha_i2t * self._attend_text(x, text, text_mask)
        return x

    def _attend_text(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None) -> torch.Tensor:
        Bw, N, C = x.shape
        B, T, _ = text.shape
        if Bw % B:
            raise ValueError(f"WindowAttention: {Bw} windows do not split evenly over {B} captions")
        # Every window token of an image attends to the same text, so the windows of one image are
        # viewed as one long sequence: the text keys/values are computed once and broadcast.
        q = self.qkv_i2t(self.norm_i2t_i(x)).reshape(B, (Bw // B) * N, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.qkv_text_i2t(text).reshape(B, T, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=_text_attention_mask(text_mask, q.dtype),
            dropout_p=self.attn_drop if self.training else 0.0,
            scale=self.head_dim**-0.5,
        )
        y = y.transpose(1, 2).reshape(Bw, N, C)
        return self.proj_drop_i2t(self.proj_i2t(y))


class SwinTransformerBlock(nn.Module):
    """Pre-norm block: (shifted) window attention and an MLP, each in a drop-path residual.

    ``text_dim`` set makes it a fusion block (see :class:`WindowAttention`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        text_dim: int | None = None,
        text_query_norm: bool = False,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"SwinTransformerBlock: shift_size {shift_size} must be in [0, {window_size})")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim,
            num_heads,
            window_size,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
            text_dim=text_dim,
            text_query_norm=text_query_norm,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    @property
    def is_fusion_block(self) -> bool:
        return self.attn.has_text_attention

    def forward(
        self,
        x: torch.Tensor,
        hw: tuple[int, int],
        shift_mask: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            x: (B, H*W, C) tokens.
            hw: (H, W).
            shift_mask: mask from :func:`shifted_window_mask` for the padded map; built here when a
                shifted block gets None.
            text, text_mask: see :meth:`WindowAttention.forward`.
        """
        H, W = hw
        B, L, C = x.shape
        if L != H * W:
            raise ValueError(f"SwinTransformerBlock: got {L} tokens for a {H}x{W} map")
        ws, shift = self.window_size, self.shift_size

        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        # Pad (with zeros, after the norm) to whole windows, then shift the padded map: padded tokens
        # take part in attention, as in the reference.
        pad_b, pad_r = (-H) % ws, (-W) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            if shift_mask is None:
                shift_mask = shifted_window_mask((Hp, Wp), ws, shift, x.device)
        else:
            shift_mask = None

        x = self.attn(window_partition(x, ws), mask=shift_mask, text=text, text_mask=text_mask)
        x = window_reverse(x, ws, Hp, Wp)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = x[:, :H, :W, :].reshape(B, L, C)

        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood -> one token: (B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C); odd sizes are zero-padded."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, L, C = x.shape
        if L != H * W:
            raise ValueError(f"PatchMerging: got {L} tokens for a {H}x{W} map")
        x = F.pad(x.view(B, H, W, C), (0, 0, 0, W % 2, 0, H % 2))
        # Channel order (row, col) offsets (0,0), (1,0), (0,1), (1,1): the order of the released weights.
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.reshape(B, -1, 4 * C)))


class SwinStage(nn.Module):
    """The blocks of one resolution (alternating plain and shifted windows) and the patch merging that
    ends the stage (``downsample`` is None for the last stage)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop: float,
        attn_drop: float,
        drop_path: Sequence[float],
        downsample: bool,
        text_dim: int | None = None,
        fusion_block_ids: Iterable[int] = (),
        text_query_norm: bool = False,
    ):
        super().__init__()
        fusion_block_ids = set(fusion_block_ids)
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                num_heads,
                window_size=window_size,
                shift_size=0 if j % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=drop_path[j],
                text_dim=text_dim if j in fusion_block_ids else None,
                text_query_norm=text_query_norm,
            )
            for j in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None


class SwinTransformer(nn.Module):
    """Swin Transformer backbone whose ``fusion_blocks`` carry image-to-text cross-attention.

    Args:
        patch_size, in_chans, embed_dim, depths, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale:
            the Swin architecture (defaults: Swin-B with window 12).
        drop_rate, attn_drop_rate: dropout after projections / on attention weights.
        drop_path_rate: stochastic depth, linspace(0, rate, sum(depths)) over all blocks.
        ape: absolute position embedding (sized for ``pretrain_img_size``, resized bicubically).
        pretrain_img_size: image size the absolute position embedding is laid out for.
        patch_norm: LayerNorm after the patch embedding.
        out_indices: stages whose normed output ``forward`` returns, named ``res{i + 2}``.
        frozen_stages: -1 nothing; 0 the patch embedding (and ``absolute_pos_embed``); k >= 1 also
            stages 0..k-1 (their parameters get ``requires_grad=False`` and stay in eval mode).
            The reference's ``FREEZE_CONV_BODY_AT = k >= 1`` is ``frozen_stages = k - 1``.
        use_checkpoint: gradient checkpointing per block (trainable stages only).
        text_dim: width of the text states the fusion blocks read.
        fusion_blocks: (stage, block) pairs that get the cross-attention; None for none.
        fusion_variant: "v2" or "v3" ("v3" LayerNorms the cross-attention query input).
    """

    def __init__(
        self,
        *,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 128,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (4, 8, 16, 32),
        window_size: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.4,
        ape: bool = False,
        pretrain_img_size: int = 224,
        patch_norm: bool = True,
        out_indices: Sequence[int] = (1, 2, 3),
        frozen_stages: int = 1,
        use_checkpoint: bool = False,
        text_dim: int = 768,
        fusion_blocks: Iterable[tuple[int, int]] | None = None,
        fusion_variant: str = "v2",
    ):
        super().__init__()
        num_layers = len(depths)
        if len(num_heads) != num_layers:
            raise ValueError(f"SwinTransformer: {len(depths)} depths but {len(num_heads)} num_heads")
        if fusion_variant not in ("v2", "v3"):
            raise ValueError(f"SwinTransformer: fusion_variant must be 'v2' or 'v3', got {fusion_variant!r}")
        if not -1 <= frozen_stages <= num_layers:
            raise ValueError(f"SwinTransformer: frozen_stages must be in [-1, {num_layers}], got {frozen_stages}")
        out_indices = tuple(sorted(set(out_indices)))
        if any(not 0 <= i < num_layers for i in out_indices):
            raise ValueError(f"SwinTransformer: out_indices {out_indices} outside stages 0..{num_layers - 1}")
        fusion = sorted({(int(s), int(b)) for s, b in (fusion_blocks or ())})
        for s, b in fusion:
            if not (0 <= s < num_layers and 0 <= b < depths[s]):
                raise ValueError(f"SwinTransformer: fusion block ({s}, {b}) does not exist for depths {tuple(depths)}")

        self.num_layers = num_layers
        self.patch_size = patch_size
        self.window_size = window_size
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.use_checkpoint = use_checkpoint
        self.fusion_blocks = fusion
        self.fusion_variant = fusion_variant
        self.num_features = [int(embed_dim * 2**i) for i in range(num_layers)]
        self.out_features = [f"res{i + 2}" for i in out_indices]
        self.out_feature_channels = {f"res{i + 2}": self.num_features[i] for i in out_indices}
        self.out_feature_strides = {f"res{i + 2}": patch_size * 2**i for i in out_indices}

        self.patch_embed = PatchEmbed(
            img_size=None,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            norm_layer=nn.LayerNorm if patch_norm else None,
            output_fmt="NHWC",
            strict_img_size=False,
            dynamic_img_pad=True,
        )
        self.ape = ape
        if ape:
            grid = [s // p for s, p in zip(to_2tuple(pretrain_img_size), to_2tuple(patch_size))]
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *grid))
        self.pos_drop = nn.Dropout(drop_rate)

        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        for i in range(num_layers):
            start = sum(depths[:i])
            self.layers.append(
                SwinStage(
                    self.num_features[i],
                    depths[i],
                    num_heads[i],
                    window_size,
                    mlp_ratio,
                    qkv_bias,
                    qk_scale,
                    drop_rate,
                    attn_drop_rate,
                    dpr[start : start + depths[i]],
                    downsample=i < num_layers - 1,
                    text_dim=text_dim,
                    fusion_block_ids=[b for s, b in fusion if s == i],
                    text_query_norm=fusion_variant == "v3",
                )
            )
        for i in out_indices:
            # The reference keeps stage 0's output un-normed (its FPN never reads it).
            self.add_module(f"norm{i}", nn.Identity() if i == 0 else nn.LayerNorm(self.num_features[i]))

        self._shift_masks: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._init_weights()
        self._freeze_stages()

    # ---- init / freezing -------------------------------------------------------------------------

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.ape:
            trunc_normal_(self.absolute_pos_embed, std=0.02)
        # relative_position_bias_table (trunc normal) and alpha_i2t (zeros) are set by WindowAttention.

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        frozen: list[nn.Module] = [self.patch_embed]
        if self.frozen_stages >= 1:
            frozen += [self.pos_drop, *self.layers[: self.frozen_stages]]
        return frozen

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False
        if self.ape and self.frozen_stages >= 0:
            self.absolute_pos_embed.requires_grad = False

    def train(self, mode: bool = True) -> SwinTransformer:
        """Switch mode but keep frozen parts in eval mode."""
        super().train(mode)
        self._freeze_stages()
        return self

    # ---- step-wise API -----------------------------------------------------------------------------

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, 3, H, W) images -> tokens (B, h*w, C) at stride ``patch_size``, and (h, w)."""
        x = self.patch_embed(images)  # B, h, w, C
        B, H, W, C = x.shape
        if self.ape:
            pos = F.interpolate(self.absolute_pos_embed, size=(H, W), mode="bicubic")
            x = x + pos.permute(0, 2, 3, 1)
        return self.pos_drop(x.reshape(B, H * W, C)), (H, W)

    def run_block(
        self,
        stage: int,
        block: int,
        x: torch.Tensor,
        hw: tuple[int, int],
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run block ``block`` of stage ``stage`` on x (B, H*W, C).

        text (B, T, text_dim) and text_mask (B, T, 1 = valid) are read by fusion blocks only; a fusion
        block given ``text=None`` behaves as the unfused block.
        """
        blk = self.layers[stage].blocks[block]
        if text is not None and text.shape[0] != x.shape[0]:
            raise ValueError(f"run_block({stage}, {block}): {x.shape[0]} images but {text.shape[0]} captions")
        if not blk.is_fusion_block:
            text = text_mask = None
        mask = self._shift_mask(hw, x.device) if blk.shift_size else None
        if self.use_checkpoint and stage >= self.frozen_stages and torch.is_grad_enabled():
            return checkpoint.checkpoint(blk, x, hw, mask, text, text_mask, use_reentrant=False)
        return blk(x, hw, mask, text, text_mask)

    def end_stage(
        self, stage: int, x: torch.Tensor, hw: tuple[int, int]
    ) -> tuple[torch.Tensor | None, torch.Tensor, tuple[int, int]]:
        """Close stage ``stage``: its normed output (B, C, H, W) if it is in ``out_indices`` (else None),
        then the patch merging, giving the next stage's tokens and size (unchanged after the last)."""
        H, W = hw
        out = None
        if stage in self.out_indices:
            B, _, C = x.shape
            out = getattr(self, f"norm{stage}")(x).view(B, H, W, C).permute(0, 3, 1, 2).contiguous()
        downsample = self.layers[stage].downsample
        if downsample is not None:
            x = downsample(x, H, W)
            hw = ((H + 1) // 2, (W + 1) // 2)
        return out, x, hw

    def forward(
        self, images: torch.Tensor, text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Whole network with a fixed text for all fusion blocks: {"res{i+2}": (B, C_i, H_i, W_i)}."""
        x, hw = self.embed(images)
        outs = {}
        for i, stage in enumerate(self.layers):
            for j in range(len(stage.blocks)):
                x = self.run_block(i, j, x, hw, text, text_mask)
            out, x, hw = self.end_stage(i, x, hw)
            if out is not None:
                outs[f"res{i + 2}"] = out
        return outs

    def _shift_mask(self, hw: tuple[int, int], device: torch.device) -> torch.Tensor:
        ws = self.window_size
        padded = (-(-hw[0] // ws) * ws, -(-hw[1] // ws) * ws)
        key = (padded, device)
        mask = self._shift_masks.get(key)
        if mask is None:
            mask = shifted_window_mask(padded, ws, ws // 2, device)
            self._shift_masks[key] = mask
            if len(self._shift_masks) > _MASK_CACHE_SIZE:
                self._shift_masks.popitem(last=False)
        else:
            self._shift_masks.move_to_end(key)
        return mask


def swin_b_fusion_blocks(depths: Sequence[int], num_fusion: int = 6) -> list[tuple[int, int]]:
    """The last ``num_fusion`` blocks of the network as (stage, block) pairs, in network order.

    For Swin-B (2, 2, 18, 2) and 6: stage-2 blocks 14..17 and stage-3 blocks 0..1 (0-based stages).
    """
    if not 0 <= num_fusion <= sum(depths):
        raise ValueError(f"swin_b_fusion_blocks: num_fusion {num_fusion} outside [0, {sum(depths)}]")
    blocks = [(s, b) for s, depth in enumerate(depths) for b in range(depth)]
    return blocks[len(blocks) - num_fusion :]


def _resize_bias_table(name: str, table: torch.Tensor, side: int) -> torch.Tensor:
    """(S*S, nH) relative position bias table -> (side*side, nH), bicubic over the (S, S) offset grid."""
    src = int(round(table.shape[0] ** 0.5))
    if src * src != table.shape[0]:
        raise ValueError(f"load_plain_swin_state_dict: {name} has {table.shape[0]} rows, not a square window's table")
    grid = table.float().t().reshape(1, -1, src, src)
    grid = F.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
    return grid.reshape(-1, side * side).t().to(table.dtype)


def load_plain_swin_state_dict(
    model: SwinTransformer, state_dict: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str]]:
    """Load a plain (unfused) Swin checkpoint into ``model``; returns (missing, unexpected) keys.

    Understands the official Swin release naming (= this model's, minus the fusion modules; a
    ``{"model": ...}`` wrapper and a ``module.`` prefix are removed) and timm >= 0.9 naming, where
    ``layers.{i}.downsample`` opens stage i instead of closing stage i - 1. Dropped on the way: the
    classifier ``head.*``, the classification ``norm.*``, the ``attn_mask`` buffers and
    ``relative_position_index`` (derived from the window size). Relative position bias tables of another
    window size are resized bicubically, as the official Swin code does when fine-tuning. Fusion
    parameters and the output norms ``norm{i}`` are expected in ``missing``.
    """
    for wrapper in ("model", "state_dict"):
        if isinstance(state_dict.get(wrapper), Mapping):
            state_dict = state_dict[wrapper]
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}

    last = model.num_layers - 1
    timm_layout = any(k.startswith(f"layers.{last}.downsample.") for k in state_dict)
    own = model.state_dict()
    mapped = {}
    for key, value in state_dict.items():
        if key.startswith(("head.", "norm.")) or key.endswith(("attn_mask", "relative_position_index")):
            continue
        m = re.match(r"layers\.(\d+)\.downsample\.(.+)", key)
        if timm_layout and m:
            key = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        target = own.get(key)
        if target is not None and value.shape != target.shape:
            if key.endswith("relative_position_bias_table") and value.shape[1] == target.shape[1]:
                value = _resize_bias_table(key, value, 2 * model.window_size - 1)
            elif key == "absolute_pos_embed" and value.ndim == 3:
                # classification layout (1, h*w, C) -> detection layout (1, C, h, w), then resized
                side = int(value.shape[1] ** 0.5)
                value = value.transpose(1, 2).reshape(1, -1, side, side)
                value = F.interpolate(value, size=tuple(target.shape[2:]), mode="bicubic")
            else:
                raise ValueError(
                    f"load_plain_swin_state_dict: {key} has shape {tuple(value.shape)} in the checkpoint but "
                    f"{tuple(target.shape)} in the model — is it the same Swin size and patch size?"
                )
        mapped[key] = value
    result = model.load_state_dict(mapped, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("relative_position_index")]
    return missing, list(result.unexpected_keys)
