"""Phrase-grounding Recall@k and referring-expression precision@1 on hand-made cases.

Boxes in predictions are XYXY; boxes in dataset dicts are XYWH (as the loaders write them).
Every expected number is worked out by hand in the comments.
"""
import json

import pytest
import torch

import fiber_det  # noqa: F401  (applies the detectron2 compatibility shims before detectron2 is imported)
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils import comm

from fiber_det.evaluation import (
    GroundingRecallEvaluator,
    RefExpEvaluator,
    first_hit_ranks,
    recall_at_k,
    refexp_precision,
    top1_overlaps,
    union_boxes,
)


def _ann(ann_id, xywh, phrase_ids):
    return {
        "id": ann_id, "bbox": list(xywh), "bbox_mode": BoxMode.XYWH_ABS, "tokens_positive": [],
        "phrase_ids": list(phrase_ids), "iscrowd": 0, "category_id": 0,
    }


def _entry(image_id, num_phrases, annotations):
    return {
        "file_name": f"{image_id}.jpg", "height": 300, "width": 300, "image_id": image_id,
        "caption": "unused by the metric", "phrases": [{"spans": [[0, 1]]} for _ in range(num_phrases)],
        "annotations": annotations, "task": "grounding",
    }


def _output(boxes, scores, classes):
    inst = Instances((300, 300))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    return {"instances": inst}


# ---------------------------------------------------------------------------------------------
# Grounding dataset.
# Image 1: phrases 0 "a man", 1 "he" (same box M), 2 "two trees" (boxes T1, T2), 3 "the sky" (no box).
#   M = [10, 10, 50, 90], T1 = [100, 0, 140, 100], T2 = [160, 0, 200, 100] (XYXY);
#   union of T1, T2 = U = [100, 0, 200, 100], area 10000; IoU(T1 or T2, U) = 4000 / 10000 = 0.4.
# Image 2: phrases 0 "a cat" [0, 0, 10, 10], 1 "a hat" [20, 20, 30, 30].
# Image 3: phrase 0 "a bird" [0, 0, 5, 5]; the model returns nothing for it.
# ---------------------------------------------------------------------------------------------
GROUNDING_DICTS = [
    _entry(1, 4, [_ann(1, [10, 10, 40, 80], [0, 1]), _ann(2, [100, 0, 40, 100], [2]), _ann(3, [160, 0, 40, 100], [2])]),
    _entry(2, 2, [_ann(4, [0, 0, 10, 10], [0]), _ann(5, [20, 20, 10, 10], [1])]),
    _entry(3, 1, [_ann(6, [0, 0, 5, 5], [0])]),
]

GROUNDING_OUTPUTS = {
    1: _output(
        [
            [10, 10, 50, 90],    # phrase 0, = M, score .9 -> phrase 0 rank 0 (hit). Counts for phrase 0 only,
            [200, 200, 240, 280],  # phrase 1, far, score .8, first in the list among the tie -> rank 0, miss
            [10, 10, 50, 90],    # phrase 1, = M, score .8 (tie, after the miss: stable order) -> rank 1, hit
            [100, 0, 200, 100],  # phrase 2, = U, score .6 -> rank 0: any-box miss (IoU .4), merged hit (IoU 1)
            [160, 0, 200, 100],  # phrase 2, = T2, score .2 -> rank 1: any-box hit, merged miss (IoU .4)
        ],
        [0.9, 0.8, 0.8, 0.6, 0.2],
        [0, 1, 1, 2, 2],
    ),
    2: _output(
        [
            [0, 0, 10, 20],    # phrase 0: inter 100 / union 200 = IoU 0.5 exactly -> hit (inclusive)
            [20, 20, 30, 41],  # phrase 1: 100 / 210 = 0.476 -> miss; the "+1" convention would give
        ],                     #   (11*11) / (11*22) = 0.5, a hit: this checks that it is not used
        [0.7, 0.7],
        [0, 1],
    ),
    3: _output([], [], []),
}
# first-hit ranks per evaluated phrase (image 1: phrases 0, 1, 2; image 2: 0, 1; image 3: 0):
#   any-box:    [0, 1, 1, 0, -1, -1] -> R@1 = 2/6 = 33.33, R@5 = R@10 = 4/6 = 66.67
#   merged-box: [0, 1, 0, 0, -1, -1] -> R@1 = 3/6 = 50.00, R@5 = R@10 = 4/6 = 66.67
# phrase 3 of image 1 has no box: skipped, 1 phrase without box.


