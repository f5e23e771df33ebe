"""The synthetic quickstart dataset: determinism, file formats, caption correctness, skip logic."""
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fiber_det.data import synthetic as S

IMAGE_SIZE = (96, 128)  # (height, width): not square, so a swapped axis shows
SMALL = dict(num_train=4, num_val=3, image_size=IMAGE_SIZE, seed=3, captions_per_image=2)

PHRASE = re.compile(
    r"^(?:a|an|the) "
    rf"(?:(?P<size>{'|'.join(S.SIZES)}) )?"
    rf"(?:(?P<color>{'|'.join(S.COLORS)}) )?"
    rf"(?P<shape>{'|'.join(S.SHAPES)})"
    r"(?: on the (?P<h1>left|right)| at the (?P<v>top|bottom)(?: (?P<h2>left|right))?)?$"
)


def _parse(phrase: str) -> dict:
    match = PHRASE.match(phrase)
    assert match, f"phrase {phrase!r} does not follow the grammar"
    g = match.groupdict()
    return {"shape": g["shape"], "size": g["size"], "color": g["color"], "h": g["h1"] or g["h2"], "v": g["v"]}


def _fits(obj: dict, attrs: dict, band: float, image_size) -> bool:
    """Independent re-statement of the phrase semantics: obj has shape, color, size and bbox."""
    height, width = image_size
    x, y, w, h = obj["bbox"]
    cx, cy = x + w / 2, y + h / 2
    side = {"left": cx < band * width, "right": cx > (1 - band) * width,
            "top": cy < band * height, "bottom": cy > (1 - band) * height}  # fmt: skip
    return (
        obj["shape"] == attrs["shape"]
        and attrs["size"] in (None, obj["size"])
        and attrs["color"] in (None, obj["color"])
        and (attrs["h"] is None or side[attrs["h"]])
        and (attrs["v"] is None or side[attrs["v"]])
    )


def _assert_unambiguous(phrase: str, referent: dict, others: list, image_size) -> None:
    attrs = _parse(phrase)
    assert _fits(referent, attrs, S.POSITION_STRICT, image_size), f"{phrase!r} does not fit {referent}"
    for other in others:
        assert not _fits(other, attrs, S.POSITION_LAX, image_size), f"{phrase!r} also fits {other}"


def _as_dict(obj: S.SyntheticObject) -> dict:
    return {"shape": obj.shape, "color": obj.color, "size": obj.size, "bbox": obj.bbox}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return S.generate_synthetic_dataset(root, num_workers=1, **SMALL)


def _load(paths, key):
    return json.loads(Path(paths[key]).read_text())


def _files(root) -> dict:
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_runs_are_byte_identical(dataset, tmp_path):
    again = S.generate_synthetic_dataset(tmp_path / "again", num_workers=2, **SMALL)
    first, second = _files(dataset["root"]), _files(again["root"])
    assert len(first) == 4 + 3 + 4 + 2  # images, json files, meta.json + README.txt
    assert first == second


def test_single_sample_matches_full_run(dataset):
    coco = _load(dataset, "instances_val")
    grounding = _load(dataset, "grounding_val")
    sample = S.render_sample("val", 2, IMAGE_SIZE, seed=SMALL["seed"], captions_per_image=2)
    image = coco["images"][2]
    on_disk = np.asarray(Image.open(Path(dataset["images_val"]) / image["file_name"]))
    np.testing.assert_array_equal(on_disk, sample.image)
    assert sample.image.shape == (*IMAGE_SIZE, 3)
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    assert [(a["bbox"], S.SHAPES[a["category_id"] - 1], a["color"], a["size"]) for a in anns] == [
        (list(o.bbox), o.shape, o.color, o.size) for o in sample.objects
    ]
    captions = [e["caption"] for e in grounding["images"] if e["original_img_id"] == image["id"]]
    assert captions == [c.text for c in sample.captions]


def test_coco_file(dataset):
    coco_api = pytest.importorskip("pycocotools.coco")
    for split, count in (("train", SMALL["num_train"]), ("val", SMALL["num_val"])):
        coco = coco_api.COCO(dataset[f"instances_{split}"])
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(S.SHAPES)
        assert len(coco.getImgIds()) == count
        for image in coco.loadImgs(coco.getImgIds()):
            assert (Path(dataset[f"images_{split}"]) / image["file_name"]).is_file()
            assert (image["height"], image["width"]) == IMAGE_SIZE
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
            assert 1 <= len(anns) <= 6
            for ann in anns:
                x, y, w, h = ann["bbox"]
                assert 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"]
                assert 0 < ann["area"] <= w * h and ann["iscrowd"] == 0
                low, high = S.SIZES[ann["size"]]
                # the longer box side is the object's extent (+- one pixel of rasterisation)
                assert low * min(IMAGE_SIZE) - 1 <= max(w, h) <= high * min(IMAGE_SIZE) + 1
                assert ann["color"] in S.COLORS


