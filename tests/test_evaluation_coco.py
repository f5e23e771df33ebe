"""COCO evaluation: the faster-coco-eval backend gives pycocotools' numbers on real COCO annotations."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from fiber_det.config import add_fiber_config
from fiber_det.data.datasets import register_coco_detection
from fiber_det.evaluation import build_evaluator
from fiber_det.evaluation.coco import FiberCOCOEvaluator, resolve_coco_eval_backend

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "icevision_samples"
ANNOTATIONS = SAMPLES / "annotations_relpath.json"
DATASET = "test_coco_eval_icevision"

pytest.importorskip("faster_coco_eval")


@pytest.fixture(scope="module")
def coco_sample():
    if not ANNOTATIONS.is_file():
        pytest.skip(f"{ANNOTATIONS} not found")
    if DATASET not in DatasetCatalog.list():
        register_coco_detection(DATASET, str(ANNOTATIONS), str(SAMPLES))
    DatasetCatalog.get(DATASET)  # loading sets the category id map
    data = json.loads(ANNOTATIONS.read_text())
    return data, MetadataCatalog.get(DATASET).thing_dataset_id_to_contiguous_id


def perturbed_outputs(data, id_map, seed=0):
    """Model-style outputs: every GT box jittered (some beyond IoU 0.5) with a random score, a few
    false positives per image, and all boxes of one present class never predicted."""
    rng = np.random.default_rng(seed)
    present = sorted({a["category_id"] for a in data["annotations"]})
    skipped = present[0]  # a class with ground truth but no detection
    inputs, outputs = [], []
    for img in data["images"]:
        boxes, scores, classes = [], [], []
        for a in data["annotations"]:
            if a["image_id"] != img["id"] or a["category_id"] == skipped:
                continue
            x, y, w, h = a["bbox"]
            dx, dy = rng.normal(0, 0.15, 2) * (w, h)
            sw, sh = np.exp(rng.normal(0, 0.2, 2))
            boxes.append([x + dx, y + dy, x + dx + w * sw, y + dy + h * sh])
            scores.append(rng.uniform(0.05, 1.0))
            classes.append(id_map[a["category_id"]])
        for _ in range(3):  # false positives, some in classes absent from the image
            x, y = rng.uniform(0, img["width"] - 20), rng.uniform(0, img["height"] - 20)
            boxes.append([x, y, x + rng.uniform(5, 150), y + rng.uniform(5, 150)])
            scores.append(rng.uniform(0.05, 1.0))
            classes.append(id_map[int(rng.choice(present))])
        inst = Instances((img["height"], img["width"]))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.scores = torch.tensor(scores, dtype=torch.float32)
        inst.pred_classes = torch.tensor(classes, dtype=torch.long)
        inputs.append({"image_id": img["id"], "height": img["height"], "width": img["width"]})
        outputs.append({"instances": inst})
    return inputs, outputs, skipped


def run(backend, inputs, outputs):
    evaluator = FiberCOCOEvaluator(DATASET, backend=backend, distributed=False)
    evaluator.reset()
    evaluator.process(inputs, outputs)
    return evaluator, evaluator.evaluate()


@pytest.mark.parametrize("seed", [0, 1])
def test_faster_coco_eval_equals_pycocotools(coco_sample, seed, monkeypatch):
    import faster_coco_eval
    from pycocotools.cocoeval import COCOeval

    used = []

    class Recorded(faster_coco_eval.COCOeval_faster):
        def evaluate(self):
            used.append(type(self).__mro__[1])
            return super().evaluate()

    monkeypatch.setattr(faster_coco_eval, "COCOeval_faster", Recorded)
    data, id_map = coco_sample
    assert len(data["images"]) == 6 and len(data["annotations"]) == 36
    inputs, outputs, skipped = perturbed_outputs(data, id_map, seed)
    fast, fast_results = run("faster_coco_eval", inputs, outputs)
    assert used and not issubclass(used[0], COCOeval)  # the C++ backend did the evaluation
    ref, ref_results = run("pycocotools", inputs, outputs)

    assert len(fast.stats["bbox"]) == 12
    np.testing.assert_allclose(fast.stats["bbox"], ref.stats["bbox"], rtol=0, atol=1e-6)
    assert 0.05 < ref.stats["bbox"][0] < 0.95  # a non-trivial AP: the jitter misses some boxes
    # The derived table (x100) and per-category AP agree too; the skipped class scores 0.
    assert fast_results["bbox"].keys() == ref_results["bbox"].keys()
    for key, value in ref_results["bbox"].items():
        np.testing.assert_allclose(fast_results["bbox"][key], value, rtol=0, atol=1e-4, err_msg=key)
    classes = MetadataCatalog.get(DATASET).thing_classes
    assert ref_results["bbox"][f"AP-{classes[id_map[skipped]]}"] == 0.0
    assert "faster_coco_eval" in fast.protocol and "100 detections/image" in fast.protocol


def test_backend_choice():
    assert resolve_coco_eval_backend("auto") == "faster_coco_eval"
    assert resolve_coco_eval_backend("pycocotools") == "pycocotools"
    with pytest.raises(ValueError, match="TEST.COCO_EVAL_BACKEND"):
        resolve_coco_eval_backend("detectron2")


def test_build_evaluator_coco_branch(coco_sample, tmp_path):
    from detectron2.config import get_cfg

    cfg = add_fiber_config(get_cfg())
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.TEST.COCO_EVAL_BACKEND = "pycocotools"
    evaluator = build_evaluator(cfg, DATASET)
    assert isinstance(evaluator, FiberCOCOEvaluator) and evaluator.backend == "pycocotools"
    assert evaluator.protocol.endswith("backend pycocotools")
