"""AdamW with the reference's parameter groups (ARCHITECTURE.md section 12).

Rules, applied in order to every trainable parameter name:
- names under the text encoder (``backbone.text.``, incl. its cross-attention) use SOLVER.LANG_LR,
  everything else SOLVER.BASE_LR;
- names containing "bias" get SOLVER.BIAS_LR_FACTOR x LR and SOLVER.WEIGHT_DECAY_BIAS. Like the
  reference this is a substring match, so ``bias_lang``, ``bias0`` and Swin's
  ``relative_position_bias_table`` count as biases;
- norm weights and the fusion gates (alpha_i2t, alpha_t2i) are treated as ordinary weights
  (weight decay applies), as in the reference.
"""
from typing import Any, Dict, List

import torch
from detectron2.solver.build import maybe_add_gradient_clipping


def fiber_param_groups(model: torch.nn.Module, cfg) -> List[Dict[str, Any]]:
    groups: Dict[tuple, List[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr = cfg.SOLVER.LANG_LR if ".text." in f".{name}" else cfg.SOLVER.BASE_LR
        wd = cfg.SOLVER.WEIGHT_DECAY
        if "bias" in name:
            lr *= cfg.SOLVER.BIAS_LR_FACTOR
            wd = cfg.SOLVER.WEIGHT_DECAY_BIAS
        groups.setdefault((lr, wd), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


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
