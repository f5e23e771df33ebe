from .builtin import (
    BUILTIN_DATASETS,
    datasets_root,
    register_all_builtin,
    register_datasets_from_config,
    register_synthetic,
)
from .coco import load_coco_detection, register_coco_detection
from .lvis import load_lvis_detection, register_lvis_detection
from .mdetr import load_mdetr_grounding_json, register_mdetr_grounding
from .odinw import odinw_dataset_names

register_all_builtin()

__all__ = [
    "BUILTIN_DATASETS",
    "datasets_root",
    "load_coco_detection",
    "load_lvis_detection",
    "load_mdetr_grounding_json",
    "odinw_dataset_names",
    "register_all_builtin",
    "register_coco_detection",
    "register_datasets_from_config",
    "register_lvis_detection",
    "register_mdetr_grounding",
    "register_synthetic",
]
