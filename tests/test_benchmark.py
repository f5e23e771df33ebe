"""tools/benchmark.py runs every task on a tiny model and prints its tables."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["MODEL.FIBER.SWIN.EMBED_DIM", "16", "MODEL.FIBER.SWIN.NUM_HEADS", "[1,1,2,2]",
        "MODEL.FIBER.FPN.OUT_CHANNELS", "32", "MODEL.FIBER.HEAD.NUM_CONVS", "1", "MODEL.FIBER.TEXT.MAX_LENGTH", "32"]


def bench(task, text_dir, *extra):
    # `extra` goes before a single-valued flag: a trailing nargs="+" option would swallow the overrides.
    cmd = [sys.executable, str(ROOT / "tools/benchmark.py"), "--config-file",
           str(ROOT / "configs/quickstart/fiber_tiny.yaml"), "--task", task, *extra, "--iters", "2",
           "MODEL.FIBER.TEXT.MODEL_NAME", str(text_dir), *TINY]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def test_backbone_modes_report_time_and_memory(tiny_text_dir):
    out = bench("backbone", tiny_text_dir, "--size", "70", "100", "--text-tokens", "12")
    rows = [line for line in out.splitlines() if line.startswith("| ") and " s |" in line]
    assert [r.split("|")[1].strip() for r in rows] == ["forward", "train", "train-checkpointing"]
    for r in rows:
        peak = float(r.split("|")[3].split()[0])
        assert peak > 0.1  # GiB: the process holds torch and the model


def test_head_and_assignment_tables(tiny_text_dir):
    out = bench("head", tiny_text_dir, "--size", "64", "96")
    assert "head (1 DyConv blocks" in out and "post-processing" in out
    out = bench("assign", tiny_text_dir, "--size", "64", "96", "--num-gt", "1", "7")
    rows = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 7 |")]
    assert len(rows) == 2 and all(" ms" in r for r in rows)
