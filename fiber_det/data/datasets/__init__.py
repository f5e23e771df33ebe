from .builtin import register_all_builtin, register_synthetic
from .coco import load_coco_detection, register_coco_detection
from .mdetr import load_mdetr_grounding_json, register_mdetr_grounding

register_all_builtin()