def _run(evaluator, image_ids=(1, 2, 3)):
    evaluator.reset()
    for image_id in image_ids:
        evaluator.process([{"image_id": image_id}], [GROUNDING_OUTPUTS[image_id]])
    return evaluator.evaluate()


@pytest.mark.parametrize("distributed", [False, True])  # True: the comm path, in a single process
def test_grounding_recall_any_box(distributed):
    ev = GroundingRecallEvaluator("toy", distributed=distributed, dataset_dicts=GROUNDING_DICTS)
    res = _run(ev)["grounding/any-box"]
    assert res["R@1"] == pytest.approx(100 * 2 / 6)
    assert res["R@5"] == pytest.approx(100 * 4 / 6)
    assert res["R@10"] == pytest.approx(100 * 4 / 6)
    assert res["num_phrases"] == 6
    assert res["num_phrases_without_box"] == 1
    assert res["num_images"] == 3


def test_grounding_recall_merged_box_changes_result():
    ev = GroundingRecallEvaluator("toy", box_mode="merged", dataset_dicts=GROUNDING_DICTS)
    res = _run(ev)["grounding/merged-box"]
    assert res["R@1"] == pytest.approx(50.0)
    assert res["R@5"] == pytest.approx(100 * 4 / 6)
    assert res["num_phrases"] == 6


def test_grounding_values_are_numbers_for_detectron2_hooks():
    # EvalHook and print_csv_format need float-convertible values; the protocol lives in the task key.
    from detectron2.evaluation import print_csv_format
    from detectron2.evaluation.testing import flatten_results_dict

    res = _run(GroundingRecallEvaluator("toy", dataset_dicts=GROUNDING_DICTS))
    flat = flatten_results_dict(res)
    assert all(isinstance(float(v), float) for v in flat.values())
    print_csv_format(res)


def test_grounding_ties_keep_list_order():
    # One phrase, two predictions with equal scores; the first in the list ranks first.
    gt, gt_phrase = torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0])
    scores, phrases = torch.tensor([0.5, 0.5]), torch.tensor([0, 0])
    miss_first = torch.tensor([[50.0, 50, 60, 60], [0, 0, 10, 10]])
    hit_first = miss_first.flip(0)
    assert first_hit_ranks(miss_first, scores, phrases, gt, gt_phrase, 1).tolist() == [1]
    assert first_hit_ranks(hit_first, scores, phrases, gt, gt_phrase, 1).tolist() == [0]


def test_first_hit_ranks_ranks_by_score_within_phrase():
    # Predictions of phrase 1 interleaved with phrase 0: scores .1 (hit), .9 (miss), .5 (miss) for
    # phrase 1 -> by score: .9, .5, .1 -> the hit has rank 2. Phrase 0: its only box hits -> rank 0.
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    gt_phrase = torch.tensor([0, 1])
    boxes = torch.tensor([[20.0, 20, 30, 30], [0, 0, 10, 10], [90, 90, 99, 99], [80, 80, 90, 90]])
    scores = torch.tensor([0.1, 0.3, 0.9, 0.5])
    phrases = torch.tensor([1, 0, 1, 1])
    ranks = first_hit_ranks(boxes, scores, phrases, gt, gt_phrase, num_phrases=2)
    assert ranks.tolist() == [0, 2]
    assert recall_at_k(ranks, (1, 2, 3)) == {1: 50.0, 2: 50.0, 3: 100.0}


def test_merged_box_can_also_lose_a_hit():
    # Two distant boxes of one phrase; the prediction is exactly the left one.
    # any-box: IoU 1 -> hit. merged: union [0,0,100,10] (area 1000) vs [0,0,10,10] -> IoU 0.1 -> miss.
    gt = torch.tensor([[0.0, 0, 10, 10], [90, 0, 100, 10]])
    gt_phrase = torch.tensor([0, 0])
    pred, score, phrase = torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([1.0]), torch.tensor([0])
    assert first_hit_ranks(pred, score, phrase, gt, gt_phrase, 1).tolist() == [0]
    merged, merged_phrase = union_boxes(gt, gt_phrase, 1)
    assert merged.tolist() == [[0, 0, 100, 10]] and merged_phrase.tolist() == [0]
    assert first_hit_ranks(pred, score, phrase, merged, merged_phrase, 1).tolist() == [-1]


