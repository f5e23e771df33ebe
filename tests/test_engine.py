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


# ---- the reference recipe on the paper-scale config (built, never run) ----
@pytest.fixture(scope="module")
def paper_groups(tiny_tokenizer_dir):
    from pathlib import Path

    import torch
    from detectron2.config import get_cfg

    from fiber_det.config import add_fiber_config

    cfg = get_cfg()
    add_fiber_config(cfg)
    cfg.merge_from_file(str(Path(__file__).resolve().parents[1] / "configs/fiber_b/fiber_b_pretrain.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.FIBER.TEXT.PRETRAINED", False,
                         "MODEL.FIBER.TEXT.TOKENIZER", str(tiny_tokenizer_dir)])
    torch.manual_seed(0)
    model = build_model(cfg)
    return cfg, model, fiber_param_groups(model, cfg)


def test_paper_config_param_groups(paper_groups):
    cfg, model, groups = paper_groups
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.LANG_LR, cfg.SOLVER.WEIGHT_DECAY) == (1e-4, 1e-5, 0.01)
    where = {}
    for g in groups:
        for p in g["params"]:
            assert id(p) not in where, "a parameter is in two groups"
            where[id(p)] = g
    assert {g["name"] for g in groups} == {"base", "base_bias", "language", "language_bias"}
    counts = {"language": 0, "base": 0}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            # Frozen: patch embedding and stage 1 (FROZEN_STAGES 1), the legacy cls_logits conv.
            assert name.startswith(("backbone.swin.patch_embed.", "backbone.swin.layers.0.", "head.cls_logits."))
            assert id(p) not in where
            continue
        g = where[id(p)]
        lang = name.startswith("backbone.text.")
        bias = "bias" in name
        lr = (1e-5 if lang else 1e-4) * (2.0 if bias else 1.0)
        assert g["lr"] == pytest.approx(lr), name
        assert g["weight_decay"] == (0.0 if bias else 0.01), name
        assert g["name"] == ("language" if lang else "base") + ("_bias" if bias else ""), name
        counts["language" if lang else "base"] += 1
    named = dict(model.named_parameters())
    # The text side's fusion (cross-attention and gate) trains at the language LR, the image side's at the base LR.
    assert where[id(named["backbone.text.model.encoder.layer.11.crossattention_t2i.self.query.weight"])]["lr"] == 1e-5
    assert where[id(named["backbone.text.model.encoder.layer.11.alpha_t2i"])]["name"] == "language"
    alpha_i2t = [n for n in named if n.endswith("alpha_i2t")]
    assert len(alpha_i2t) == 6 and all(where[id(named[n])]["name"] == "base" for n in alpha_i2t)
    # Norm weights are ordinary weights (decayed), norm biases biases; the Swin bias tables count as biases.
    assert where[id(named["backbone.text.model.encoder.layer.0.output.LayerNorm.weight"])]["weight_decay"] == 0.01
    assert where[id(named["backbone.swin.layers.2.blocks.0.norm1.bias"])]["name"] == "base_bias"
    assert where[id(named["backbone.swin.layers.2.blocks.0.attn.relative_position_bias_table"])]["name"] == "base_bias"
    assert counts["language"] > 150 and counts["base"] > 300


def test_paper_schedule_from_step_fractions(paper_groups):
    import torch

    from fiber_det.engine import build_fiber_lr_scheduler
    from fiber_det.engine.optimizer import schedule_steps

    cfg, _, _ = paper_groups
    cfg = cfg.clone()
    cfg.merge_from_list(["SOLVER.STEPS", "()", "SOLVER.STEP_FRACTIONS", "(0.67, 0.89)"])
    assert schedule_steps(cfg) == (536000, 712000)  # the config's explicit STEPS
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_fiber_lr_scheduler(cfg, opt)
    mult = sched._multiplier
    at = lambda it: mult(it / cfg.SOLVER.MAX_ITER)  # noqa: E731
    assert at(0) == pytest.approx(0.001)  # warmup from WARMUP_FACTOR
    assert at(1000) == pytest.approx(0.001 + (1 - 0.001) * 0.5)  # linear over WARMUP_ITERS (2000)
    assert at(2000) == at(535999) == pytest.approx(1.0)
    assert at(536000) == pytest.approx(0.1) and at(711999) == pytest.approx(0.1)
    assert at(712000) == pytest.approx(0.01)
    cfg.merge_from_list(["SOLVER.STEP_FRACTIONS", "(0.9, 0.5)"])
    with pytest.raises(ValueError, match="STEP_FRACTIONS"):
        schedule_steps(cfg)


