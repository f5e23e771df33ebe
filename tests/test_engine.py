"""Trainer wiring: evaluators chosen by the dataset's evaluator_type; optimizer parameter groups."""
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from fiber_det.engine import build_evaluator, fiber_param_groups
from fiber_det.evaluation import GroundingRecallEvaluator, RefExpEvaluator
from helpers import tiny_fiber_cfg


@pytest.mark.parametrize("kind,cls", [("grounding", GroundingRecallEvaluator), ("refexp", RefExpEvaluator)])
def test_evaluator_follows_evaluator_type(tmp_path, tiny_text_dir, kind, cls):
    name = f"t_engine_{kind}"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(evaluator_type=kind)
    cfg = tiny_fiber_cfg(tiny_text_dir, OUTPUT_DIR=str(tmp_path))
    assert isinstance(build_evaluator(cfg, name), cls)


def test_unknown_evaluator_type_is_an_error(tmp_path, tiny_text_dir):
    DatasetCatalog.register("t_engine_odd", lambda: [])
    MetadataCatalog.get("t_engine_odd").set(evaluator_type="nope")
    with pytest.raises(ValueError, match="t_engine_odd"):
        build_evaluator(tiny_fiber_cfg(tiny_text_dir, OUTPUT_DIR=str(tmp_path)), "t_engine_odd")


def test_param_groups_follow_the_reference_rules(tiny_text_dir):
    cfg = tiny_fiber_cfg(tiny_text_dir, **{"SOLVER.BASE_LR": 1e-4, "SOLVER.LANG_LR": 1e-5,
                                           "SOLVER.WEIGHT_DECAY": 0.01})
    model = build_model(cfg)
    groups = fiber_param_groups(model, cfg)
    where = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    expect = {
        "backbone.text.model.encoder.layer.3.crossattention_t2i.self.key.weight": (1e-5, 0.01),
        "backbone.text.model.encoder.layer.3.crossattention_t2i.self.key.bias": (2e-5, 0.0),
        "backbone.swin.layers.0.blocks.0.attn.qkv.weight": (1e-4, 0.01),
        "backbone.swin.layers.0.blocks.0.attn.relative_position_bias_table": (2e-4, 0.0),
        "head.bias0": (2e-4, 0.0),
        "head.bias_lang": (2e-4, 0.0),
        "head.log_scale": (1e-4, 0.01),
    }
    for name, want in expect.items():
        assert where[id(named[name])] == pytest.approx(want), name
    assert id(named["head.cls_logits.weight"]) not in where  # frozen
