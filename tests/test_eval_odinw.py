"""tools/eval_odinw.py end to end on the real ODinW Aquarium test split (../shared/data) with a
quickstart-style checkpoint, plus dataset discovery in GLIP's folder layout and its error cases."""
import csv
import json
import sys
from pathlib import Path

import pytest
import torch

from test_tools import ROOT, TINY, run
from test_zero_shot import CONFIG, tiny_checkpoint

AQUARIUM = Path(__file__).resolve().parents[2] / "shared" / "data" / "odinw_aquarium_v2_raw1024_test"
AQUARIUM_JSON = AQUARIUM / "test_annotations_coco.json"
# Where GLIP's download script puts the split (fiber_det/data/datasets/odinw_meta.py).
GLIP_DIR = Path("odinw/Aquarium/Aquarium Combined.v2-raw-1024.coco/test")

needs_aquarium = pytest.mark.skipif(not AQUARIUM_JSON.is_file(), reason=f"{AQUARIUM_JSON} not found")


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


def _tool_args(text_dir, ckpt, out, *extra):
    return ["--config-file", str(CONFIG), *extra, "OUTPUT_DIR", str(out), "MODEL.FIBER.TEXT.MODEL_NAME", str(text_dir),
            "MODEL.WEIGHTS", str(ckpt), "TEST.IMS_PER_BATCH", "4", "MODEL.FIBER.INFERENCE_TH", "0.0"] + TINY


@needs_aquarium
def test_real_aquarium_split_end_to_end(checkpoint, tiny_text_dir, tmp_path):
    _, env, ckpt = checkpoint
    out = tmp_path / "odinw"
    # The sample keeps the split's COCO file at its top and images under test/images/ (file_name
    # "test/images/..."), not in GLIP's layout: --ann points at the file, images resolve from its folder.
    # pistols and Raccoon are not on disk: listed before any evaluation and left out of the mean.
    res = run([str(ROOT / "tools/eval_odinw.py")] + _tool_args(
        tiny_text_dir, ckpt, out, "--suite", "odinw13", "--datasets", "Aquarium,pistols,Raccoon",
        "--root", str(tmp_path / "empty"), "--ann", f"Aquarium={AQUARIUM_JSON}"), env)
    stdout = res.stdout
    assert "1 of 3 datasets found" in stdout
    assert stdout.index("not found: pistols") < stdout.index("not found: Raccoon") < stdout.index("| dataset |")
    assert "annotations_without_background.json" in stdout.split("not found: pistols")[1].splitlines()[0]

    rows = list(csv.DictReader((out / "odinw13_test.csv").open()))
    assert [r["dataset"] for r in rows] == ["Aquarium", "mean (1 of 3)"]
    assert rows[0]["images"] == "63"
    for key in ("AP", "AP50", "AP75"):
        assert 0.0 <= float(rows[0][key]) <= 100.0 and rows[1][key] == rows[0][key]
    md = (out / "odinw13_test.md").read_text()
    assert f"| Aquarium | {rows[0]['AP']} | {rows[0]['AP50']} |" in md and md.splitlines()[2] in stdout
    payload = json.loads((out / "odinw13_test.json").read_text())
    assert payload["not_found"].keys() == {"pistols", "Raccoon"}
    assert payload["checkpoint"]["sha256"] and "AP" in payload["protocol"]
    # Aquarium's own prompt: the ODinW-13 class names of the dataset.
    assert "Aquarium" in payload["results"] and "AP-penguin" in payload["results"]["Aquarium"]["bbox"]


def _load_tool():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import eval_odinw
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return eval_odinw


@needs_aquarium
def test_glip_layout_under_root(checkpoint, tiny_text_dir, tmp_path, capsys):
    """Found without --ann under --root in GLIP's layout: annotations_without_background.json with the
    split's images beside it (here 5 of the real images, linked)."""
    _, _, ckpt = checkpoint
    data = json.loads(AQUARIUM_JSON.read_text())
    split_dir = tmp_path / "datasets" / GLIP_DIR
    split_dir.mkdir(parents=True)
    images = data["images"][:5]
    for img in images:
        (split_dir / Path(img["file_name"]).name).symlink_to(AQUARIUM / img["file_name"])
    ids = {img["id"] for img in images}
    export = {
        "images": [{**img, "file_name": Path(img["file_name"]).name} for img in images],
        "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
        "categories": data["categories"],
    }
    (split_dir / "annotations_without_background.json").write_text(json.dumps(export))

    tool = _load_tool()
    out = tmp_path / "out"
    args = tool.argument_parser().parse_args(_tool_args(
        tiny_text_dir, ckpt, out, "--suite", "odinw35", "--datasets", "Aquarium", "--root", str(tmp_path / "datasets")))
    result = tool.main(args)
    assert [r["dataset"] for r in result["table"]] == ["Aquarium", "mean"]
    assert result["table"][0]["images"] == 5
    assert "1 of 1 datasets found" in capsys.readouterr().out


def test_nothing_found_fails_up_front_and_names_are_checked(tmp_path):
    tool = _load_tool()
    base = ["--config-file", str(CONFIG), "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.DEVICE", "cpu"]
    args = tool.argument_parser().parse_args(["--suite", "odinw13", "--root", str(tmp_path)] + base)
    with pytest.raises(SystemExit, match="none of the 13 datasets of odinw13"):
        tool.main(args)
    args = tool.argument_parser().parse_args(["--datasets", "Aquarium,Nemo", "--root", str(tmp_path)] + base)
    with pytest.raises(SystemExit, match=r"odinw13 has no dataset\(s\) \['Nemo'\]"):
        tool.main(args)
    args = tool.argument_parser().parse_args(["--datasets", "Aquarium", "--ann", "pistols=x.json"] + base)
    with pytest.raises(SystemExit, match=r"files given for \['pistols'\]"):
        tool.main(args)
