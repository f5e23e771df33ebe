"""Chunked-prompt evaluation: the mapper's prompt_chunks, the per-chunk forward passes, the merge."""
import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from PIL import Image

from fiber_det.data.mapper import FiberDatasetMapper
from fiber_det.modeling.chunked import merge_chunk_detections
from fiber_det.text import CaptionTooLongError
from helpers import tiny_fiber_cfg

CLASSES = ["cat", "dog", "horse", "sheep", "cow", "bear", "zebra"]
DATASET = "test_chunked_vocabulary"


@pytest.fixture(scope="module")
def chunked_dataset(tmp_path_factory):
    """A "sampled" (large-vocabulary) dataset of two images on disk."""
    MetadataCatalog.get(DATASET).set(thing_classes=CLASSES, prompt_style="sampled", evaluator_type="lvis")
    root = tmp_path_factory.mktemp("chunked_images")
    rng = np.random.default_rng(0)
    dicts = []
    for i, (h, w) in enumerate([(64, 80), (48, 64)]):
        path = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        dicts.append({"file_name": str(path), "height": h, "width": w, "image_id": i, "task": "detection",
                      "dataset_name": DATASET, "annotations": []})
    yield dicts
    MetadataCatalog.remove(DATASET)


def eval_mapper(tokenizer, chunk_size, max_length=32):
    return FiberDatasetMapper(is_train=False, augmentations=[], tokenizer=str(tokenizer), max_length=max_length,
                              prompt_chunk_size=chunk_size)


def test_mapper_emits_prompt_chunks(chunked_dataset, tiny_tokenizer_dir):
    out = eval_mapper(tiny_tokenizer_dir, 3)(chunked_dataset[0])
    assert "caption" not in out and "class_spans" not in out
    chunks = out["prompt_chunks"]
    assert [c["class_ids"] for c in chunks] == [[0, 1, 2], [3, 4, 5], [6]]
    for c in chunks:
        named = [c["caption"][s:e] for [(s, e)] in c["class_spans"]]
        assert named == [CLASSES[i] for i in c["class_ids"]]
    assert chunks[0]["caption"] == "cat. dog. horse"
    # A chunk that does not fit the token budget is an error naming the key to change.
    with pytest.raises(CaptionTooLongError, match="TEST.PROMPT_CHUNK_SIZE=7"):
        eval_mapper(tiny_tokenizer_dir, 7, max_length=6)(chunked_dataset[0])
    # Training keeps the sampled single caption.
    train = FiberDatasetMapper(is_train=True, augmentations=[], tokenizer=str(tiny_tokenizer_dir), max_length=32)
    assert "prompt_chunks" not in train(dict(chunked_dataset[0], annotations=[]))


def instances(scores, classes, size=(50, 60)):
    inst = Instances(size)
    n = len(scores)
    inst.pred_boxes = Boxes(torch.arange(4 * n, dtype=torch.float32).view(n, 4))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(classes, dtype=torch.long)
    return inst


def test_merge_maps_classes_and_sorts_by_score():
    merged = merge_chunk_detections(
        [instances([0.9, 0.2], [1, 0]), instances([], []), instances([0.5, 0.95, 0.2], [0, 0, 1])],
        [[10, 11], [12], [13, 14]],
    )
    assert merged.scores.tolist() == pytest.approx([0.95, 0.9, 0.5, 0.2, 0.2])
    assert merged.pred_classes.tolist() == [13, 11, 13, 10, 14]  # ties keep chunk order
    with pytest.raises(ValueError, match="chunk 0 lists 1 categories"):
        merge_chunk_detections([instances([0.3], [1])], [[5]])


def test_chunked_forward_maps_classes_and_keeps_each_chunks_cap(chunked_dataset, tiny_text_dir):
    per_chunk_cap = 4
    cfg = tiny_fiber_cfg(tiny_text_dir, **{"MODEL.FIBER.INFERENCE_TH": 0.0,
                                           "MODEL.FIBER.DETECTIONS_PER_IMAGE": per_chunk_cap})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    mapper = eval_mapper(tiny_text_dir, 4)
    batch = [mapper(d) for d in chunked_dataset]
    assert len(batch[0]["prompt_chunks"]) == 2
    with torch.no_grad():
        merged = model(batch)
        # The same, one chunk at a time through the ordinary single-caption path.
        expected = [[] for _ in batch]
        for chunk in batch[0]["prompt_chunks"]:
            single = [{**{k: v for k, v in x.items() if k != "prompt_chunks"}, "caption": chunk["caption"],
                       "class_spans": chunk["class_spans"]} for x in batch]
            for i, out in enumerate(model(single)):
                inst = out["instances"]
                assert len(inst) == per_chunk_cap  # threshold 0: every chunk fills its cap
                inst.pred_classes = torch.tensor(chunk["class_ids"])[inst.pred_classes]
                expected[i].append(inst)
    for x, out, exp in zip(batch, merged, expected):
        inst = out["instances"]
        assert inst.image_size == (x["height"], x["width"])
        assert len(inst) == per_chunk_cap * len(x["prompt_chunks"])  # no cap across chunks
        for chunk in x["prompt_chunks"]:  # each chunk contributes its own detections, at most its cap
            assert int(np.isin(inst.pred_classes.numpy(), chunk["class_ids"]).sum()) == per_chunk_cap
        assert (inst.scores[:-1] >= inst.scores[1:]).all()
        exp = Instances.cat(exp)
        order = torch.sort(exp.scores, descending=True, stable=True).indices
        torch.testing.assert_close(inst.scores, exp.scores[order])
        torch.testing.assert_close(inst.pred_boxes.tensor, exp.pred_boxes.tensor[order])
        assert inst.pred_classes.tolist() == exp.pred_classes[order].tolist()
