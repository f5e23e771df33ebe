"""The paper-scale config (configs/fiber_b): builds on CPU with random weights and no download,
has the reference's parameter counts, loads a checkpoint synthesised in the reference's format,
and runs inference at 800x1333."""
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from fiber_det.checkpoint import convert_reference_state_dict
from fiber_det.config import add_fiber_config
from fiber_det.modeling.param_count import count_parameters
from helpers import reference_keys

ROOT = Path(__file__).resolve().parents[1]


def head_keys():
    """rpn.head.* keys and shapes listed in ARCHITECTURE.md section 14."""
    keys = {}
    for i in range(6):
        t = f"rpn.head.dyhead_tower.{i}."
        for k in range(3):
            keys[t + f"DyConv.{k}.conv.weight"] = (256, 256, 3, 3)
            keys[t + f"DyConv.{k}.conv.bias"] = (256,)
            keys[t + f"DyConv.{k}.bn.weight"] = (256,)
            keys[t + f"DyConv.{k}.bn.bias"] = (256,)
        keys.update({t + "offset.weight": (27, 256, 3, 3), t + "offset.bias": (27,),
                     t + "AttnConv.1.weight": (1, 256, 1, 1), t + "AttnConv.1.bias": (1,),
                     t + "relu.fc.0.weight": (64, 256), t + "relu.fc.0.bias": (64,),
                     t + "relu.fc.2.weight": (1024, 64), t + "relu.fc.2.bias": (1024,)})
    keys.update({"rpn.head.cls_logits.weight": (80, 256, 1, 1), "rpn.head.cls_logits.bias": (80,),
                 "rpn.head.bbox_pred.weight": (4, 256, 1, 1), "rpn.head.bbox_pred.bias": (4,),
                 "rpn.head.centerness.weight": (1, 256, 1, 1), "rpn.head.centerness.bias": (1,),
                 "rpn.head.dot_product_projection_text.weight": (256, 768),
                 "rpn.head.dot_product_projection_text.bias": (256,),
                 "rpn.head.log_scale": (1,), "rpn.head.bias_lang": (768,), "rpn.head.bias0": (1,)})
    keys.update({f"rpn.head.scales.{i}.scale": (1,) for i in range(5)})
    return keys


def paper_cfg(tokenizer_dir, variant="v2"):
    cfg = get_cfg()
    add_fiber_config(cfg)
    cfg.merge_from_file(str(ROOT / "configs/fiber_b/fiber_b_pretrain.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.FIBER.TEXT.PRETRAINED", False,
                         "MODEL.FIBER.TEXT.TOKENIZER", str(tokenizer_dir),
                         "MODEL.FIBER.SWIN.FUSION_VARIANT", variant])
    return cfg


@pytest.fixture(scope="module")
def paper_model(tiny_tokenizer_dir):
    torch.manual_seed(0)
    return build_model(paper_cfg(tiny_tokenizer_dir)).eval()


def test_parameter_counts_match_the_reference(paper_model):
    counts = {k: v / 1e6 for k, v in count_parameters(paper_model).items()}
    expected = {"Swin": 86.9, "image-to-text modules": 12.6, "text encoder": 124.1,
                "text-to-image modules": 13.4, "FPN": 3.4}
    for k, v in expected.items():
        assert counts[k] == pytest.approx(v, abs=0.1), (k, counts)
    assert counts["head"] == pytest.approx(11.7, abs=0.3)
    assert counts["total"] == pytest.approx(252, abs=1.0)


@pytest.mark.parametrize("variant", ["v2", "v3"])
def test_reference_checkpoint_loads_strictly(tiny_tokenizer_dir, paper_model, variant):
    model = paper_model if variant == "v2" else build_model(paper_cfg(tiny_tokenizer_dir, "v3"))
    shapes = {**reference_keys(variant), **head_keys(), "rpn.anchor_generator.cell_anchors.0": (1, 4)}
    g = torch.Generator().manual_seed(1)
    state = {"module." + k: torch.randn(s, generator=g) if s else torch.randn((), generator=g) for k, s in shapes.items()}
    converted, unplaced = convert_reference_state_dict(state)
    assert unplaced == []
    own = model.state_dict()
    mismatched = [k for k, v in converted.items() if k in own and own[k].shape != v.shape]
    assert mismatched == []
    result = model.load_state_dict(converted, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    # Spot checks: each reference tensor lands in the intended parameter.
    m = model.state_dict()
    for ref, ours in [
        ("fusion_backbone.backbone.body.layers.2.blocks.14.attn.qkv_text_i2t.weight",
         "backbone.swin.layers.2.blocks.14.attn.qkv_text_i2t.weight"),
        ("fusion_backbone.backbone.fpn.fpn_inner3.weight", "backbone.fpn.fpn_inner3.weight"),
        ("fusion_backbone.language_backbone.body.model.encoder.layer.10.crossattention_t2i.self.key.weight",
         "backbone.text.model.encoder.layer.10.crossattention_t2i.self.key.weight"),
        ("rpn.head.dyhead_tower.3.DyConv.2.conv.weight", "head.dyhead_tower.3.DyConv.2.conv.weight"),
        ("rpn.head.bias0", "head.bias0"),
    ]:
        assert torch.equal(m[ours], state["module." + ref]), ours


def test_inference_at_800x1333(paper_model):
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 255, (3, 800, 1333), dtype=torch.uint8, generator=g)
    inputs = {"image": image, "height": 800, "width": 1333, "caption": "person. bicycle. car",
              "class_spans": [[(0, 6)], [(8, 15)], [(17, 20)]]}
    with torch.no_grad():
        out = paper_model([inputs])[0]["instances"]
    assert out.image_size == (800, 1333)
    assert len(out) <= 100
    assert torch.isfinite(out.scores).all()


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml")))
def test_every_config_loads_and_names_registered_datasets(path):
    from detectron2.data import DatasetCatalog

    cfg = get_cfg()
    add_fiber_config(cfg)
    cfg.merge_from_file(str(ROOT / path))
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        assert name in DatasetCatalog.list(), f"{path}: dataset {name!r} is not registered"
    if "zero_shot" in path:
        assert cfg.MODEL.FIBER.SWIN.EMBED_DIM == 128 and cfg.TEST.RESULTS_FILE.startswith("zero_shot_")
