"""Built-in dataset names. Roots come from $FIBER_DATASETS (default ``datasets/`` in the working
directory); see datasets/README.md for the expected folder tree."""
import os

from detectron2.data import DatasetCatalog

from .coco import register_coco_detection
from .mdetr import register_mdetr_grounding


def datasets_root() -> str:
    return os.path.expanduser(os.getenv("FIBER_DATASETS", "datasets"))


def register_synthetic(root: str, prefix: str = "synthetic") -> None:
    """The generated quickstart data (fiber_det/data/synthetic.py): ``{prefix}_{split}`` is the
    detection view (COCO JSON) and ``{prefix}_grounding_{split}`` the grounding view (MDETR style)."""
    for split in ("train", "val"):
        image_root = os.path.join(root, "images", split)
        names = (f"{prefix}_{split}", f"{prefix}_grounding_{split}")
        if names[0] in DatasetCatalog.list():
            continue
        register_coco_detection(names[0], os.path.join(root, "annotations", f"instances_{split}.json"), image_root)
        register_mdetr_grounding(names[1], os.path.join(root, "annotations", f"grounding_{split}.json"), image_root)


def register_all_builtin() -> None:
    register_synthetic(os.path.join(datasets_root(), "synthetic"))