# ---- the training step ----
class _Toy(__import__("torch").nn.Module):
    """A linear model whose loss is the batch mean of a squared error (a list of tensors per batch)."""

    def __init__(self):
        import torch

        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))

    def forward(self, batch):
        import torch

        x = torch.stack(batch)
        return {"loss_sq": ((x @ self.w - 1.0) ** 2).mean()}


def _step(batches, accumulate, **kw):
    import torch
    from detectron2.utils.events import EventStorage

    from fiber_det.engine import FiberStepTrainer

    model = _Toy()
    trainer = FiberStepTrainer(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), accumulate=accumulate, **kw)
    with EventStorage(0) as storage:
        trainer.iter = 0
        trainer.run_step()
    return model.w.detach().clone(), storage, trainer


def test_gradient_accumulation_equals_the_whole_batch():
    import torch

    xs = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([-1.0, 0.5, 2.0])]
    whole, s1, _ = _step([xs], 1)
    accumulated, s2, _ = _step([[xs[0]], [xs[1]]], 2)
    assert torch.allclose(whole, accumulated, atol=1e-7)
    assert s1.history("total_loss").latest() == pytest.approx(s2.history("total_loss").latest())


def test_nonfinite_loss_names_the_iteration_or_is_skipped():
    import torch

    bad = [[torch.tensor([float("nan"), 0.0, 0.0])]]
    with pytest.raises(FloatingPointError, match=r"iteration 0 .*loss_sq.*nan.*SKIP_NONFINITE"):
        _step(bad, 1)
    w, storage, trainer = _step(bad, 1, skip_nonfinite=True)
    assert torch.equal(w, _Toy().w.detach()) and trainer.nonfinite_skipped == 1
    assert storage.history("nonfinite_skipped").latest() == 1


def test_weight_decay_schedule_follows_the_reference():
    """SOLVER.WEIGHT_DECAY_SCHEDULE: weight decay x GAMMA once iteration + 1 >= step x ratio (the
    reference checks after scheduler.step(), so the new value is used from the next step)."""
    import types

    import torch

    from fiber_det.engine.hooks import WeightDecaySchedule

    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    opt = torch.optim.AdamW([{"params": [params[0]], "weight_decay": 0.01},
                             {"params": [params[1]], "weight_decay": 0.0}], lr=1e-3)
    hook = WeightDecaySchedule(milestones=(600, 900), gamma=0.1, ratio=0.5)
    hook.trainer = types.SimpleNamespace(optimizer=opt, start_iter=0, iter=0)
    hook.before_train()
    seen = {}
    for it in range(0, 460):
        hook.trainer.iter = it
        hook.after_step()
        seen[it] = opt.param_groups[0]["weight_decay"]
        assert opt.param_groups[1]["weight_decay"] == 0.0
    # 600 * 0.5 = 300 steps done after iteration 299; 900 * 0.5 = 450 after iteration 449.
    assert seen[298] == pytest.approx(0.01) and seen[299] == pytest.approx(0.001)
    assert seen[448] == pytest.approx(0.001) and seen[449] == pytest.approx(0.0001)
    # A resumed run (fresh optimizer groups, start_iter 400) continues with the same value.
    opt2 = torch.optim.AdamW([{"params": [params[0]], "weight_decay": 0.01}], lr=1e-3)
    hook.trainer = types.SimpleNamespace(optimizer=opt2, start_iter=400, iter=400)
    hook.before_train()
    assert opt2.param_groups[0]["weight_decay"] == pytest.approx(seen[399])
