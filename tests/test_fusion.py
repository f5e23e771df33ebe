"""The fused backbone's pairing schedule: each side sees the other only through the fused layers."""
import torch
from detectron2.modeling import build_model

from helpers import tiny_fiber_cfg


def run(model, images, ids, mask):
    with torch.no_grad():
        feats, text = model.backbone(images, ids, mask)
    return feats, text["hidden"]


def open_gates(model, which="alpha"):
    for name, p in model.named_parameters():
        if which in name:
            p.data.fill_(1.0)


def test_modalities_interact_only_through_fused_layers(tiny_text_dir):
    torch.manual_seed(0)
    model = build_model(tiny_fiber_cfg(tiny_text_dir)).eval()
    assert model.backbone.image_blocks == [(3, 0), (3, 1)]  # the last two Swin blocks
    images = torch.randn(1, 3, 64, 64)
    enc_a = model.tokenize(["a red circle"])
    enc_b = model.tokenize(["two blue squares on the left"])
    # Gates closed (initial state): image features do not depend on the caption, nor text on the image.
    fa, ta = run(model, images, enc_a["input_ids"], enc_a["attention_mask"])
    fb, _ = run(model, images, enc_b["input_ids"], enc_b["attention_mask"])
    for k in fa:
        assert torch.equal(fa[k], fb[k])
    _, ta2 = run(model, images * 2, enc_a["input_ids"], enc_a["attention_mask"])
    assert torch.equal(ta, ta2)
    # Open only the image side's gates: images now depend on the text, text still not on images.
    open_gates(model, "alpha_i2t")
    fa, ta = run(model, images, enc_a["input_ids"], enc_a["attention_mask"])
    fb, _ = run(model, images, enc_b["input_ids"], enc_b["attention_mask"])
    assert not torch.allclose(fa["p5"], fb["p5"])
    _, ta2 = run(model, images * 2, enc_a["input_ids"], enc_a["attention_mask"])
    assert torch.equal(ta, ta2)
    # Open the text side too: text now depends on the image.
    open_gates(model, "alpha_t2i")
    _, ta = run(model, images, enc_a["input_ids"], enc_a["attention_mask"])
    _, ta2 = run(model, images * 2, enc_a["input_ids"], enc_a["attention_mask"])
    assert not torch.allclose(ta, ta2)


def test_pairs_update_in_parallel(tiny_text_dir):
    """The text layer of a pair reads the image tokens from before the pair's Swin block."""
    torch.manual_seed(0)
    model = build_model(tiny_fiber_cfg(tiny_text_dir)).eval()
    open_gates(model)
    bb = model.backbone
    seen = []
    orig = bb.text.run_layer

    def spy(i, h, ext, image_tokens=None, image_mask=None):
        if image_tokens is not None:
            seen.append(image_tokens.clone())
        return orig(i, h, ext, image_tokens=image_tokens, image_mask=image_mask)

    bb.text.run_layer = spy
    images = torch.randn(1, 3, 64, 64)
    enc = model.tokenize(["a red circle"])
    run(model, images, enc["input_ids"], enc["attention_mask"])
    # Recompute the image stream by hand up to the first fused block's input.
    with torch.no_grad():
        x, hw = bb.swin.embed(images)
        first = bb.image_blocks[0]
        for stage in range(first[0] + 1):
            for block in range(len(bb.swin.layers[stage].blocks)):
                if (stage, block) == first:
                    break
                x = bb.swin.run_block(stage, block, x, hw)
            else:
                _, x, hw = bb.swin.end_stage(stage, x, hw)
    assert len(seen) == len(bb.image_blocks)
    torch.testing.assert_close(seen[0], x)
