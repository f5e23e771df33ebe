"""List which built-in datasets are present under $FIBER_DATASETS and which files are missing.

    python -m fiber_det.data.datasets.check                      # every family, one line per name
    python -m fiber_det.data.datasets.check --family coco lvis   # only these families
    python -m fiber_det.data.datasets.check --family odinw13 --images   # also look for every image

Exit status: 0 when every listed dataset is complete, 1 otherwise.
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

from .builtin import BUILTIN_DATASETS, BuiltinDataset, datasets_root


def _image_files(spec: BuiltinDataset, json_file: str, root: str) -> List[str]:
    """Paths of every image the annotation file lists."""
    with open(json_file) as f:
        images = json.load(f)["images"]
    if isinstance(spec.image_root, dict):
        roots = {k: os.path.join(root, v) for k, v in spec.image_root.items()}
        return [os.path.join(roots.get(img.get("data_source"), ""), img["file_name"]) for img in images]
    image_root = os.path.join(root, spec.image_root)
    if spec.kind == "lvis":
        return [
            os.path.join(image_root, *img["coco_url"].split("/")[-2:]) if "coco_url" in img
            else os.path.join(image_root, img["file_name"])
            for img in images
        ]
    return [os.path.join(image_root, img["file_name"]) for img in images]


def check_dataset(spec: BuiltinDataset, root: str, images: bool = False) -> Dict:
    """{"name", "family", "ok", "missing": [what is missing, one entry per file or folder]}."""
    json_file, folders = spec.paths(root)
    missing = []
    if not os.path.isfile(json_file):
        missing.append(json_file)
    missing += [d for d in folders if not os.path.isdir(d)]
    if images and not missing:
        absent = [p for p in _image_files(spec, json_file, root) if not os.path.isfile(p)]
        if absent:
            missing.append(f"{len(absent)} image files, e.g. {absent[0]}")
    return {"name": spec.name, "family": spec.family, "ok": not missing, "missing": missing}


def main(argv: Optional[Sequence[str]] = None) -> int:
    families = sorted({s.family for s in BUILTIN_DATASETS})
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="datasets root (default: $FIBER_DATASETS or ./datasets)")
    parser.add_argument("--family", nargs="*", choices=families, help="families to check (default: all)")
    parser.add_argument("--images", action="store_true", help="also check that every listed image file exists")
    args = parser.parse_args(argv)
    root = args.root or datasets_root()
    specs = [s for s in BUILTIN_DATASETS if not args.family or s.family in args.family]
    print(f"datasets root: {os.path.abspath(root)}")
    results = [check_dataset(s, root, args.images) for s in specs]
    width = max(len(r["name"]) for r in results)
    for r in results:
        status = "ok" if r["ok"] else "MISSING " + "; ".join(r["missing"])
        print(f"  {r['family']:<10} {r['name']:<{width}}  {status}")
    present = sum(r["ok"] for r in results)
    print(f"{present} of {len(results)} datasets present")
    return 0 if present == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
