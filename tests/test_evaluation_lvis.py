"""LVIS evaluation: standard AP equals the lvis package's LVISEval; fixed AP's per-class cap."""
import json

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from fiber_det.data.datasets.lvis import register_lvis_detection
from fiber_det.evaluation.lvis import LVIS_METRICS, LVISDetectionEvaluator, top_k_per_class

lvis = pytest.importorskip("lvis")

FREQUENCIES = ("f", "c", "r", "f", "c", "r", "f")
# Category ids are sparse and unsorted in the file: the contiguous index follows sorted ids.
CATEGORY_IDS = (7, 3, 12, 5, 20, 9, 1)


def make_lvis_fixture(path, seed=0, num_images=6):
    """A small LVIS-format file: r/c/f categories, per-image neg_category_ids and
    not_exhaustive_category_ids, a few boxes per image."""
    rng = np.random.default_rng(seed)
    categories = [{"id": cid, "name": f"thing_{cid}", "synonyms": [f"thing_{cid}"], "frequency": f,
                   "image_count": 0, "instance_count": 0}
                  for cid, f in zip(CATEGORY_IDS, FREQUENCIES)]
    images, annotations = [], []
    for i in range(num_images):
        img_id = 100 + i
        w, h = int(rng.integers(200, 400)), int(rng.integers(200, 400))
        present = sorted(rng.choice(CATEGORY_IDS, size=3, replace=False).tolist())
        absent = [c for c in CATEGORY_IDS if c not in present]
        neg = sorted(rng.choice(absent, size=2, replace=False).tolist())
        images.append({"id": img_id, "width": w, "height": h, "coco_url": f"http://x/val2017/{img_id:012d}.jpg",
                       "neg_category_ids": neg, "not_exhaustive_category_ids": present[:1]})
        for cid in present:
            for _ in range(int(rng.integers(1, 4))):
                bw, bh = rng.uniform(8, 120, 2)
                x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
                annotations.append({"id": len(annotations) + 1, "image_id": img_id, "category_id": cid,
                                    "bbox": [x, y, bw, bh], "area": bw * bh})
    data = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(data))
    return data


def random_detections(data, seed=0, per_image=12):
    """Per image: jittered copies of its boxes and random boxes of any class, random scores (some
    tied), a zero-width box; contiguous class indices in sorted-id order."""
    rng = np.random.default_rng(seed)
    contiguous = {cid: i for i, cid in enumerate(sorted(CATEGORY_IDS))}
    inputs, outputs = [], []
    for img in data["images"]:
        boxes, classes = [], []
        for a in data["annotations"]:
            if a["image_id"] == img["id"]:
                x, y, w, h = a["bbox"]
                d = rng.normal(0, 0.1, 4) * (w, h, w, h)
                boxes.append([x + d[0], y + d[1], x + w + d[2], y + h + d[3]])
                classes.append(contiguous[a["category_id"]])
        while len(boxes) < per_image:
            x, y = rng.uniform(0, img["width"] - 50), rng.uniform(0, img["height"] - 50)
            boxes.append([x, y, x + rng.uniform(5, 50), y + rng.uniform(5, 50)])
            classes.append(int(rng.integers(len(CATEGORY_IDS))))
        boxes.append([10.0, 10.0, 10.0, 40.0])  # zero width
        classes.append(classes[0])
        scores = rng.choice(np.linspace(0.05, 1.0, 40), size=len(boxes))  # ties happen
        inst = Instances((img["height"], img["width"]))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.scores = torch.tensor(scores, dtype=torch.float32)
        inst.pred_classes = torch.tensor(classes)
        inputs.append({"image_id": img["id"]})
        outputs.append({"instances": inst})
    return inputs, outputs


