"""Dataset families, the mapper's checks and round trips, image reading, and training-set mixing.

Real samples come from ../shared/data (skipped when absent); every other format is generated here
and loaded through fiber-det's registered names.
"""
import json
import logging
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES
from detectron2.structures import BoxMode, Instances
from PIL import Image
from transformers import AutoTokenizer

from fiber_det.config import add_fiber_config
from fiber_det.data.build import (
    SkipMostlyEmptyBatches,
    build_fiber_train_loader,
    build_training_sampler,
    dataset_repeat_factors,
)
from fiber_det.data.datasets import (
    load_coco_detection,
    odinw_dataset_names,
    register_all_builtin,
    register_coco_detection,
    register_datasets_from_config,
    register_mdetr_grounding,
)
from fiber_det.data.datasets.check import main as check_main
from fiber_det.data.mapper import FiberDatasetMapper, ReferenceResize, read_image, reference_output_size
from fiber_det.text import CaptionTooLongError, clean_name, positive_map_from_spans

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared(*parts) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"sample data {path} not found")
    return path


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


def mapper(tok, is_train=True, augs=(), **kwargs):
    return FiberDatasetMapper(is_train=is_train, augmentations=list(augs), tokenizer=tok, **kwargs)


def expected_boxes(d):
    """The annotation boxes as the mapper must keep them: XYXY, clipped, non-crowd, non-empty."""
    out = []
    for a in d["annotations"]:
        if a.get("iscrowd", 0):
            continue
        x0, y0, x1, y1 = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
        box = [min(max(x0, 0), d["width"]), min(max(y0, 0), d["height"]),
               min(max(x1, 0), d["width"]), min(max(y1, 0), d["height"])]
        if box[2] > box[0] and box[3] > box[1]:
            out.append((box, a))
    return out


def spelled(tok, caption, spans):
    """The text of the tokens that ``spans`` map to, compared without spaces."""
    enc = tok([caption], return_tensors="pt")
    row = positive_map_from_spans(enc, [spans], enc["input_ids"].shape[1])[0]
    assert row.any(), f"spans {spans} map to no token of {caption!r}"
    return tok.decode(enc["input_ids"][0][row]).replace(" ", "")


def check_round_trip(tok, d, out, classes=None):
    """Every kept box is in ``instances`` at its place, and its span spells its class / phrase."""
    kept = expected_boxes(d)
    inst = out["instances"]
    assert len(inst) == len(kept) == len(out["instance_spans"])
    if kept:
        assert torch.allclose(inst.gt_boxes.tensor, torch.tensor([b for b, _ in kept], dtype=torch.float32))
    for (_, a), spans in zip(kept, out["instance_spans"]):
        text = "".join(out["caption"][s:e] for s, e in spans).replace(" ", "")
        assert spelled(tok, out["caption"], spans) == text
        if classes is not None:
            assert [out["caption"][s:e] for s, e in spans] == [clean_name(classes[a["category_id"]])]
        else:
            assert spans == a["tokens_positive"]


