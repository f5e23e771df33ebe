"""Exact resume (acceptance): a run SIGKILLed after a checkpoint and resumed with --resume logs the same
losses, iteration by iteration, as an uninterrupted run; plus the pieces that make it so."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fiber_det.data.build import DeterministicBatchSampler, seeded_rngs
from fiber_det.data.synthetic import generate_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
MAX_ITER, PERIOD = 8, 3  # checkpoints after iterations 2 and 5; the kill comes after the first
OPTS = [
    "MODEL.FIBER.SWIN.EMBED_DIM", "16", "MODEL.FIBER.SWIN.NUM_HEADS", "[1,1,2,2]", "MODEL.FIBER.FPN.OUT_CHANNELS", "32",
    "MODEL.FIBER.HEAD.NUM_CONVS", "1", "MODEL.FIBER.TEXT.MAX_LENGTH", "32",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.RANDOM_FLIP", "horizontal",
    # DropBlock on: the resumed run must also draw the same random masks.
    "MODEL.FIBER.FPN.DROP_BLOCK", "True",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "3", "SOLVER.STEP_FRACTIONS", "(0.75,)",
    "SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.CHECKPOINT_PERIOD", str(PERIOD), "DATASETS.TEST", "()",
    "SOLVER.LOG_PERIOD", "1", "SOLVER.LOG_SMOOTHING_WINDOW", "1", "SEED", "3",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_text_dir):
    root = tmp_path_factory.mktemp("resume")
    generate_synthetic_dataset(root / "datasets" / "synthetic", num_train=5, num_val=1, image_size=(64, 64),
                               num_workers=1)
    env = dict(os.environ, FIBER_DATASETS=str(root / "datasets"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return root, env, str(tiny_text_dir)


def _cmd(out, text, *extra):
    return [sys.executable, str(ROOT / "tools/train_net.py"), *[e for e in extra if e.startswith("--")],
            "--config-file", str(ROOT / "configs/quickstart/fiber_tiny.yaml"), "OUTPUT_DIR", str(out),
            "MODEL.FIBER.TEXT.MODEL_NAME", text, *OPTS, *[e for e in extra if not e.startswith("--")]]


def _losses(path: Path) -> dict:
    """{iteration: losses} from metrics.json; a resumed run appends, so later lines win."""
    out = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "total_loss" in rec:
            out[rec["iteration"]] = {k: v for k, v in rec.items() if k.startswith(("loss_", "total_loss"))}
    return out


def _run(cmd, env):
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_killed_and_resumed_run_matches_uninterrupted(workspace):
    root, env, text = workspace
    full = root / "full"
    _run(_cmd(full, text, "DATALOADER.NUM_WORKERS", "0"), env)

    # The interrupted run uses 2 loader workers and resumes with 1: the data stream must not depend on it.
    cut = root / "cut"
    proc = subprocess.Popen(_cmd(cut, text, "DATALOADER.NUM_WORKERS", "2"), env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (cut / "last_checkpoint").exists():
            assert proc.poll() is None, f"training exited early: {proc.stderr.read()[-3000:]}"
            assert time.time() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its loader workers, for real
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    resumed_from = int((cut / "last_checkpoint").read_text().split("_")[1].split(".")[0])
    assert resumed_from < MAX_ITER - 1, "the run finished before it was killed"
    killed_losses = _losses(cut / "metrics.json")
    assert killed_losses and max(killed_losses) < MAX_ITER - 1

    _run(_cmd(cut, text, "--resume", "DATALOADER.NUM_WORKERS", "1"), env)
    a, b = _losses(full / "metrics.json"), _losses(cut / "metrics.json")
    assert sorted(a) == list(range(MAX_ITER)) and sorted(b) == list(range(MAX_ITER))
    for it in range(MAX_ITER):
        for k, v in a[it].items():
            assert b[it][k] == pytest.approx(v, rel=1e-6, abs=1e-6), (it, k, a[it], b[it])
    # The resumed run went on from the checkpoint, not from scratch.
    log = (cut / "log.txt").read_text()
    assert f"Starting training from iteration {resumed_from + 1}" in log


def test_checkpoint_holds_the_resume_state(workspace):
    root, _, _ = workspace
    path = root / "full" / "model_final.pth"
    if not path.exists():
        pytest.skip("needs the uninterrupted run of the test above")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    trainer = ckpt["trainer"]
    assert trainer["iteration"] == MAX_ITER - 1 and ckpt["iteration"] == MAX_ITER - 1
    assert {"optimizer", "grad_scaler", "seed"} <= set(trainer["_trainer"])
    assert trainer["hooks"]["LRScheduler"]["last_epoch"] == MAX_ITER
    (rank0,) = trainer["ranks"]
    assert {"python", "numpy", "torch"} <= set(rank0["rng"])
    assert rank0["data_loader"]["loader"]["seed"] == 3
    assert not list((root / "full").glob(".*tmp*"))  # atomic writes leave no temporary files



def test_batch_sampler_continues_from_any_state():
    from detectron2.data.samplers import TrainingSampler

    sampler = TrainingSampler(7, seed=0)
    for groups in (None, [0, 1, 1, 0, 1, 0, 0]):
        for world in (1, 2):
            s = DeterministicBatchSampler(sampler, batch_size=2, group_ids=groups, rank=world - 1, world_size=world)
            stream = s.batches(s.initial_state(5))
            reference = [next(stream) for _ in range(12)]
            for k in (0, 4, 9):
                again = s.batches(reference[k][1])
                assert [next(again)[0] for _ in range(12 - k - 1)] == [b for b, _ in reference[k + 1:]]
            positions = [pos for b, _ in reference for _, _, pos in b]
            assert all(p % world == world - 1 for p in positions)


def test_seeded_rngs_restore_the_global_streams():
    import random

    import numpy as np

    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    expect = (torch.rand(1).item(), random.random(), np.random.rand())
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    with seeded_rngs(123):
        inside = (torch.rand(1).item(), random.random(), np.random.rand())
    assert (torch.rand(1).item(), random.random(), np.random.rand()) == expect
    with seeded_rngs(123):
        assert (torch.rand(1).item(), random.random(), np.random.rand()) == inside
