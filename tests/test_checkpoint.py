"""Released-checkpoint conversion: the converter tool, on-the-fly loading, safe loading."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model

from fiber_det.checkpoint import PREFIX_MAP, FiberCheckpointer, load_reference_checkpoint
from helpers import tiny_fiber_cfg

ROOT = Path(__file__).resolve().parents[1]


def to_reference(state):
    """fiber-det names -> the reference's (inverse of PREFIX_MAP), with DDP's "module." prefix."""
    out = {}
    for k, v in state.items():
        for ref, ours in PREFIX_MAP:
            if k.startswith(ours):
                out["module." + ref + k[len(ours):]] = v.clone()
                break
    return out


@pytest.fixture(scope="module")
def reference_file(tmp_path_factory, tiny_text_dir):
    torch.manual_seed(3)
    model = build_model(tiny_fiber_cfg(tiny_text_dir))
    ema = {k: v + 1 for k, v in to_reference(model.state_dict()).items()}
    path = tmp_path_factory.mktemp("ckpt") / "fiber_reference.pth"
    torch.save({"model": to_reference(model.state_dict()), "model_ema": ema, "iteration": 7}, path)
    return path, model.state_dict()


def test_on_the_fly_conversion_loads_every_tensor(reference_file, tiny_text_dir):
    path, want = reference_file
    torch.manual_seed(4)
    model = build_model(tiny_fiber_cfg(tiny_text_dir))
    FiberCheckpointer(model).load(str(path))
    got = model.state_dict()
    for k, v in want.items():
        assert torch.equal(got[k], v), k


def test_converter_tool_and_ema_choice(reference_file, tmp_path):
    path, want = reference_file
    out = tmp_path / "converted.pth"
    res = subprocess.run([sys.executable, str(ROOT / "tools/convert_checkpoint.py"), str(path), str(out), "--ema"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    state = torch.load(out, weights_only=True)["model"]
    k = "head.bias0"
    assert torch.equal(state[k], want[k] + 1)  # model_ema was taken
    converted, unplaced = load_reference_checkpoint(str(path))
    assert unplaced == [] and torch.equal(converted[k], want[k])


def test_unknown_keys_are_listed_and_pickles_refused(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"model": {"module.rpn.head.bias0": torch.zeros(1), "module.something.else": torch.ones(1)}}, path)
    state, unplaced = load_reference_checkpoint(str(path))
    assert list(state) == ["head.bias0"] and unplaced == ["module.something.else"]
    with pytest.raises(ValueError, match="only .pth"):
        FiberCheckpointer(torch.nn.Linear(1, 1))._load_file(str(tmp_path / "model.pkl"))