def write_image(path: Path, size=(48, 32), color=(200, 30, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


# ---------------------------------------------------------------------------------------------
# Real samples
# ---------------------------------------------------------------------------------------------
def test_coco_val_subset_round_trip(tok):
    root = shared("icevision_samples")
    register_coco_detection("t_icevision", str(root / "annotations_relpath.json"), str(root))
    dicts = DatasetCatalog.get("t_icevision")
    classes = MetadataCatalog.get("t_icevision").thing_classes
    assert len(dicts) == 6 and sum(len(d["annotations"]) for d in dicts) == 36 and len(classes) == 80
    train, test = mapper(tok), mapper(tok, is_train=False)
    for d in dicts:
        out = train(d)
        assert out["image"].shape == (3, d["height"], d["width"]) and out["image"].dtype == torch.uint8
        check_round_trip(tok, d, out, classes)
    out = test(dicts[0])
    assert "instances" not in out and out["caption"].startswith("person. bicycle. car. ")
    assert [out["caption"][s:e] for [(s, e)] in out["class_spans"]] == list(classes)

    # Resized and flipped: the boxes follow the image.
    augmented = mapper(tok, augs=[ReferenceResize((320,), 500), T.RandomFlip(prob=1.0)])
    for d in dicts:
        out = augmented(d)
        h, w = out["image"].shape[1:]
        assert min(h, w) == 320 or max(h, w) <= 500
        sx, sy = w / d["width"], h / d["height"]
        boxes = torch.tensor([b for b, _ in expected_boxes(d)]).reshape(-1, 4) * torch.tensor([sx, sy, sx, sy])
        flipped = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
        assert torch.allclose(out["instances"].gt_boxes.tensor, flipped, atol=1e-3)


def test_odinw_aquarium_zero_area_boxes_are_dropped_and_reported(tok, caplog):
    root = shared("odinw_aquarium_v2_raw1024_test")
    register_coco_detection("t_aquarium", str(root / "test_annotations_coco.json"), str(root))
    dicts = DatasetCatalog.get("t_aquarium")
    assert sum(len(d["annotations"]) for d in dicts) == 584
    classes = MetadataCatalog.get("t_aquarium").thing_classes
    train = mapper(tok)
    with caplog.at_level(logging.WARNING, logger="fiber_det.data.mapper"):
        outs = [train(d) for d in dicts]
    for d, out in zip(dicts, outs):
        check_round_trip(tok, d, out, classes)
    assert sum(len(o["instances"]) for o in outs) == 582
    assert train.stats["boxes_dropped_empty"] == 2
    assert "dataset 't_aquarium', image id 11, annotation id 71" in caplog.text
    assert "dataset 't_aquarium', image id 29, annotation id 234" in caplog.text


def test_coco8_detection_and_grounding_files(tok):
    root = shared("coco8")
    for split in ("train", "val"):
        register_coco_detection(f"t_coco8_{split}", str(root / f"annotations_{split}_coco.json"), str(root))
    register_mdetr_grounding("t_coco8_grounding", str(root / "annotations_val_grounding_mdetr_style.json"), str(root))
    train = mapper(tok)
    n = 0
    for split in ("train", "val"):
        dicts = DatasetCatalog.get(f"t_coco8_{split}")
        classes = MetadataCatalog.get(f"t_coco8_{split}").thing_classes  # set by the loader
        for d in dicts:
            out = train(d)
            check_round_trip(tok, d, out, classes)
            n += len(out["instances"])
    assert n == 30
    grounding = DatasetCatalog.get("t_coco8_grounding")
    assert sum(len(d["annotations"]) for d in grounding) == 17
    for d in grounding:
        check_round_trip(tok, d, train(d))
        assert all(a["phrase_ids"] for a in d["annotations"])


def test_visual_genome_mdetr_style_files(tok):
    root = shared("visual_genome_mini")
    register_mdetr_grounding("t_vg_objects", str(root / "vg_objects_grounding_mdetr_style.json"), str(root))
    register_mdetr_grounding("t_vg_regions", str(root / "vg_regions_refexp_mdetr_style.json"), str(root),
                             evaluator_type="refexp")
    train = mapper(tok)
    objects = DatasetCatalog.get("t_vg_objects")
    assert sum(len(d["annotations"]) for d in objects) == 110
    for d in objects:
        check_round_trip(tok, d, train(d))
    assert train.stats["boxes_clipped"] == 1  # one curtain reaches one pixel past its image
    regions = DatasetCatalog.get("t_vg_regions")
    assert len(regions) == 400 and MetadataCatalog.get("t_vg_regions").evaluator_type == "refexp"
    for d in regions[::20]:
        check_round_trip(tok, d, train(d))


# ---------------------------------------------------------------------------------------------
# Generated files in every other format, through the registered names
# ---------------------------------------------------------------------------------------------
def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def datasets_tree(tmp_path_factory):
    """A $FIBER_DATASETS tree with tiny files of each family, registered for the module's tests."""
    root = tmp_path_factory.mktemp("fiber_datasets")
    img = {"height": 32, "width": 48}
    # LVIS (val/minival/train share the layout): coco_url or file_name, COCO 2017 image folders.
    lvis_cats = [{"id": c["id"], "name": c["name"], "synonyms": c["synonyms"], "frequency": c["frequency"]}
                 for c in LVIS_CATEGORIES]
    lvis = {
        "images": [dict(img, id=139, coco_url="http://images.cocodataset.org/val2017/000000000139.jpg",
                        not_exhaustive_category_ids=[3], neg_category_ids=[4]),
                   dict(img, id=285, file_name="val2017/000000000285.jpg")],
        "annotations": [{"id": 1, "image_id": 139, "category_id": 1, "bbox": [1, 2, 10, 12], "area": 120},
                        {"id": 2, "image_id": 139, "category_id": 1203, "bbox": [20, 5, 8, 8], "area": 64},
                        {"id": 3, "image_id": 285, "category_id": 95, "bbox": [0, 0, 48, 32], "area": 1536}],
        "categories": lvis_cats,
    }
    for split in ("train", "minival"):
        _write_json(root / "lvis" / f"lvis_v1_{split}.json", lvis)
    write_image(root / "coco" / "val2017" / "000000000139.jpg")
    write_image(root / "coco" / "val2017" / "000000000285.jpg")
    # Objects365 (COCO-style).
    _write_json(root / "objects365" / "annotations" / "objects365_val.json", {
        "images": [dict(img, id=7, file_name="obj365_val_000000000007.jpg")],
        "annotations": [{"id": 70, "image_id": 7, "category_id": 2, "bbox": [3, 3, 20, 10], "iscrowd": 0}],
        "categories": [{"id": i, "name": n} for i, n in enumerate(["person", "sneakers", "chair", "hat"], 1)],
    })
    write_image(root / "objects365" / "val" / "obj365_val_000000000007.jpg")
    # Flickr30k Entities (MDETR style): one box shared by two phrases, image-level eval phrases.
    caption = "A man in a red shirt holds his dog ."
    flickr = {
        "images": [dict(img, id=0, file_name="1000092795.jpg", caption=caption, dataset_name="flickr",
                        sentence_id=0, original_img_id=1000092795, tokens_negative=[[0, len(caption)]],
                        tokens_positive_eval=[[[0, 5]], [[9, 20]], [[27, 34]]])],
        "annotations": [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [2, 2, 20, 28], "area": 560, "iscrowd": 0,
                         "tokens_positive": [[0, 5]]},
                        {"id": 1, "image_id": 0, "category_id": 1, "bbox": [25, 10, 20, 20], "area": 400, "iscrowd": 0,
                         "tokens_positive": [[9, 20], [27, 34]]}],
        "categories": [{"id": 1, "name": "object"}],
    }
    for name in ("separateGT_test", "mergedGT_val"):
        _write_json(root / "mdetr_annotations" / f"final_flickr_{name}.json", flickr)
    write_image(root / "flickr30k" / "flickr30k-images" / "1000092795.jpg")
    # RefCOCO (MDETR style): the positive span is the root noun.
    ref = "the woman on the left"
    _write_json(root / "mdetr_annotations" / "finetune_refcoco_testA.json", {
        "images": [dict(img, id=5, file_name="COCO_train2014_000000000009.jpg", caption=ref, dataset_name="refcoco",
                        original_id=9, tokens_negative=[[0, len(ref)]])],
        "annotations": [{"id": 50, "image_id": 5, "category_id": 1, "bbox": [0, 0, 20, 30], "area": 600,
                         "iscrowd": 0, "tokens_positive": [[4, 9]]}],
        "categories": [{"id": 1, "name": "person"}],
    })
    write_image(root / "coco" / "train2014" / "COCO_train2014_000000000009.jpg")
    # GoldG: images from two sources.
    _write_json(root / "mdetr_annotations" / "final_mixed_train_no_coco.json", {
        "images": [dict(img, id=1, file_name="2354786.jpg", caption="a red circle", data_source="vg"),
                   dict(img, id=2, file_name="COCO_train2014_000000000009.jpg", caption="a cat", data_source="coco")],
        "annotations": [{"id": 1, "image_id": 1, "bbox": [1, 1, 9, 9], "tokens_positive": [[2, 12]]},
                        {"id": 2, "image_id": 2, "bbox": [3, 3, 9, 9], "tokens_positive": [[2, 5]]}],
    })
    write_image(root / "gqa" / "images" / "2354786.jpg")
    # ODinW: a Roboflow export keeps its super-category as category 0.
    aquarium = root / "odinw" / "Aquarium" / "Aquarium Combined.v2-raw-1024.coco" / "test"
    names = ["fish", "jellyfish", "penguin", "puffin", "shark", "starfish", "stingray"]
    _write_json(aquarium / "annotations_without_background.json", {
        "images": [dict(img, id=1, file_name="IMG_2289_jpeg_jpg.rf.fe2a.jpg")],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [4, 4, 10, 10], "iscrowd": 0},
                        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 4, 10, 10], "iscrowd": 0}],
        "categories": [{"id": 0, "name": "creatures", "supercategory": "none"}]
        + [{"id": i, "name": n, "supercategory": "creatures"} for i, n in enumerate(names, 1)],
    })
    write_image(aquarium / "IMG_2289_jpeg_jpg.rf.fe2a.jpg")
    rabbits = root / "odinw" / "CottontailRabbits" / "test"
    _write_json(rabbits / "annotations_without_background.json", {
        "images": [dict(img, id=3, file_name="rabbit.jpg")],
        "annotations": [{"id": 9, "image_id": 3, "category_id": 1, "bbox": [4, 4, 10, 10], "iscrowd": 0}],
        "categories": [{"id": 0, "name": "Cottontail-Rabbit", "supercategory": "none"},
                       {"id": 1, "name": "Cottontail-Rabbit", "supercategory": "Cottontail-Rabbit"}],
    })
    write_image(rabbits / "rabbit.jpg")

    register_all_builtin(str(root))
    yield root
    register_all_builtin()  # back to $FIBER_DATASETS