def test_union_boxes_per_group_skips_empty_groups():
    boxes = torch.tensor([[0.0, 5, 10, 10], [4, 0, 6, 20], [30, 30, 40, 40]])
    merged, groups = union_boxes(boxes, torch.tensor([2, 2, 0]), num_groups=4)
    assert groups.tolist() == [0, 2]
    assert merged.tolist() == [[30, 30, 40, 40], [0, 0, 10, 20]]


def test_grounding_gather_merges_workers_and_drops_repeats(monkeypatch):
    # Two "workers": one processed images 1 and 2, the other 2 (repeated by a padding sampler) and 3.
    # Merged and de-duplicated, this is the single-process result.
    ev_a = GroundingRecallEvaluator("toy", dataset_dicts=GROUNDING_DICTS)
    ev_b = GroundingRecallEvaluator("toy", dataset_dicts=GROUNDING_DICTS)
    for ev, ids in ((ev_a, (1, 2)), (ev_b, (2, 3))):
        for image_id in ids:
            ev.process([{"image_id": image_id}], [GROUNDING_OUTPUTS[image_id]])
    calls = []

    def fake_gather(data, dst=0):
        calls.append(dst)
        return [data, ev_b._records]

    monkeypatch.setattr(comm, "gather", fake_gather)
    res = ev_a.evaluate()["grounding/any-box"]
    assert calls == [0]
    assert res["num_images"] == 3 and res["num_phrases"] == 6
    assert res["R@1"] == pytest.approx(100 * 2 / 6)

    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    assert ev_a.evaluate() == {}


def test_grounding_reads_dataset_catalog_and_writes_json(tmp_path):
    name = "fiber_det_test_grounding_toy"
    DatasetCatalog.register(name, lambda: GROUNDING_DICTS)
    try:
        ev = GroundingRecallEvaluator(name, topk=(1, 2), output_dir=str(tmp_path))
        res = _run(ev, image_ids=(1, 3))["grounding/any-box"]
    finally:
        DatasetCatalog.remove(name)
    # image 1: ranks [0, 1, 1]; image 3: [-1] -> R@1 = 1/4, R@2 = 3/4
    assert res["R@1"] == pytest.approx(25.0) and res["R@2"] == pytest.approx(75.0)
    saved = json.loads((tmp_path / "grounding_any_box_results.json").read_text())
    assert saved["box_mode"] == "any" and saved["protocol"] == "Flickr30k Entities Recall@1/2, any-box, IoU>=0.5"
    rows = {(r["image_id"], r["phrase_index"]): r for r in saved["phrases"]}
    assert set(rows) == {(1, 0), (1, 1), (1, 2), (3, 0)}  # phrase 3 of image 1 has no box
    assert rows[(1, 1)]["first_hit_rank"] == 1 and rows[(1, 1)]["R@2"] and not rows[(1, 1)]["R@1"]
    assert rows[(3, 0)]["first_hit_rank"] is None


def test_grounding_errors_name_the_problem():
    ev = GroundingRecallEvaluator("toy", dataset_dicts=GROUNDING_DICTS)
    with pytest.raises(KeyError, match="image_id 99"):
        ev.process([{"image_id": 99}], [GROUNDING_OUTPUTS[1]])
    with pytest.raises(ValueError, match=r"image_id 2: pred_classes .* \[0, 2\)"):
        ev.process([{"image_id": 2}], [GROUNDING_OUTPUTS[1]])  # predicts phrase 2, image 2 has 2 phrases
    with pytest.raises(ValueError, match="box_mode"):
        GroundingRecallEvaluator("toy", box_mode="union")
    bad = [_entry(7, 1, [_ann(1, [0, 0, 1, 1], [3])])]
    with pytest.raises(ValueError, match="image_id=7.*phrase_ids \\[3\\]"):
        GroundingRecallEvaluator("toy", dataset_dicts=bad).process([{"image_id": 7}], [GROUNDING_OUTPUTS[3]])


