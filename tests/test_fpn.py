"""The reference FPN: shapes, the top-down path, and the DropBlock quirk switch."""
import torch

import fiber_det  # noqa: F401
from fiber_det.modeling.backbone.fpn import DropBlock2D, ReferenceFPN


def feats():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, c, s, s, generator=g) for c, s in ((16, 16), (32, 8), (64, 4))]


def test_levels_and_names():
    fpn = ReferenceFPN([16, 32, 64], 8, drop_block=False)
    out = fpn(feats())
    assert [tuple(o.shape[-2:]) for o in out] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    names = {k.rsplit(".", 1)[0] for k in fpn.state_dict()}
    assert names == {"fpn_inner2", "fpn_layer2", "fpn_inner3", "fpn_layer3", "fpn_inner4", "fpn_layer4",
                     "top_blocks.p6", "top_blocks.p7"}


def test_drop_block_only_in_training_and_only_when_switched_on():
    torch.manual_seed(0)
    quirk = ReferenceFPN([16, 32, 64], 8, drop_block=True)
    clean = ReferenceFPN([16, 32, 64], 8, drop_block=False)
    clean.load_state_dict(quirk.state_dict())
    x = feats()
    quirk.eval(), clean.eval()
    for a, b in zip(quirk(x), clean(x)):
        assert torch.equal(a, b)
    quirk.train(), clean.train()
    qa, ca = quirk(x), clean(x)
    assert not torch.equal(qa[0], ca[0]) and not torch.equal(qa[1], ca[1])  # merged P3 and P4
    assert torch.equal(qa[2], ca[2])  # P5 and above never see DropBlock


def test_drop_block_zeroes_blocks_and_rescales():
    torch.manual_seed(0)
    x = torch.ones(4, 3, 32, 32)
    y = DropBlock2D(0.3, 3).train()(x)
    kept = y[:, 0] > 0
    assert 0.5 < kept.float().mean() < 0.95
    assert torch.allclose(y[:, 0][kept], torch.full_like(y[:, 0][kept], y[:, 0][kept][0].item()))
    assert (y[:, 0] == y[:, 1]).all()  # one mask for all channels