def test_lvis_through_registered_names(datasets_tree, tok):
    dicts = DatasetCatalog.get("lvis_v1_minival")
    meta = MetadataCatalog.get("lvis_v1_minival")
    assert len(meta.thing_classes) == 1203 and meta.evaluator_type == "lvis"
    assert [Path(d["file_name"]).relative_to(datasets_tree).as_posix() for d in dicts] == [
        "coco/val2017/000000000139.jpg", "coco/val2017/000000000285.jpg"]
    assert [a["category_id"] for d in dicts for a in d["annotations"]] == [0, 1202, 94]
    assert dicts[0]["not_exhaustive_category_ids"] == [3] and all(d["task"] == "detection" for d in dicts)
    # Training captions: the present classes plus sampled negatives, all within the budget.
    train = mapper(tok)
    d = DatasetCatalog.get("lvis_v1_train")[0]
    for _ in range(3):
        out = train(d)
        check_round_trip(tok, d, out, meta.thing_classes)
        assert len(tok(out["caption"])["input_ids"]) <= 256
        written = [i for i, s in enumerate(out["class_spans"]) if s]
        assert {0, 1202} <= set(written) and len(written) > 2  # lvis_v1_train always draws the full 85
    # All 1203 names do not fit one caption: evaluation runs over 31 prompts of 40 categories.
    chunks = mapper(tok, is_train=False)(dicts[0])["prompt_chunks"]
    assert len(chunks) == 31 and chunks[0]["class_ids"] == list(range(40)) and chunks[-1]["class_ids"][-1] == 1202


