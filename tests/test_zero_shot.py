"""Zero-shot evaluation entry point (tools/train_net.py --eval-only): one results JSON with the config,
the checkpoint's sha256 and each dataset's protocol, progress with ETA; and evaluation batching:
the same AP with 1 and 4 images per forward pass on images of different sizes."""
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from fiber_det.data.synthetic import generate_synthetic_dataset

from test_tools import ROOT, TINY, run

CONFIG = ROOT / "configs/quickstart/fiber_tiny.yaml"


def tiny_checkpoint(tmp_path_factory, text_dir) -> tuple:
    """A quickstart-style checkpoint: the tiny config trained 2 iterations on generated data, made once
    per test session (tests/test_eval_odinw.py uses it too). Returns (datasets root, env, checkpoint)."""
    import os

    base = tmp_path_factory.getbasetemp() / "tiny_checkpoint"
    ckpt = base / "run" / "model_final.pth"
    # One thread: the tools' subprocesses stay fast when other work shares the cores.
    env = dict(os.environ, FIBER_DATASETS=str(base / "datasets"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if not ckpt.exists():
        generate_synthetic_dataset(base / "datasets" / "synthetic", num_train=6, num_val=3, image_size=(96, 96),
                                   num_workers=1)
        run([str(ROOT / "tools/train_net.py"), "--config-file", str(CONFIG), "OUTPUT_DIR", str(base / "run"),
             "MODEL.FIBER.TEXT.MODEL_NAME", str(text_dir), "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()"] + TINY, env)
    return base / "datasets", env, ckpt


@pytest.fixture(autouse=True)
def one_thread():
    """In-process evaluation on one thread: two threads crawl when other work shares the 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_text_dir):
    return tiny_checkpoint(tmp_path_factory, tiny_text_dir)


def test_eval_only_writes_one_json_with_protocols_and_hash(checkpoint, tiny_text_dir, tmp_path):
    _, env, ckpt = checkpoint
    out = tmp_path / "eval"
    run([str(ROOT / "tools/train_net.py"), "--eval-only", "--config-file", str(CONFIG), "OUTPUT_DIR", str(out),
         "MODEL.FIBER.TEXT.MODEL_NAME", str(tiny_text_dir), "MODEL.WEIGHTS", str(ckpt),
         "TEST.IMS_PER_BATCH", "2", "TEST.RESULTS_FILE", "zero_shot.json"] + TINY, env)
    payload = json.loads((out / "zero_shot.json").read_text())
    assert payload["checkpoint"]["path"] == str(ckpt)
    assert payload["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert set(payload["results"]) == {"synthetic_val", "synthetic_grounding_val"}
    assert "bbox" in payload["results"]["synthetic_val"]
    protocols = payload["protocols"]
    assert "COCO" in protocols["synthetic_val"] and "AP" in protocols["synthetic_val"]
    assert protocols["synthetic_grounding_val"] == "Flickr30k Entities Recall@1/5/10, any-box, IoU>=0.5"
    assert "TEST:" in payload["config"] and "IMS_PER_BATCH: 2" in payload["config"]
    log = (out / "log.txt").read_text()
    # The progress display (a log line when stderr is not a terminal).
    assert "synthetic_val: 3/3 images" in log and "images/s, ETA" in log


def _mixed_size_val(datasets_root: Path, tmp: Path) -> tuple:
    """The generated val split (96x96) interleaved with images of another size (64x128), in one COCO file."""
    other = generate_synthetic_dataset(tmp / "wide", num_train=0, num_val=3, image_size=(64, 128), seed=1,
                                       num_workers=1)
    square = datasets_root / "synthetic"
    images = tmp / "mixed_images"
    images.mkdir()
    merged = {"images": [], "annotations": [], "categories": None}
    for tag, src in (("sq", square), ("wide", Path(other["root"]))):
        data = json.loads((src / "annotations" / "instances_val.json").read_text())
        merged["categories"] = merged["categories"] or data["categories"]
        assert data["categories"] == merged["categories"]
        offset = 0 if tag == "sq" else 1000
        for img in data["images"]:
            shutil.copy(src / "images" / "val" / img["file_name"], images / f"{tag}_{img['file_name']}")
            merged["images"].append({**img, "id": img["id"] + offset, "file_name": f"{tag}_{img['file_name']}"})
        for ann in data["annotations"]:
            merged["annotations"].append({**ann, "id": ann["id"] + offset, "image_id": ann["image_id"] + offset})
    # Interleave sizes so that every loader batch of 4 mixes them.
    merged["images"].sort(key=lambda im: (im["id"] % 1000, im["id"]))
    path = tmp / "mixed_val.json"
    path.write_text(json.dumps(merged))
    return path, images


def test_batch_size_does_not_change_results(checkpoint, tiny_text_dir, tmp_path):
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from fiber_det.checkpoint import FiberCheckpointer
    from fiber_det.config import add_fiber_config
    from fiber_det.data.datasets import register_coco_detection
    from fiber_det.engine import FiberTrainer
    from fiber_det.evaluation.inference import inference_on_dataset

    datasets_root, _, ckpt = checkpoint
    json_file, image_root = _mixed_size_val(datasets_root, tmp_path)
    name = "test_zero_shot_mixed_sizes_val"
    register_coco_detection(name, str(json_file), str(image_root))
    cfg = get_cfg()
    add_fiber_config(cfg)
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(TINY + ["MODEL.FIBER.TEXT.MODEL_NAME", str(tiny_text_dir), "MODEL.DEVICE", "cpu",
                                "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.FIBER.INFERENCE_TH", "0.0"])
    model = FiberTrainer.build_model(cfg)
    FiberCheckpointer(model).load(str(ckpt))
    try:
        results, outputs = {}, {}
        for bs in (1, 4):
            cfg.TEST.IMS_PER_BATCH = bs
            loader = FiberTrainer.build_test_loader(cfg, name)
            sizes = {tuple(x["image"].shape[-2:]) for x in next(iter(loader))}
            assert bs == 1 or len(sizes) == 2, "each batch of 4 should hold both image sizes"
            evaluator = FiberTrainer.build_evaluator(cfg, name, str(tmp_path / f"bs{bs}"))
            seen = {}

            def record(model_inputs, model_outputs, seen=seen):
                for x, o in zip(model_inputs, model_outputs):
                    seen[x["image_id"]] = o["instances"]

            evaluator.process = (lambda orig: lambda i, o: (record(i, o), orig(i, o)))(evaluator.process)
            results[bs] = inference_on_dataset(model, loader, evaluator, desc=f"bs{bs}")
            outputs[bs] = seen
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert set(outputs[1]) == set(outputs[4]) and len(outputs[1]) == 6
    for image_id, one in outputs[1].items():
        four = outputs[4][image_id]
        assert len(one) == len(four) > 0
        torch.testing.assert_close(four.scores, one.scores, rtol=0, atol=1e-5)
        torch.testing.assert_close(four.pred_boxes.tensor, one.pred_boxes.tensor, rtol=0, atol=1e-3)
    ap1, ap4 = results[1]["bbox"], results[4]["bbox"]
    assert ap1["AP50"] > 0, "the check needs a model that finds something"
    for k in ("AP", "AP50", "AP75"):
        assert ap4[k] == pytest.approx(ap1[k], abs=1e-6), k
