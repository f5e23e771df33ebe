"""Mixed precision (bf16 and fp16 autocast, deformable convs kept in fp32) and the EMA of the weights."""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from fiber_det.checkpoint import FiberCheckpointer
from fiber_det.engine import EMAHook, FiberStepTrainer, ModelEMA
from fiber_det.modeling.head import dyhead
from helpers import tiny_fiber_cfg
from test_modeling import sample


def _autocast_supported(dtype) -> bool:
    try:
        with torch.autocast("cpu", dtype=dtype):
            return torch.ones(2, 2) @ torch.ones(2, 2) is not None
    except (RuntimeError, AssertionError):
        return False


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_amp_training_step_on_cpu_keeps_deform_conv_fp32(tiny_text_dir, monkeypatch, dtype):
    if not _autocast_supported(dtype):
        pytest.skip(f"this torch has no CPU autocast for {dtype}")
    seen = []
    real = dyhead.deform_conv2d_sampled

    def recording(x, offset, weight, bias, *args, **kwargs):
        y = real(x, offset, weight, bias, *args, **kwargs)
        seen.append((x.dtype, offset.dtype, weight.dtype, y.dtype, torch.is_autocast_enabled("cpu")))
        return y

    monkeypatch.setattr(dyhead, "deform_conv2d_sampled", recording)
    torch.manual_seed(0)
    model = build_model(tiny_fiber_cfg(tiny_text_dir, **{"MODEL.FIBER.HEAD.DEFORM_IMPL": "sampled"}))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    trainer = FiberStepTrainer(model, [[sample(64, 64, 0), sample(64, 64, 1)]], opt, amp_dtype=dtype)
    assert trainer.grad_scaler.is_enabled() == (dtype == torch.float16)
    with EventStorage(0) as storage:
        trainer.iter = 0
        trainer.run_step()
    assert torch.isfinite(torch.tensor(storage.history("total_loss").latest()))
    assert seen and all(s == (torch.float32,) * 4 + (False,) for s in seen), seen
    changed = sum(not torch.equal(before[k], p) for k, p in model.named_parameters())
    # fp16: the first steps may be skipped by the GradScaler on overflow, which is its job.
    assert changed > 0 or (dtype == torch.float16 and storage.history("loss_scale").latest() < 65536.0)
    state = trainer.state_dict()
    assert "grad_scaler" in state and "optimizer" in state


def test_autocast_reaches_the_rest_of_the_model(tiny_text_dir):
    """The fp32 island is only the deformable conv: under bf16 autocast the other convs run in bf16."""
    model = build_model(tiny_fiber_cfg(tiny_text_dir))
    dtypes = []
    hook = model.head.bbox_pred.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.train()([sample(64, 64, 0)])
    hook.remove()
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)


def _toy():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    return m


def test_ema_update_and_swap():
    model = _toy()
    ema = ModelEMA(model, decay=0.75)
    w0 = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(4.0)
    model[1].num_batches_tracked += 3
    ema.update()
    assert torch.allclose(ema.state["0.weight"], w0 + 1.0)  # 0.75 * w0 + 0.25 * (w0 + 4)
    assert int(ema.state["1.num_batches_tracked"]) == 3  # integer buffers are copied
    with ema.applied():
        assert torch.allclose(model[0].weight, w0 + 1.0)
    assert torch.allclose(model[0].weight, w0 + 4.0)
    with pytest.raises(ValueError, match="DECAY"):
        ModelEMA(model, decay=1.0)


def test_ema_hook_starts_from_loaded_weights_unless_restored():
    model = _toy()
    ema = ModelEMA(model, decay=0.9)
    with torch.no_grad():
        model[0].weight.fill_(2.0)  # e.g. MODEL.WEIGHTS loaded after the trainer was built
    EMAHook(ema).before_train()
    assert torch.equal(ema.state["0.weight"], model[0].weight)
    restored = ModelEMA(model, decay=0.9)
    restored.load_state_dict({k: torch.zeros_like(v) for k, v in model.state_dict().items()})
    EMAHook(restored).before_train()
    assert restored.state["0.weight"].abs().sum() == 0


def test_checkpoint_saves_restores_and_evaluates_the_ema(tmp_path):
    model = _toy()
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.add_(2.0)
    ema.update()
    FiberCheckpointer(model, str(tmp_path), ema=ema).save("model_final")
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind

    fresh = _toy()
    fresh_ema = ModelEMA(fresh, decay=0.5)
    FiberCheckpointer(fresh, str(tmp_path), ema=fresh_ema).resume_or_load("", resume=True)
    assert fresh_ema.loaded and torch.equal(fresh_ema.state["0.weight"], ema.state["0.weight"])
    assert torch.equal(fresh[0].weight, model[0].weight)

    evaluated = _toy()
    FiberCheckpointer(evaluated, use_ema_weights=True).load(str(tmp_path / "model_final.pth"))
    assert torch.equal(evaluated[0].weight, ema.state["0.weight"])