def test_objects365_through_registered_names(datasets_tree, tok):
    (d,) = DatasetCatalog.get("objects365_val")
    meta = MetadataCatalog.get("objects365_val")
    assert meta.thing_classes == ["person", "sneakers", "chair", "hat"] and meta.prompt_style == "sampled"
    assert d["annotations"][0]["category_id"] == 1
    check_round_trip(tok, d, mapper(tok)(d), meta.thing_classes)


def test_flickr30k_and_refcoco_through_registered_names(datasets_tree, tok):
    for name in ("flickr30k_test", "flickr30k_merged_val"):
        (d,) = DatasetCatalog.get(name)
        assert MetadataCatalog.get(name).evaluator_type == "grounding"
        assert [p["spans"] for p in d["phrases"]] == [[[0, 5]], [[9, 20]], [[27, 34]]]
        assert [a["phrase_ids"] for a in d["annotations"]] == [[0], [1, 2]]
        out = mapper(tok)(d)
        check_round_trip(tok, d, out)
        assert spelled(tok, out["caption"], out["instance_spans"][1]) == "aredshirthisdog"
        assert mapper(tok, is_train=False)(d)["class_spans"] == [[[0, 5]], [[9, 20]], [[27, 34]]]
    (d,) = DatasetCatalog.get("refcoco_testA")
    assert MetadataCatalog.get("refcoco_testA").evaluator_type == "refexp"
    out = mapper(tok)(d)
    check_round_trip(tok, d, out)
    assert spelled(tok, out["caption"], out["instance_spans"][0]) == "woman"