def as_lvis_results(inputs, outputs):
    """The same detections as plain LVIS result dicts, in process order."""
    ids = sorted(CATEGORY_IDS)
    out = []
    for x, o in zip(inputs, outputs):
        inst = o["instances"]
        for box, score, c in zip(inst.pred_boxes.tensor.double().tolist(), inst.scores.double().tolist(),
                                 inst.pred_classes.tolist()):
            out.append({"image_id": x["image_id"], "category_id": ids[c],
                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": score})
    return out


def lvis_package_ap(json_file, results, max_dets):
    gt = lvis.LVIS(str(json_file))
    ev = lvis.LVISEval(gt, lvis.LVISResults(gt, [dict(r) for r in results], max_dets=max_dets), iou_type="bbox")
    ev.params.max_dets = max_dets
    ev.run()
    return {m: ev.results[m] * 100 if ev.results[m] >= 0 else float("nan") for m in LVIS_METRICS}


@pytest.fixture()
def lvis_dataset(tmp_path):
    json_file = tmp_path / "lvis_fixture.json"
    data = make_lvis_fixture(json_file)
    name = f"test_lvis_fixture_{tmp_path.name}"
    register_lvis_detection(name, str(json_file), str(tmp_path), prompt_style="sampled",
                            thing_classes=[f"thing_{c}" for c in sorted(CATEGORY_IDS)])
    yield name, json_file, data
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def evaluate(name, inputs, outputs, **kwargs):
    evaluator = LVISDetectionEvaluator(name, distributed=False, **kwargs)
    evaluator.process(inputs, outputs)
    return evaluator, evaluator.evaluate()


def assert_same(ours, theirs):
    assert list(ours) == list(LVIS_METRICS)
    np.testing.assert_allclose([ours[m] for m in LVIS_METRICS], [theirs[m] for m in LVIS_METRICS],
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("max_dets", [300, 5])
def test_standard_ap_equals_lvis_package(lvis_dataset, max_dets):
    name, json_file, data = lvis_dataset
    # The loader maps sorted category ids to contiguous indices, as the evaluator assumes.
    loaded = DatasetCatalog.get(name)
    assert {a["category_id"] for d in loaded for a in d["annotations"]} <= set(range(len(CATEGORY_IDS)))
    inputs, outputs = random_detections(data)
    evaluator, results = evaluate(name, inputs, outputs, protocols=("standard",), max_dets_per_image=max_dets)
    assert list(results) == ["bbox"]
    expected = lvis_package_ap(json_file, as_lvis_results(inputs, outputs), max_dets)
    assert_same(results["bbox"], expected)
    assert 0 < results["bbox"]["AP"] < 100
    assert all(np.isfinite(results["bbox"][k]) for k in ("APr", "APc", "APf"))
    assert f"{max_dets} detections/image" in evaluator.protocol


def test_fixed_ap_with_a_large_cap_is_lvis_eval_without_per_image_cap(lvis_dataset):
    name, json_file, data = lvis_dataset
    inputs, outputs = random_detections(data, seed=1)
    evaluator, results = evaluate(name, inputs, outputs, max_dets_per_image=3)
    assert list(results) == ["bbox", "bbox_fixed"]
    kept = [r for r in as_lvis_results(inputs, outputs) if r["bbox"][2] > 0 and r["bbox"][3] > 0]
    assert_same(results["bbox_fixed"], lvis_package_ap(json_file, kept, -1))
    assert_same(results["bbox"], lvis_package_ap(json_file, as_lvis_results(inputs, outputs), 3))
    # Here the per-image cap of 3 loses true positives that fixed AP keeps.
    assert results["bbox_fixed"]["AP"] > results["bbox"]["AP"]
    assert "bbox_fixed" in evaluator.protocols and "top 10000 detections/class" in evaluator.protocols["bbox_fixed"]


def test_fixed_ap_cap_is_taken_before_federated_filtering(tmp_path):
    """Class A's best detections lie on an image where A is neither annotated nor negative: LVISEval
    ignores them, but with a per-class cap of 2 they take both slots and A's true positive is lost."""
    images = [
        {"id": 1, "width": 100, "height": 100, "coco_url": "x/val2017/1.jpg", "neg_category_ids": [],
         "not_exhaustive_category_ids": []},
        {"id": 2, "width": 100, "height": 100, "coco_url": "x/val2017/2.jpg", "neg_category_ids": [2],
         "not_exhaustive_category_ids": []},
    ]
    categories = [{"id": 1, "name": "a", "synonyms": ["a"], "frequency": "f"},
                  {"id": 2, "name": "b", "synonyms": ["b"], "frequency": "r"}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600},
                   {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 30, 30], "area": 900}]
    json_file = tmp_path / "tiny_lvis.json"
    json_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    name = "test_lvis_fixed_cap"
    MetadataCatalog.get(name).set(json_file=str(json_file), evaluator_type="lvis")

    def inst(boxes, scores, classes):
        i = Instances((100, 100))
        i.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        i.scores = torch.tensor(scores)
        i.pred_classes = torch.tensor(classes)
        return {"instances": i}

    inputs = [{"image_id": 1}, {"image_id": 2}]
    outputs = [
        inst([[10, 10, 50, 50], [50, 50, 80, 80]], [0.5, 0.9], [0, 1]),           # TP for a (0.5) and b
        inst([[0, 0, 20, 20], [30, 30, 60, 60]], [0.8, 0.7], [0, 0]),             # a on image 2: filtered
    ]
    try:
        _, small = evaluate(name, inputs, outputs, protocols=("fixed",), fixed_ap_dets_per_class=2)
        _, large = evaluate(name, inputs, outputs, protocols=("fixed",), fixed_ap_dets_per_class=3)
    finally:
        MetadataCatalog.remove(name)
    # Cap 3: a's TP is kept and the image-2 detections are filtered, so a's AP is 100; b's is 100.
    assert large["bbox_fixed"]["APf"] == pytest.approx(100.0)
    assert large["bbox_fixed"]["AP"] == pytest.approx(100.0)
    # Cap 2: a keeps only its two image-2 detections (scores 0.8, 0.7), both dropped later: AP(a) = 0.
    assert small["bbox_fixed"]["APf"] == pytest.approx(0.0)
    assert small["bbox_fixed"]["APr"] == pytest.approx(100.0)
    assert small["bbox_fixed"]["AP"] == pytest.approx(50.0)


def test_top_k_per_class_is_stable_and_per_class():
    # columns: image, category, x, y, w, h, score
    dets = np.array([[1, 5, 0, 0, 1, 1, 0.3], [1, 2, 0, 0, 1, 1, 0.9], [2, 5, 0, 0, 1, 1, 0.3],
                     [2, 5, 0, 0, 1, 1, 0.8], [3, 2, 0, 0, 1, 1, 0.1], [3, 5, 0, 0, 1, 1, 0.3]])
    kept = top_k_per_class(dets, 2)
    # class 5: 0.8 then the first 0.3 (row 0); class 2: both; original row order kept.
    np.testing.assert_array_equal(kept, dets[[0, 1, 3, 4]])


def test_build_evaluator_lvis_branch(lvis_dataset, tmp_path):
    from detectron2.config import get_cfg

    from fiber_det.config import add_fiber_config
    from fiber_det.evaluation import build_evaluator

    name, _, _ = lvis_dataset
    cfg = add_fiber_config(get_cfg())
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.TEST.LVIS_PROTOCOLS = ("fixed",)
    cfg.TEST.LVIS_FIXED_AP_DETS_PER_CLASS = 50
    evaluator = build_evaluator(cfg, name)
    assert isinstance(evaluator, LVISDetectionEvaluator)
    assert list(evaluator.protocols) == ["bbox_fixed"] and evaluator.fixed_ap_dets_per_class == 50
    with pytest.raises(ValueError, match="TEST.LVIS_PROTOCOLS"):
        LVISDetectionEvaluator(name, protocols=("pooled",))
