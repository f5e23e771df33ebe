"""Flickr30k Entities from the original Sentences/Annotations folders: the real Sentences files and
split list of ../shared/data/flickr30k_entities_sentences, with small Annotations/*.xml written here
in the release's format (the sample has no box files)."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from fiber_det.data.datasets import BUILTIN_DATASETS, datasets_root, load_mdetr_grounding_json
from fiber_det.data.datasets.flickr import (
    load_flickr30k_entities,
    parse_sentence,
    read_entity_boxes,
    read_sentences,
    read_split,
)
from fiber_det.evaluation import GroundingRecallEvaluator

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr30k_entities_sentences"
pytestmark = pytest.mark.skipif(not (SAMPLE / "Sentences").is_dir(), reason=f"{SAMPLE} not found")

GIRL, WATER = "4945942737", "6338542128"

# Boxes in the release's format (PASCAL VOC-like; xmin..ymax as XYXY pixels, see flickr.py).
# 4945942737: 221796 "a girl" one box; 221804 "brown hair" and 221797 "black" share one <object>;
#   221799 "the edge of a cement area" two boxes; 221798 "water" scene-only; 221800 "behind" nobndbox;
#   221802 "life" absent from the file.
# 6338542128: 253069 "a football player" one box (mentioned twice in the third sentence); 253072 "the football".
XML = {
    GIRL: (333, 500, """
  <object><name>221796</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>110</xmax><ymax>220</ymax></bndbox></object>
  <object><name>221804</name><name>221797</name>
    <bndbox><xmin>40</xmin><ymin>30</ymin><xmax>90</xmax><ymax>80</ymax></bndbox></object>
  <object><name>221799</name><bndbox><xmin>0</xmin><ymin>200</ymin><xmax>300</xmax><ymax>300</ymax></bndbox></object>
  <object><name>221799</name><bndbox><xmin>300</xmin><ymin>220</ymin><xmax>400</xmax><ymax>300</ymax></bndbox></object>
  <object><name>221798</name><nobndbox>1</nobndbox><scene>1</scene></object>
  <object><name>221800</name><nobndbox>1</nobndbox><scene>0</scene></object>"""),
    WATER: (500, 421, """
  <object><name>253069</name><bndbox><xmin>100</xmin><ymin>50</ymin><xmax>250</xmax><ymax>400</ymax></bndbox></object>
  <object><name>253072</name><bndbox><xmin>200</xmin><ymin>150</ymin><xmax>230</xmax><ymax>180</ymax></bndbox></object>"""),
}


def _xml(width, height, objects):
    return (f"<annotation>\n  <filename>x.jpg</filename>\n  <size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{objects}\n</annotation>\n")


@pytest.fixture(scope="module")
def entities_root(tmp_path_factory):
    """$FIBER_DATASETS-style tree: flickr30k/flickr30k_entities/{Sentences,Annotations,train.txt} and
    flickr30k/flickr30k-images, from the sample."""
    root = tmp_path_factory.mktemp("flickr_datasets")
    ent = root / "flickr30k" / "flickr30k_entities"
    shutil.copytree(SAMPLE / "Sentences", ent / "Sentences")
    shutil.copytree(SAMPLE / "images", root / "flickr30k" / "flickr30k-images")
    (ent / "Annotations").mkdir()
    for image_id, (w, h, objects) in XML.items():
        (ent / "Annotations" / f"{image_id}.xml").write_text(_xml(w, h, objects))
    # The real train list, restricted to the images whose Sentences file the sample has.
    ids = [i for i in read_split(SAMPLE / "split_train.txt") if (SAMPLE / "Sentences" / f"{i}.txt").exists()]
    assert ids == [WATER, GIRL]  # their order in the official list
    (ent / "train.txt").write_text("\n".join(ids) + "\n")
    return root


def _load(root, merged=False):
    ent = root / "flickr30k" / "flickr30k_entities"
    return load_flickr30k_entities(str(ent), str(root / "flickr30k" / "flickr30k-images"), str(ent / "train.txt"),
                                   "flickr_test", merged=merged)


def test_sentences_parse_like_the_reference():
    # sentences_parsed.json holds each real sentence's caption, phrases, entity ids, types and spans.
    reference = json.loads((SAMPLE / "sentences_parsed.json").read_text())
    for image_id, sentences in reference.items():
        ours = read_sentences(str(SAMPLE / "Sentences" / f"{image_id}.txt"))
        assert len(ours) == len(sentences) == 5
        for got, ref in zip(ours, sentences):
            assert got["caption"] == ref["caption"]
            assert [(p["phrase"], p["entity_id"], p["types"], [p["span"]]) for p in got["phrases"]] == [
                (p["phrase"], p["phrase_id"], p["phrase_types"], p["tokens_positive"]) for p in ref["phrases"]]
            for p in got["phrases"]:
                assert got["caption"][slice(*p["span"])] == p["phrase"]


def test_parse_sentence_edge_cases():
    s = parse_sentence("[/EN#7/people/other Two men] see [/EN#8/scene sky] .")
    assert s["caption"] == "Two men see sky ."
    assert [(p["entity_id"], p["types"], p["span"]) for p in s["phrases"]] == [
        ("7", ["people", "other"], [0, 7]), ("8", ["scene"], [12, 15])]
    with pytest.raises(ValueError, match="line 3: phrase \\[/EN#9 is not closed"):
        parse_sentence("a [/EN#9/people man", "Sentences/1.txt, line 3")


def test_entity_boxes_from_xml(entities_root):
    info = read_entity_boxes(str(entities_root / "flickr30k/flickr30k_entities/Annotations" / f"{GIRL}.xml"))
    assert (info["width"], info["height"]) == (333, 500)
    assert info["boxes"] == {"221796": [[10, 20, 110, 220]], "221804": [[40, 30, 90, 80]],
                             "221797": [[40, 30, 90, 80]], "221799": [[0, 200, 300, 300], [300, 220, 400, 300]]}
    assert info["nobox"] == ["221798", "221800"] and info["scene"] == ["221798"]


def test_dataset_dicts(entities_root):
    dicts = _load(entities_root)
    assert len(dicts) == 10  # one per sentence, images in split order
    assert [d["image_id"] for d in dicts[:2]] == [int(WATER) * 100, int(WATER) * 100 + 1]
    girl = dicts[5]
    assert girl["caption"] == "A girl with brown hair sits on the edge of a cement area overlooking water ."
    assert girl["file_name"].endswith(f"flickr30k-images/{GIRL}.jpg") and Path(girl["file_name"]).is_file()
    assert (girl["height"], girl["width"], girl["image_id"]) == (500, 333, int(GIRL) * 100)
    # "overlooking water" (scene-only entity) is not evaluated.
    assert girl["phrases"] == [{"spans": [[0, 6]]}, {"spans": [[12, 22]]}, {"spans": [[31, 56]]}]
    anns = [(a["bbox"], a["tokens_positive"], a["phrase_ids"]) for a in girl["annotations"]]
    assert anns == [
        ([10.0, 20.0, 100.0, 200.0], [[0, 6]], [0]),
        ([40.0, 30.0, 50.0, 50.0], [[12, 22]], [1]),
        ([0.0, 200.0, 300.0, 100.0], [[31, 56]], [2]),   # an entity with two boxes
        ([300.0, 220.0, 100.0, 80.0], [[31, 56]], [2]),
    ]
    assert all(a["bbox_mode"] == BoxMode.XYWH_ABS for a in girl["annotations"])
    # The girl's third sentence: "... in [/EN#221797/clothing a black dress]": the box shared with 221804.
    assert dicts[7]["annotations"][-1]["tokens_positive"] == [[49, 62]]
    # The girl's fifth sentence: only "A dark-haired girl" has a box ("the waters edge" is scene-only).
    assert dicts[9]["phrases"] == [{"spans": [[0, 18]]}]
    # Football, third sentence: one box for two mentions of entity 253069; "him" (entity 0) not evaluated.
    foot = dicts[2]
    assert foot["caption"].startswith("A football player from Iowa State blocks a player from Texas A&M")
    assert foot["phrases"] == [{"spans": [[0, 17]]}, {"spans": [[41, 49]]}, {"spans": [[77, 89]]}]
    assert [(a["tokens_positive"], a["phrase_ids"]) for a in foot["annotations"]] == [
        ([[0, 17], [41, 49]], [0, 1]), ([[77, 89]], [2])]


def test_merged_boxes(entities_root):
    girl = _load(entities_root, merged=True)[5]
    assert [a["bbox"] for a in girl["annotations"]] == [
        [10.0, 20.0, 100.0, 200.0], [40.0, 30.0, 50.0, 50.0], [0.0, 200.0, 400.0, 100.0]]


def test_same_dicts_as_the_mdetr_loader(entities_root, tmp_path):
    # The girl's first sentence written as an MDETR-style file, by hand.
    image_root = entities_root / "flickr30k" / "flickr30k-images"
    mdetr = {
        "images": [{"id": int(GIRL) * 100, "file_name": f"{GIRL}.jpg", "height": 500, "width": 333,
                    "caption": "A girl with brown hair sits on the edge of a cement area overlooking water .",
                    "tokens_positive_eval": [[[0, 6]], [[12, 22]], [[31, 56]]], "sentence_id": 0,
                    "original_img_id": int(GIRL), "dataset_name": "flickr", "tokens_negative": []}],
        "annotations": [
            {"id": 0, "image_id": int(GIRL) * 100, "bbox": [10, 20, 100, 200], "tokens_positive": [[0, 6]],
             "category_id": 1, "iscrowd": 0, "area": 20000},
            {"id": 1, "image_id": int(GIRL) * 100, "bbox": [40, 30, 50, 50], "tokens_positive": [[12, 22]],
             "category_id": 1, "iscrowd": 0, "area": 2500},
            {"id": 2, "image_id": int(GIRL) * 100, "bbox": [0, 200, 300, 100], "tokens_positive": [[31, 56]],
             "category_id": 1, "iscrowd": 0, "area": 30000},
            {"id": 3, "image_id": int(GIRL) * 100, "bbox": [300, 220, 100, 80], "tokens_positive": [[31, 56]],
             "category_id": 1, "iscrowd": 0, "area": 8000},
        ],
        "categories": [{"id": 1, "name": "object"}],
    }
    path = tmp_path / "final_flickr_separateGT_train.json"
    path.write_text(json.dumps(mdetr))
    assert load_mdetr_grounding_json(str(path), str(image_root), "flickr_test") == [_load(entities_root)[5]]


def _output(boxes, scores, phrases):
    inst = Instances((500, 333))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.tensor(phrases, dtype=torch.int64)
    return {"instances": inst}


def test_recall_on_loaded_dicts(entities_root):
    # The girl's first sentence (3 evaluated phrases) and the football's third sentence (3 phrases).
    # Girl: phrase 0 exact (hit at 1); phrase 1 no prediction (miss); phrase 2 = its second box
    #   [300,220,400,300]: any-box hit at 1; merged GT [0,200,400,300]: IoU 8000/40000 = 0.2, miss.
    # Football: no detections at all -> its 3 phrases miss.
    # any-box R@1 = 2/6; merged-box R@1 = 1/6.
    outputs = {
        int(GIRL) * 100: _output([[10, 20, 110, 220], [300, 220, 400, 300]], [0.9, 0.8], [0, 2]),
        int(WATER) * 100 + 2: _output([], [], []),
    }
    for merged, expected in ((False, 2 / 6), (True, 1 / 6)):
        ev = GroundingRecallEvaluator("flickr_test", distributed=False, dataset_dicts=_load(entities_root, merged))
        for image_id, out in outputs.items():
            ev.process([{"image_id": image_id}], [out])
        res = ev.evaluate()["grounding/any-box"]
        assert res["R@1"] == pytest.approx(100 * expected) and res["num_phrases"] == 6


def test_builtin_names_read_the_original_folders(entities_root):
    specs = {s.name: s for s in BUILTIN_DATASETS if s.name.startswith("flickr30k_entities")}
    assert set(specs) == {f"flickr30k_entities{m}_{s}" for m in ("", "_merged") for s in ("train", "val", "test")}
    name = "flickr30k_entities_merged_train"
    try:
        for catalog in (DatasetCatalog, MetadataCatalog):
            catalog.remove(name)
        specs[name].register(str(entities_root))
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == 10 and dicts[5]["annotations"][-1]["bbox"] == [0.0, 200.0, 400.0, 100.0]
        assert MetadataCatalog.get(name).evaluator_type == "grounding"
    finally:
        for catalog in (DatasetCatalog, MetadataCatalog):
            catalog.remove(name)
        specs[name].register(datasets_root())