def test_goldg_images_come_from_their_source(datasets_tree):
    dicts = DatasetCatalog.get("mixed_train_no_coco")
    assert [Path(d["file_name"]).relative_to(datasets_tree).as_posix() for d in dicts] == [
        "gqa/images/2354786.jpg", "coco/train2014/COCO_train2014_000000000009.jpg"]


def test_odinw_roboflow_export_through_registered_names(datasets_tree, tok):
    assert "odinw13_Aquarium_test" in odinw_dataset_names("odinw13")
    assert len(odinw_dataset_names("odinw13")) == 13 and len(odinw_dataset_names("odinw35", "val")) == 35
    (d,) = DatasetCatalog.get("odinw13_Aquarium_test")
    meta = MetadataCatalog.get("odinw13_Aquarium_test")
    assert len(meta.thing_classes) == 7 and meta.thing_dataset_id_to_contiguous_id == {i: i - 1 for i in range(1, 8)}
    assert [a["category_id"] for a in d["annotations"]] == [3, 6]  # puffin, stingray: background 0 dropped
    check_round_trip(tok, d, mapper(tok)(d), meta.thing_classes)
    # The two benchmarks name the rabbits differently; the registered names win over the file's.
    assert MetadataCatalog.get("odinw13_CottontailRabbits_test").thing_classes == ["Cottontail-Rabbit"]
    (d,) = DatasetCatalog.get("odinw35_CottontailRabbits_test")
    assert MetadataCatalog.get("odinw35_CottontailRabbits_test").thing_classes == ["rabbit"]
    assert mapper(tok, is_train=False)(d)["caption"] == "rabbit"


def test_check_command_lists_present_and_missing(datasets_tree, capsys):
    assert check_main(["--root", str(datasets_tree), "--family", "lvis", "--images"]) == 1  # val is missing
    out = capsys.readouterr().out
    assert re.search(r"lvis_v1_minival +ok", out) and re.search(r"lvis_v1_val +MISSING .*lvis_v1_val.json", out)
    assert "2 of 3 datasets present" in out
    assert check_main(["--root", str(datasets_tree), "--family", "refcoco"]) == 1
    assert re.search(r"refcoco_testA +ok", capsys.readouterr().out)
    (datasets_tree / "coco" / "val2017" / "000000000285.jpg").rename(datasets_tree / "moved.jpg")
    try:
        check_main(["--root", str(datasets_tree), "--family", "lvis", "--images"])
        assert "MISSING 1 image files, e.g." in capsys.readouterr().out
    finally:
        (datasets_tree / "moved.jpg").rename(datasets_tree / "coco" / "val2017" / "000000000285.jpg")


