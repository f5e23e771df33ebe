"""AdamW with the reference's parameter groups (ARCHITECTURE.md section 12).

Rules, applied in order to every trainable parameter name:
- names under the text encoder (``backbone.text.``, incl. its cross-attention) use SOLVER.LANG_LR,
  everything else SOLVER.BASE_LR;
- names containing "bias" get SOLVER.BIAS_LR_FACTOR x LR and SOLVER.WEIGHT_DECAY_BIAS. Like the
  reference this is a substring match, so ``bias_lang``, ``bias0`` and Swin's
  ``relative_position_bias_table`` count as biases;
- norm weights and the fusion gates (alpha_i2t, alpha_t2i) are treated as ordinary weights
  (weight decay applies), as in the reference. The image-side gates alpha_i2t live in the Swin
  backbone and so train at BASE_LR; the text-side alpha_t2i at LANG_LR;
- frozen parameters (requires_grad False: frozen Swin stages, the legacy cls_logits) are left out.

The groups are named "base", "base_bias", "language", "language_bias" (the LR logged per group).
The schedule: Detectron2's WarmupMultiStepLR (linear warmup from SOLVER.WARMUP_FACTOR over
SOLVER.WARMUP_ITERS, x SOLVER.GAMMA at each step), the steps given by SOLVER.STEP_FRACTIONS of
SOLVER.MAX_ITER when set.
"""
from typing import Any, Dict, List

import torch
from detectron2.solver import build_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping


def is_language_param(name: str) -> bool:
    return ".text." in f".{name}"


def fiber_param_groups(model: torch.nn.Module, cfg) -> List[Dict[str, Any]]:
    groups: Dict[str, Dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lang = is_language_param(name)
        lr = cfg.SOLVER.LANG_LR if lang else cfg.SOLVER.BASE_LR
        wd = cfg.SOLVER.WEIGHT_DECAY
        key = "language" if lang else "base"
        if "bias" in name:
            lr *= cfg.SOLVER.BIAS_LR_FACTOR
            wd = cfg.SOLVER.WEIGHT_DECAY_BIAS
            key += "_bias"
        groups.setdefault(key, {"params": [], "lr": lr, "weight_decay": wd, "name": key})["params"].append(p)
    return list(groups.values())


def schedule_steps(cfg) -> tuple:
    """SOLVER.STEPS, or SOLVER.STEP_FRACTIONS x SOLVER.MAX_ITER (rounded) when fractions are given."""
    fractions = tuple(cfg.SOLVER.STEP_FRACTIONS)
    if not fractions:
        return tuple(cfg.SOLVER.STEPS)
    if any(not 0 < f < 1 for f in fractions) or list(fractions) != sorted(fractions):
        raise ValueError(f"SOLVER.STEP_FRACTIONS must be increasing fractions in (0, 1), got {fractions}")
    return tuple(int(round(f * cfg.SOLVER.MAX_ITER)) for f in fractions)


def build_fiber_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    steps = schedule_steps(cfg)
    if steps != tuple(cfg.SOLVER.STEPS):
        cfg = cfg.clone()
        cfg.defrost()
        cfg.SOLVER.STEPS = steps
    return build_lr_scheduler(cfg, optimizer)


class _FullModelClip:
    """Mixin: clip the global gradient norm over all parameters before each step."""

    clip_norm: float = 1.0

    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        return super().step(closure)


def build_fiber_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    groups = fiber_param_groups(model, cfg)
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "ADAMW":
        cls, kwargs = torch.optim.AdamW, {"betas": (0.9, 0.999)}
    elif name == "SGD":
        cls, kwargs = torch.optim.SGD, {"momentum": cfg.SOLVER.MOMENTUM}
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be ADAMW or SGD, got {cfg.SOLVER.OPTIMIZER!r}")
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        cls = type("FullModelClip" + cls.__name__, (_FullModelClip, cls), {"clip_norm": clip.CLIP_VALUE})
        return cls(groups, lr=cfg.SOLVER.BASE_LR, **kwargs)
    return maybe_add_gradient_clipping(cfg, cls)(groups, lr=cfg.SOLVER.BASE_LR, **kwargs)
