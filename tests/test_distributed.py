"""Distributed training (acceptance): two CPU processes over gloo, batch 1 each, make the same
parameter update as one process with batch 2; and the loss normalisers every worker must reach."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fiber_det.data.synthetic import generate_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
OPTS = [
    "MODEL.FIBER.SWIN.EMBED_DIM", "16", "MODEL.FIBER.SWIN.NUM_HEADS", "[1,1,2,2]", "MODEL.FIBER.FPN.OUT_CHANNELS", "32",
    "MODEL.FIBER.HEAD.NUM_CONVS", "1", "MODEL.FIBER.TEXT.MAX_LENGTH", "32",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
    # Nothing random in the forward pass: one process with batch 2 and two with batch 1 must agree.
    "MODEL.FIBER.FPN.DROP_BLOCK", "False", "MODEL.FIBER.SWIN.DROP_PATH_RATE", "0.0",
    # Plain SGD, so the update is the averaged gradient itself.
    "SOLVER.OPTIMIZER", "SGD", "SOLVER.MOMENTUM", "0.0", "SOLVER.WEIGHT_DECAY", "0.0", "SOLVER.BASE_LR", "0.5",
    "SOLVER.LANG_LR", "0.5", "SOLVER.CLIP_GRADIENTS.ENABLED", "False", "SOLVER.WARMUP_ITERS", "0",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "1", "SOLVER.CHECKPOINT_PERIOD", "100",
    "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "0", "SEED", "5",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_text_dir):
    root = tmp_path_factory.mktemp("dist")
    generate_synthetic_dataset(root / "datasets" / "synthetic", num_train=4, num_val=1, image_size=(64, 64),
                               num_workers=1)
    text = root / "text"
    shutil.copytree(tiny_text_dir, text)
    config = json.loads((text / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (text / "config.json").write_text(json.dumps(config))
    env = dict(os.environ, FIBER_DATASETS=str(root / "datasets"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return root, env, str(text)


def _train(out, text, env, num_procs):
    cmd = [sys.executable, str(ROOT / "tools/train_net.py"), "--num-gpus", str(num_procs), "--dist-url", "auto",
           "--config-file", str(ROOT / "configs/quickstart/fiber_tiny.yaml"), "OUTPUT_DIR", str(out),
           "MODEL.FIBER.TEXT.MODEL_NAME", text, *OPTS]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]


def _initial_weights(text):
    """The weights train_net starts from: default_setup seeds with SEED + rank, then the model is built."""
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.utils.env import seed_all_rng

    from fiber_det.config import add_fiber_config

    cfg = get_cfg()
    add_fiber_config(cfg)
    cfg.merge_from_file(str(ROOT / "configs/quickstart/fiber_tiny.yaml"))
    cfg.merge_from_list(["MODEL.FIBER.TEXT.MODEL_NAME", text, *OPTS])
    seed_all_rng(5)
    return build_model(cfg).state_dict()


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch built without gloo")
def test_two_processes_match_one_with_the_whole_batch(workspace):
    root, env, text = workspace
    one = _train(root / "one", text, env, 1)
    two = _train(root / "two", text, env, 2)
    init = _initial_weights(text)
    assert torch.equal(init["head.cls_logits.weight"], one["head.cls_logits.weight"])  # frozen: init reproduced
    moved = 0
    for k, v in init.items():
        if not v.is_floating_point():
            continue
        step_one, step_two = one[k] - v, two[k] - v
        assert torch.allclose(step_one, step_two, atol=1e-5, rtol=0), (k, (step_one - step_two).abs().max())
        moved += int(step_one.abs().max() > 1e-4)
    assert moved > 50  # a real update: most tensors changed
    log = (root / "two" / "log.txt").read_text()
    assert "World size: 2" in log


def test_loss_normalisers_are_reached_without_positives(monkeypatch):
    """A worker without positives still joins the normalisers' collective (else DDP would hang)."""
    from fiber_det.modeling import losses

    calls = []
    monkeypatch.setattr(losses.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(losses.comm, "all_gather", lambda x: calls.append(x) or [x, [4.0, 2.0]])

    class Coder:
        def decode(self, d, a):
            return a

    out = losses.fiber_losses(
        token_logits=torch.zeros(1, 3, 4, requires_grad=True), box_deltas=torch.zeros(1, 3, 4, requires_grad=True),
        centerness=torch.zeros(1, 3, requires_grad=True), anchors=torch.tensor([[0.0, 0, 4, 4]] * 3),
        matched=torch.full((1, 3), -1), gt_boxes=[torch.zeros(0, 4)], gt_positive_maps=[torch.zeros(0, 4, dtype=torch.bool)],
        text_mask=torch.ones(1, 4, dtype=torch.bool), box_coder=Coder(), no_object_token=-1,
    )
    assert calls == [[0.0, 0.0]]
    # Normalised by the positives averaged over the two workers: (0 + 4) / 2.
    expect = losses.token_sigmoid_focal_loss(torch.zeros(1, 3, 4), torch.zeros(1, 3, 4), torch.ones(1, 4, dtype=torch.bool)) / 2
    assert out["loss_token"].item() == pytest.approx(expect.item())