def test_custom_dataset_from_the_config_alone(tmp_path, tok):
    write_image(tmp_path / "images" / "a.jpg")
    _write_json(tmp_path / "train.json", {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 32, "width": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 5, 5], "iscrowd": 0}],
        "categories": [{"id": 0, "name": "things"}, {"id": 1, "name": "bolt"}, {"id": 2, "name": "nut"}],
    })
    (tmp_path / "cfg.yaml").write_text(
        "DATASETS:\n  REGISTER:\n    t_cfg_train:\n"
        f"      JSON_FILE: {tmp_path / 'train.json'}\n      IMAGE_ROOT: {tmp_path / 'images'}\n"
        "  TRAIN: ('t_cfg_train',)\n"
    )
    cfg = get_cfg()
    add_fiber_config(cfg)
    cfg.merge_from_file(str(tmp_path / "cfg.yaml"))
    assert register_datasets_from_config(cfg) == ["t_cfg_train"]
    assert register_datasets_from_config(cfg) == []  # same files: left as is
    (d,) = DatasetCatalog.get("t_cfg_train")
    assert MetadataCatalog.get("t_cfg_train").thing_classes == ["bolt", "nut"] and d["annotations"][0]["category_id"] == 1
    cfg.DATASETS.REGISTER.t_cfg_bad = type(cfg)({"JSON": "x"})
    with pytest.raises(ValueError, match="DATASETS.REGISTER.t_cfg_bad: needs JSON_FILE and IMAGE_ROOT"):
        register_datasets_from_config(cfg)


# ---------------------------------------------------------------------------------------------
# The mapper's checks
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def tiny_detection(tmp_path):
    write_image(tmp_path / "img.png", size=(40, 30))
    _write_json(tmp_path / "det.json", {
        "images": [{"id": 4, "file_name": "img.png", "height": 30, "width": 40}],
        "annotations": [
            {"id": 1, "image_id": 4, "category_id": 1, "bbox": [2, 2, 10, 10], "iscrowd": 0},
            {"id": 2, "image_id": 4, "category_id": 2, "bbox": [30, 20, 20, 20], "iscrowd": 0},  # leaves the image
            {"id": 3, "image_id": 4, "category_id": 1, "bbox": [5, 5, 0, 7], "iscrowd": 0},  # zero width
            {"id": 4, "image_id": 4, "category_id": 2, "bbox": [50, 5, 5, 5], "iscrowd": 0},  # outside
            {"id": 5, "image_id": 4, "category_id": 2, "bbox": [1, 1, 30, 20], "iscrowd": 1},  # crowd
        ],
        "categories": [{"id": 1, "name": "red_circle"}, {"id": 2, "name": "blue square (object)"}],
    })
    return tmp_path


def test_mapper_clips_and_drops_boxes(tiny_detection, tok, caplog):
    (d,) = load_coco_detection(str(tiny_detection / "det.json"), str(tiny_detection), "t_tiny_det")
    m = mapper(tok)
    with caplog.at_level(logging.WARNING, logger="fiber_det.data.mapper"):
        out = m(d)
    assert out["instances"].gt_boxes.tensor.tolist() == [[2, 2, 12, 12], [30, 20, 40, 30]]
    assert out["instances"].gt_classes.tolist() == [0, 1]
    assert [out["caption"][s:e] for [(s, e)] in out["instance_spans"]] == ["red circle", "blue square"]
    assert m.stats["boxes_clipped"] == 1 and m.stats["boxes_dropped_empty"] == 2
    assert "dataset 't_tiny_det', image id 4, annotation id 3" in caplog.text
    assert "dataset 't_tiny_det', image id 4, annotation id 4" in caplog.text


def test_mapper_errors_say_where(tiny_detection, tok):
    (d,) = load_coco_detection(str(tiny_detection / "det.json"), str(tiny_detection), "t_tiny_det")
    missing = dict(d, file_name=str(tiny_detection / "nope.png"))
    with pytest.raises(FileNotFoundError, match=r"dataset 't_tiny_det', image id 4: image file .*nope.png not found"):
        mapper(tok)(missing)
    with pytest.raises(ValueError, match=r"dataset 't_tiny_det', image id 4: .*Mismatched image shape"):
        mapper(tok)(dict(d, height=31))
    grounding = dict(d, task="grounding", caption="a cat", phrases=[{"spans": [[2, 5]]}],
                     annotations=[dict(d["annotations"][0], tokens_positive=[[2, 9]])])
    with pytest.raises(ValueError, match=r"dataset 't_tiny_det', image id 4, annotation id 1: span \[2, 9\]"):
        mapper(tok)(grounding)


