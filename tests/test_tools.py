"""The command-line tools end to end on a tiny generated dataset: train, --eval-only, --resume, demo."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fiber_det.data.synthetic import generate_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "MODEL.FIBER.SWIN.EMBED_DIM", "16", "MODEL.FIBER.SWIN.NUM_HEADS", "[1,1,2,2]",
    "MODEL.FIBER.FPN.OUT_CHANNELS", "32", "MODEL.FIBER.HEAD.NUM_CONVS", "1",
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "96",
    "INPUT.MAX_SIZE_TEST", "96", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.STEPS", "()", "DATALOADER.NUM_WORKERS", "0", "SOLVER.CHECKPOINT_PERIOD", "2",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_text_dir):
    root = tmp_path_factory.mktemp("tools")
    generate_synthetic_dataset(root / "datasets" / "synthetic", num_train=6, num_val=2, image_size=(96, 96),
                               num_workers=1)
    env = dict(os.environ, FIBER_DATASETS=str(root / "datasets"), HF_HUB_OFFLINE="1")
    return root, env, str(tiny_text_dir)


def run(args, env):
    res = subprocess.run([sys.executable] + args, capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def test_train_eval_resume_and_demo(workspace):
    root, env, text = workspace
    out = root / "run"
    cfg = ["--config-file", str(ROOT / "configs/quickstart/fiber_tiny.yaml"), "OUTPUT_DIR", str(out),
           "MODEL.FIBER.TEXT.MODEL_NAME", text] + TINY
    run([str(ROOT / "tools/train_net.py")] + cfg + ["SOLVER.MAX_ITER", "2"], env)
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert {"synthetic_val/box_AP", "synthetic_val/box_AP50", "synthetic_grounding_val/grounding/any-box_R@1"} <= set(summary)
    assert (out / "model_final.pth").exists()

    # --resume continues from the last checkpoint to the new MAX_ITER.
    run([str(ROOT / "tools/train_net.py"), "--resume"] + cfg + ["SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "0"], env)
    assert "iter: 3" in (out / "log.txt").read_text()

    evald = root / "eval"
    run([str(ROOT / "tools/train_net.py"), "--eval-only"] + cfg[:-2] + ["OUTPUT_DIR", str(evald),
        "MODEL.WEIGHTS", str(out / "model_final.pth")], env)
    assert "synthetic_val/box_AP50" in json.loads((evald / "results.json").read_text())["summary"]

    image = root / "datasets/synthetic/images/val/000000.png"
    demo = root / "demo"
    res = run([str(ROOT / "tools/demo.py"), "--config-file", str(ROOT / "configs/quickstart/fiber_tiny.yaml"),
               "--input", str(image), "--prompt", "circle. square. triangle", "--output", str(demo),
               "--confidence-threshold", "0.0", "MODEL.WEIGHTS", str(out / "model_final.pth"),
               "MODEL.FIBER.TEXT.MODEL_NAME", text] + TINY, env)
    from PIL import Image

    png = demo / "000000.png"
    assert png.exists() and Image.open(png).size == (96, 96)
    assert "detections" in res.stdout