def test_grounding_file(dataset):
    for split in ("train", "val"):
        coco, grounding = _load(dataset, f"instances_{split}"), _load(dataset, f"grounding_{split}")
        coco_boxes = {}
        for ann in coco["annotations"]:
            coco_boxes.setdefault(ann["image_id"], []).append(ann)
        entries = {e["id"]: e for e in grounding["images"]}
        assert len(entries) == len(grounding["images"]) >= 1
        for entry in grounding["images"]:
            assert entry["dataset_name"] == "synthetic" and entry["tokens_negative"] == []
            assert (entry["height"], entry["width"]) == IMAGE_SIZE
            image = coco["images"][entry["original_img_id"] - 1]
            assert image["id"] == entry["original_img_id"] and image["file_name"] == entry["file_name"]
            spans = [span for phrase in entry["tokens_positive_eval"] for span in phrase]
            assert all(len(phrase) == 1 for phrase in entry["tokens_positive_eval"])
            assert 1 <= len(spans) <= 3
            assert all(0 <= s < e <= len(entry["caption"]) for s, e in spans)
            assert all(e1 < s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))
            anns = [a for a in grounding["annotations"] if a["image_id"] == entry["id"]]
            assert sorted(span for a in anns for span in a["tokens_positive"]) == sorted(spans)
            for ann in anns:
                assert ann["category_id"] == 1 and ann["iscrowd"] == 0
                (start, end), = ann["tokens_positive"]
                phrase = entry["caption"][start:end]
                matches = [b for b in coco_boxes[image["id"]] if b["bbox"] == ann["bbox"]]
                assert len(matches) == 1, f"{phrase!r}: box {ann['bbox']} is not one COCO box of image {image['id']}"
                referent = matches[0]
                assert S.SHAPES[referent["category_id"] - 1] in phrase.split()
                assert ann["area"] == referent["area"]
                others = [
                    {**b, "shape": S.SHAPES[b["category_id"] - 1]} for b in coco_boxes[image["id"]] if b is not referent
                ]
                referent = {**referent, "shape": S.SHAPES[referent["category_id"] - 1]}
                _assert_unambiguous(phrase, referent, others, IMAGE_SIZE)


@pytest.mark.parametrize("image_size", [(256, 256), (96, 128)])
def test_phrases_pick_out_exactly_their_object(image_size):
    phrases = 0
    for index in range(30):
        sample = S.render_sample("train", index, image_size, seed=11, captions_per_image=3)
        assert 1 <= len(sample.captions) <= 3
        objects = [_as_dict(o) for o in sample.objects]
        for caption in sample.captions:
            assert caption.text.endswith(".")
            for phrase in caption.phrases:
                referent = objects[phrase.object_index]
                others = objects[: phrase.object_index] + objects[phrase.object_index + 1 :]
                _assert_unambiguous(caption.text[phrase.start : phrase.end], referent, others, image_size)
                phrases += 1
    assert phrases > 60


def test_output_is_pinned():
    """Guards the "same on every machine" promise. If this fails after an intended change of the
    output, bump GENERATOR_VERSION and update the digest."""
    sample = S.render_sample("train", 5, (64, 80), seed=1, captions_per_image=2)
    digest = hashlib.sha256(sample.image.tobytes())
    digest.update(repr((sample.objects, sample.captions)).encode())
    assert digest.hexdigest() == "b33f4c51aa7315e8f8db169bbab63e5310a49ebeb902a7e90a831198a0c7f977"


def test_skips_when_up_to_date(tmp_path):
    params = dict(SMALL, num_train=2, num_val=1)
    paths = S.generate_synthetic_dataset(tmp_path, num_workers=1, **params)

    def mtimes():
        return {p: p.stat().st_mtime_ns for p in Path(tmp_path).rglob("*") if p.is_file()}

    before = mtimes()
    assert S.generate_synthetic_dataset(tmp_path, num_workers=1, **params) == paths
    assert mtimes() == before

    image = Path(paths["images_train"]) / "000001.png"
    image.unlink()  # an incomplete dataset is regenerated
    S.generate_synthetic_dataset(tmp_path, num_workers=1, **params)
    assert image.is_file()

    before = mtimes()
    S.generate_synthetic_dataset(tmp_path, num_workers=1, overwrite=True, **params)
    assert all(mtimes()[p] >= before[p] for p in before)
    assert mtimes()[Path(paths["meta"])] > before[Path(paths["meta"])]

    # New parameters regenerate, and images beyond the new count are removed.
    S.generate_synthetic_dataset(tmp_path, num_workers=1, **dict(params, num_train=1))
    assert sorted(p.name for p in Path(paths["images_train"]).iterdir()) == ["000000.png"]
    meta = json.loads(Path(paths["meta"]).read_text())
    assert meta["version"] == S.GENERATOR_VERSION and meta["params"]["num_train"] == 1
    assert len(_load(paths, "instances_train")["images"]) == 1


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="too small"):
        S.render_sample("train", 0, (16, 16))
    with pytest.raises(ValueError, match="objects_per_image"):
        S.render_sample("train", 0, objects_per_image=(3, 2))
    with pytest.raises(ValueError, match="non-negative"):
        S.generate_synthetic_dataset(tmp_path, num_train=-1)