def test_caption_budget_errors_and_class_dropping(tiny_detection, tok, caplog):
    names = [f"{c} {s} number {i}" for i, (c, s) in enumerate(
        [(c, s) for c in ("red", "green", "blue", "black") for s in ("circle", "square", "star")])]
    register_coco_detection("t_budget_all", str(tiny_detection / "det.json"), str(tiny_detection),
                            thing_classes=names[:2])
    (d,) = DatasetCatalog.get("t_budget_all")
    with pytest.raises(CaptionTooLongError, match=r"dataset 't_budget_all', image id 4 \(all 2 categories\): "
                                                  r"the caption has \d+ tokens; the model takes 6"):
        mapper(tok, max_length=6)(d)
    # "sampled" prompts drop the classes that do not fit, with their boxes, and say so.
    register_coco_detection("t_budget_sampled", str(tiny_detection / "det.json"), str(tiny_detection),
                            thing_classes=names[:2], prompt_style="sampled")
    (d,) = DatasetCatalog.get("t_budget_sampled")
    budget = len(tok.tokenize(names[0] + ". ")) + 2 + 2
    random.seed(0)
    with caplog.at_level(logging.WARNING, logger="fiber_det.data.mapper"):
        out = mapper(tok, max_length=budget, control_prob=(0, 1, 0, 0))(d)
    assert len(out["instances"]) == 1 and "do not fit in" in caplog.text and "removed their 1 boxes" in caplog.text
    check_round_trip(tok, {**d, "annotations": [a for a in d["annotations"]
                                                if a["category_id"] == out["instances"].gt_classes[0]]},
                     out, names[:2])
    # A grounding box whose phrase lies beyond the budget is an error, not a silent loss.
    caption = " ".join(["a red circle"] * 20) + " and the blue square"
    grounding = dict(d, task="grounding", caption=caption, phrases=[{"spans": [[len(caption) - 11, len(caption)]]}],
                     annotations=[dict(d["annotations"][0], tokens_positive=[[len(caption) - 11, len(caption)]])])
    with pytest.raises(CaptionTooLongError, match=r"image id 4: the caption has \d+ tokens; the model takes 16 "
                                                  r"\(MODEL.FIBER.TEXT.MAX_LENGTH\) and annotation id 1 would be cut"):
        mapper(tok, max_length=16)(grounding)


def test_read_image_orientation_and_modes(tmp_path):
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[:, :10] = (255, 0, 0)  # red left third
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(rgb).save(tmp_path / "exif.jpg", exif=exif, quality=100)
    image = read_image(str(tmp_path / "exif.jpg"), "RGB")
    assert image.shape == (30, 20, 3)
    assert image[2, 10, 0] > 200 and image[-3, 10, 0] < 50  # the red third is now on top
    assert read_image(str(tmp_path / "exif.jpg"), "BGR")[2, 10, 2] > 200

    Image.new("L", (8, 6), 77).save(tmp_path / "gray.png")
    assert read_image(str(tmp_path / "gray.png")).tolist() == np.full((6, 8, 3), 77).tolist()
    Image.new("RGBA", (8, 6), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    assert read_image(str(tmp_path / "rgba.png"), "RGB")[0, 0].tolist() == [10, 20, 30]
    deep = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert read_image(str(tmp_path / "deep.png"))[0, :, 0].tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match="format must be"):
        read_image(str(tmp_path / "gray.png"), "YUV")


def test_reference_resize_rounding():
    # Shorter side rounded, longer side truncated: 480x640 -> 800x1066 (ResizeShortestEdge: 1067).
    assert reference_output_size(480, 640, 800, 1333) == (800, 1066)
    assert reference_output_size(640, 480, 800, 1333) == (1066, 800)
    assert reference_output_size(400, 1200, 800, 1333) == (444, 1332)  # capped by the longer side
    assert reference_output_size(800, 1000, 800, 1333) == (800, 1000)  # already there
    t = ReferenceResize((800,), 1333).get_transform(np.zeros((480, 640, 3), dtype=np.uint8))
    assert (t.new_h, t.new_w) == (800, 1066)


