"""Dataset loaders and the mapper on generated data: captions, spans -> tokens, boxes."""
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from transformers import AutoTokenizer

from fiber_det.data.datasets import load_mdetr_grounding_json, register_synthetic
from fiber_det.data.mapper import FiberDatasetMapper
from fiber_det.data.synthetic import generate_synthetic_dataset
from fiber_det.text import build_caption, clean_name, positive_map_from_spans
from helpers import tiny_fiber_cfg


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(root, num_train=6, num_val=3, image_size=(128, 160), num_workers=1)
    register_synthetic(str(root), prefix="t_synth")
    return root


def test_caption_building():
    assert clean_name("traffic_light (object)") == "traffic light"
    caption, spans = build_caption(["cat", "hot_dog", "tv"], order=[2, 0, 1])
    assert caption == "tv. cat. hot dog"
    assert [caption[s:e] for s, e in spans] == ["cat", "hot dog", "tv"]


def test_spans_map_to_the_tokens_that_spell_them(tiny_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    caption = "a large red circle on the left and  a blue square"
    b = caption.index("blue")
    spans = [[(2, 18)], [(b, b + 11)], [(2, 7), (b, b + 4)]]
    enc = tok([caption], return_tensors="pt", padding="max_length", max_length=32)
    pmap = positive_map_from_spans(enc, spans, 32)
    for row, row_spans in zip(pmap, spans):
        text = tok.decode(enc["input_ids"][0][row]).strip()
        assert text.replace(" ", "") == "".join(caption[s:e] for s, e in row_spans).replace(" ", "")
    # A span starting on a space falls back to the next character's token.
    assert torch.equal(positive_map_from_spans(enc, [[(1, 18)]], 32)[0], pmap[0])


def test_registered_views_and_mapper(synthetic_root, tiny_text_dir):
    det = DatasetCatalog.get("t_synth_train")
    grd = DatasetCatalog.get("t_synth_grounding_train")
    assert MetadataCatalog.get("t_synth_train").thing_classes == ["circle", "square", "triangle"]
    assert MetadataCatalog.get("t_synth_grounding_train").evaluator_type == "grounding"
    assert all(d["task"] == "detection" for d in det) and all(d["task"] == "grounding" for d in grd)
    cfg = tiny_fiber_cfg(tiny_text_dir, **{"INPUT.MIN_SIZE_TRAIN": (128,), "INPUT.MAX_SIZE_TRAIN": 160,
                                           "INPUT.RANDOM_FLIP": "none"})
    mapper = FiberDatasetMapper(cfg, is_train=True)
    classes = MetadataCatalog.get("t_synth_train").thing_classes
    for d in det:
        out = mapper(d)
        assert out["image"].shape == (3, 128, 160)
        # Each box's span spells its category name in the (shuffled) caption.
        names = [out["caption"][s:e] for [(s, e)] in out["instance_spans"]]
        assert names == [classes[a["category_id"]] for a in d["annotations"]]
        assert torch.allclose(out["instances"].gt_boxes.tensor[:, 0], torch.tensor([a["bbox"][0] for a in d["annotations"]]))
    for d in grd:
        out = mapper(d)
        assert out["caption"] == d["caption"]
        assert len(out["instances"]) == len(d["annotations"]) == len(out["instance_spans"])
        for spans in out["instance_spans"]:
            for s, e in spans:
                assert any(shape in out["caption"][s:e] for shape in classes)
    test_out = FiberDatasetMapper(cfg, is_train=False)(det[0])
    assert test_out["caption"] == "circle. square. triangle" and "instances" not in test_out


def test_mdetr_loader_rejects_spans_outside_the_caption(tmp_path):
    import json

    bad = {"images": [{"id": 7, "file_name": "x.png", "height": 10, "width": 10, "caption": "a cat"}],
           "annotations": [{"id": 3, "image_id": 7, "bbox": [0, 0, 5, 5], "tokens_positive": [[2, 9]]}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"image id 7, annotation id 3: span \[2, 9\]"):
        load_mdetr_grounding_json(str(path), str(tmp_path))