# ---------------------------------------------------------------------------------------------
# Referring expressions.
# ---------------------------------------------------------------------------------------------
REFEXP_DICTS = [
    # 10: GT [3,4,23,24]. Top prediction [0,0,20,20]: inter 17*16 = 272, union 400 + 400 - 272 = 528,
    #     IoU = 0.5152 (hit); enclosing 23*24 = 552, GIoU = 0.5152 - 24/552 = 0.4717 (miss).
    _entry(10, 1, [_ann(1, [3, 4, 20, 20], [0])]),
    # 11: GT [0,0,10,10]. Top prediction (a tie at .7, first in list) [0,0,10,20]: IoU = 100/200 = 0.5,
    #     enclosing = union -> GIoU = 0.5; both hit (inclusive).
    _entry(11, 2, [_ann(2, [0, 0, 10, 10], [0])]),
    # 12: no predictions -> miss.
    _entry(12, 1, [_ann(3, [0, 0, 10, 10], [0])]),
    # 13: no annotation -> skipped.
    _entry(13, 1, []),
    # 14: the top prediction (.95) belongs to phrase 1 and is exact -> hit for both criteria.
    _entry(14, 2, [_ann(4, [50, 50, 10, 10], [0])]),
]
REFEXP_OUTPUTS = {
    10: _output([[0, 0, 20, 20], [3, 4, 23, 24]], [0.9, 0.5], [0, 0]),
    11: _output([[0, 0, 10, 20], [200, 200, 210, 210]], [0.7, 0.7], [0, 1]),
    12: _output([], [], []),
    13: _output([[0, 0, 10, 10]], [0.9], [0]),
    14: _output([[0, 0, 5, 5], [50, 50, 60, 60]], [0.4, 0.95], [0, 1]),
}
# evaluated: 10, 11, 12, 14 (4 entries).  IoU>=0.5: 10, 11, 14 -> 75%.  GIoU>=0.5: 11, 14 -> 50%.
# IoU>=0.75: 14 -> 25%.


def _run_refexp(evaluator):
    for image_id, out in REFEXP_OUTPUTS.items():
        evaluator.process([{"image_id": image_id}], [out])
    return evaluator.evaluate()


@pytest.mark.parametrize("distributed", [False, True])
def test_refexp_both_criteria_labelled(distributed, tmp_path):
    ev = RefExpEvaluator(
        "toy", criteria=("iou", "giou"), distributed=distributed, output_dir=str(tmp_path), dataset_dicts=REFEXP_DICTS
    )
    res = _run_refexp(ev)["refexp"]
    assert res["P@1 (IoU>=0.5)"] == pytest.approx(75.0)
    assert res["P@1 (GIoU>=0.5, reference)"] == pytest.approx(50.0)
    assert res["num"] == 4 and res["num_without_box"] == 1
    saved = json.loads((tmp_path / "refexp_results.json").read_text())
    by_id = {e["image_id"]: e["overlaps"] for e in saved["entries"]}
    assert by_id[10]["iou"] == pytest.approx(272 / 528)
    assert by_id[10]["giou"] == pytest.approx(272 / 528 - 24 / 552)
    assert by_id[12] is None


def test_refexp_single_criterion_and_thresholds():
    res = _run_refexp(RefExpEvaluator("toy", criteria="giou", dataset_dicts=REFEXP_DICTS))["refexp"]
    assert set(res) == {"P@1 (GIoU>=0.5, reference)", "num", "num_without_box"}
    res = _run_refexp(RefExpEvaluator("toy", thresholds=(0.5, 0.75), criteria="iou", dataset_dicts=REFEXP_DICTS))
    assert res["refexp"]["P@1 (IoU>=0.5)"] == pytest.approx(75.0)
    assert res["refexp"]["P@1 (IoU>=0.75)"] == pytest.approx(25.0)


def test_refexp_pure_functions():
    # Several GT boxes: the top prediction matching the second one counts (best overlap over GT).
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    o = top1_overlaps(torch.tensor([[20.0, 20, 30, 30], [0, 0, 10, 10]]), torch.tensor([0.8, 0.2]), gt)
    assert o == {"iou": 1.0, "giou": 1.0}
    assert top1_overlaps(torch.zeros(0, 4), torch.zeros(0), gt) is None
    # hits at 0.5 (inclusive): 0.5 and 0.9; misses: 0.49 and no prediction -> 2/4
    assert refexp_precision([0.5, 0.49, None, 0.9], 0.5) == 50.0
    with pytest.raises(ValueError, match="criteria"):
        RefExpEvaluator("toy", criteria=("iou", "ciou"))