# ---------------------------------------------------------------------------------------------
# Mixing training datasets
# ---------------------------------------------------------------------------------------------
def _fiber_cfg(**overrides):
    cfg = get_cfg()
    add_fiber_config(cfg)
    for k, v in overrides.items():
        cfg.merge_from_list([k, v])
    return cfg


def test_train_ratios_set_the_sampling_shares():
    assert dataset_repeat_factors([100, 10], [1, 1]) == pytest.approx([0.55, 5.5])
    with pytest.raises(ValueError, match="2 entries for 3 training datasets"):
        dataset_repeat_factors([1, 2, 3], [1, 1])
    cfg = _fiber_cfg(**{"DATASETS.TRAIN_RATIOS": (1.0, 3.0)})
    per_dataset = [[{"task": "detection", "annotations": []}] * 60, [{"task": "grounding"}] * 12]
    sampler = build_training_sampler(cfg, per_dataset, ["a", "b"])
    indices = list(zip(range(8000), iter(sampler)))
    share = sum(i >= 60 for _, i in indices) / len(indices)
    assert 0.70 < share < 0.80
    plain = build_training_sampler(_fiber_cfg(), per_dataset, ["a", "b"])
    assert type(plain).__name__ == "TrainingSampler"


def _batch(*num_boxes):
    out = []
    for n in num_boxes:
        inst = Instances((8, 8))
        inst.gt_classes = torch.zeros(n, dtype=torch.int64)
        out.append({"instances": inst})
    return out


def test_batches_with_too_many_empty_images_are_skipped():
    batches = [_batch(1, 0, 2, 3, 1, 1, 1, 1), _batch(1, 2), _batch(0, 0), _batch(*[1] * 9, 0), _batch(0)]
    loader = SkipMostlyEmptyBatches(batches, max_empty_fraction=0.1)
    kept = list(loader)
    assert [len(b) for b in kept] == [2, 10]  # 1 of 8 empty > 10%: skipped; 1 of 10: kept
    assert loader.num_skipped == 3
    with pytest.raises(RuntimeError, match="3 training batches in a row"):
        list(SkipMostlyEmptyBatches([_batch(0)] * 5, 0.1, max_consecutive=3))


def test_train_loader_mixes_detection_and_grounding(tmp_path, tiny_tokenizer_dir):
    for i in range(4):
        write_image(tmp_path / f"{i}.png", size=(40, 30))
    _write_json(tmp_path / "det.json", {
        "images": [{"id": i, "file_name": f"{i}.png", "height": 30, "width": 40} for i in range(4)],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 10, 10], "iscrowd": 0}
                        for i in range(4)],
        "categories": [{"id": 1, "name": "circle"}],
    })
    _write_json(tmp_path / "grd.json", {
        "images": [{"id": 9, "file_name": "0.png", "height": 30, "width": 40, "caption": "the small circle"}],
        "annotations": [{"id": 1, "image_id": 9, "bbox": [2, 2, 10, 10], "tokens_positive": [[4, 16]]}],
    })
    register_coco_detection("t_mix_det", str(tmp_path / "det.json"), str(tmp_path))
    register_mdetr_grounding("t_mix_grd", str(tmp_path / "grd.json"), str(tmp_path))
    cfg = _fiber_cfg(**{
        "DATASETS.TRAIN": ("t_mix_det", "t_mix_grd"), "DATASETS.TRAIN_RATIOS": (1.0, 1.0),
        "MODEL.FIBER.TEXT.MODEL_NAME": str(tiny_tokenizer_dir), "SOLVER.IMS_PER_BATCH": 2,
        "DATALOADER.NUM_WORKERS": 0, "INPUT.MIN_SIZE_TRAIN": (30,), "INPUT.MAX_SIZE_TRAIN": 40,
    })
    loader = build_fiber_train_loader(cfg, FiberDatasetMapper(cfg, is_train=True))
    seen = set()
    for _, batch in zip(range(6), loader):
        assert len(batch) == 2
        for x in batch:
            assert len(x["instances"]) == 1 and x["image"].shape == (3, 30, 40)
            seen.add(x["caption"])
    assert seen == {"circle", "the small circle"}
