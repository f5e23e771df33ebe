"""Built-in dataset names, registered over Detectron2's own where they share one (``coco_2017_val``,
``lvis_v1_val``, ...), so that the dicts carry fiber-det's ``task`` / ``dataset_name`` keys.

Files are found under ``$FIBER_DATASETS`` (default ``datasets/`` in the working directory); see
datasets/README.md for the folder tree and ``python -m fiber_det.data.datasets.check`` to see what is
present. Registering reads no file: a missing dataset only fails when it is used.
"""
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

from detectron2.data import DatasetCatalog, MetadataCatalog

from .coco import register_coco_detection
from .flickr import register_flickr30k_entities
from .lvis import register_lvis_detection
from .mdetr import register_mdetr_grounding
from .odinw import BENCHMARKS, SPLITS

logger = logging.getLogger(__name__)

ImageRoot = Union[str, Dict[str, str]]


def datasets_root() -> str:
    return os.path.expanduser(os.getenv("FIBER_DATASETS", "datasets"))


@dataclass
class BuiltinDataset:
    """One registered name: its family, loader kind, files (relative to the root) and metadata."""

    name: str
    family: str
    kind: str  # "coco", "lvis", "mdetr" or "flickr_entities"
    json_file: str  # the annotation file; for "flickr_entities", the split list beside Sentences/ and Annotations/
    image_root: ImageRoot
    metadata: Dict = field(default_factory=dict)

    def paths(self, root: str):
        """(annotation file, image folders) under ``root``."""
        roots = self.image_root.values() if isinstance(self.image_root, dict) else [self.image_root]
        return os.path.join(root, self.json_file), [os.path.join(root, r) for r in roots]

    def register(self, root: str) -> None:
        json_file = os.path.join(root, self.json_file)
        if isinstance(self.image_root, dict):
            image_root: ImageRoot = {k: os.path.join(root, v) for k, v in self.image_root.items()}
        else:
            image_root = os.path.join(root, self.image_root)
        if self.kind == "coco":
            register_coco_detection(self.name, json_file, image_root, **self.metadata)
        elif self.kind == "lvis":
            register_lvis_detection(self.name, json_file, image_root, **self.metadata)
        elif self.kind == "mdetr":
            register_mdetr_grounding(self.name, json_file, image_root, **self.metadata)
        elif self.kind == "flickr_entities":
            register_flickr30k_entities(self.name, os.path.dirname(json_file), image_root, json_file, **self.metadata)
        else:
            raise ValueError(f"builtin dataset '{self.name}': unknown kind {self.kind!r}")


MDETR = "mdetr_annotations"


def _builtin_datasets() -> List[BuiltinDataset]:
    out: List[BuiltinDataset] = []
    # COCO 2017: detection-as-grounding for training (all 80 names, shuffled), detection for val.
    for split in ("train", "val"):
        out.append(BuiltinDataset(f"coco_2017_{split}", "coco", "coco",
                                  f"coco/annotations/instances_{split}2017.json", f"coco/{split}2017"))
    # LVIS v1 on COCO 2017 images; training captions sample negatives (the reference always draws
    # the full number for LVIS: control (0, 0, 1, 0)).
    out.append(BuiltinDataset("lvis_v1_train", "lvis", "lvis", "lvis/lvis_v1_train.json", "coco",
                              {"prompt_style": "sampled", "control_prob": (0.0, 0.0, 1.0, 0.0)}))
    for split in ("val", "minival"):
        out.append(BuiltinDataset(f"lvis_v1_{split}", "lvis", "lvis", f"lvis/lvis_v1_{split}.json", "coco",
                                  {"prompt_style": "sampled"}))
    # Objects365 (COCO-style JSON): v1 file names and v2's.
    for prefix, stem in (("objects365", "objects365_{}"), ("objects365_v2", "zhiyuan_objv2_{}")):
        for split in ("train", "val"):
            out.append(BuiltinDataset(f"{prefix}_{split}", "objects365", "coco",
                                      f"objects365/annotations/{stem.format(split)}.json", f"objects365/{split}",
                                      {"prompt_style": "sampled"}))
    # GoldG: MDETR's mixed VG / GQA grounding captions with COCO images removed (Flickr30k is
    # flickr30k_train); an image's data_source picks its folder.
    out.append(BuiltinDataset("mixed_train_no_coco", "goldg", "mdetr", f"{MDETR}/final_mixed_train_no_coco.json",
                              {"coco": "coco/train2014", "vg": "gqa/images"}))
    # Flickr30k Entities: separate boxes per phrase (the standard), and MDETR's merged-box variant.
    for split in ("train", "val", "test"):
        out.append(BuiltinDataset(f"flickr30k_{split}", "flickr30k", "mdetr",
                                  f"{MDETR}/final_flickr_separateGT_{split}.json", "flickr30k/flickr30k-images"))
        out.append(BuiltinDataset(f"flickr30k_merged_{split}", "flickr30k", "mdetr",
                                  f"{MDETR}/final_flickr_mergedGT_{split}.json", "flickr30k/flickr30k-images"))
        # The same from the original release (Sentences/, Annotations/, split lists), no MDETR files needed.
        out.append(BuiltinDataset(f"flickr30k_entities_{split}", "flickr30k", "flickr_entities",
                                  f"flickr30k/flickr30k_entities/{split}.txt", "flickr30k/flickr30k-images"))
        out.append(BuiltinDataset(f"flickr30k_entities_merged_{split}", "flickr30k", "flickr_entities",
                                  f"flickr30k/flickr30k_entities/{split}.txt", "flickr30k/flickr30k-images",
                                  {"merged": True}))
    # RefCOCO / RefCOCO+ / RefCOCOg on COCO train2014 images.
    for dataset, splits in (("refcoco", ("train", "val", "testA", "testB")),
                            ("refcoco+", ("train", "val", "testA", "testB")),
                            ("refcocog", ("train", "val", "test"))):
        for split in splits:
            out.append(BuiltinDataset(f"{dataset}_{split}", "refcoco", "mdetr",
                                      f"{MDETR}/finetune_{dataset}_{split}.json", "coco/train2014",
                                      {"evaluator_type": "refexp"}))
    # The generated quickstart data (tools/quickstart.py): a detection and a grounding view.
    for split in ("train", "val"):
        out.append(BuiltinDataset(f"synthetic_{split}", "synthetic", "coco",
                                  f"synthetic/annotations/instances_{split}.json", f"synthetic/images/{split}"))
        out.append(BuiltinDataset(f"synthetic_grounding_{split}", "synthetic", "mdetr",
                                  f"synthetic/annotations/grounding_{split}.json", f"synthetic/images/{split}"))
    # ODinW: class names from the benchmark's configs; images next to each annotation file.
    for benchmark, table in BENCHMARKS.items():
        for short, entry in table.items():
            for split in SPLITS:
                ann = os.path.join("odinw", entry["ann"][split])
                out.append(BuiltinDataset(f"{benchmark}_{short}_{split}", benchmark, "coco", ann, os.path.dirname(ann),
                                          {"thing_classes": entry["classes"], "odinw_key": entry["glip_key"]}))
    return out


BUILTIN_DATASETS: List[BuiltinDataset] = _builtin_datasets()


def _unregister(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def register_synthetic(root: str, prefix: str = "synthetic", replace: bool = False) -> None:
    """The generated quickstart data (fiber_det/data/synthetic.py): ``{prefix}_{split}`` is the
    detection view (COCO JSON) and ``{prefix}_grounding_{split}`` the grounding view (MDETR style).
    Names already registered are kept unless ``replace``."""
    for split in ("train", "val"):
        image_root = os.path.join(root, "images", split)
        names = (f"{prefix}_{split}", f"{prefix}_grounding_{split}")
        if names[0] in DatasetCatalog.list():
            if not replace:
                continue
            for name in names:
                _unregister(name)
        register_coco_detection(names[0], os.path.join(root, "annotations", f"instances_{split}.json"), image_root)
        register_mdetr_grounding(names[1], os.path.join(root, "annotations", f"grounding_{split}.json"), image_root)


def register_all_builtin(root: Optional[str] = None) -> None:
    """Register every built-in name with files under ``root`` (default: ``$FIBER_DATASETS``),
    replacing earlier registrations of the same names (Detectron2's, or a previous root's)."""
    root = datasets_root() if root is None else root
    for spec in BUILTIN_DATASETS:
        _unregister(spec.name)
        spec.register(root)


_REGISTER_KINDS = ("coco", "grounding", "refexp", "lvis")


def register_datasets_from_config(cfg) -> List[str]:
    """Register the datasets of ``cfg.DATASETS.REGISTER``, e.g. in a yaml::

        DATASETS:
          REGISTER:
            my_train: {JSON_FILE: path/to/train.json, IMAGE_ROOT: path/to/images}
            my_phrases_val: {JSON_FILE: val.json, IMAGE_ROOT: images, TYPE: grounding}
          TRAIN: ("my_train",)

    TYPE: "coco" (COCO detection, the default), "grounding" (MDETR-style captions), "refexp"
    (MDETR-style referring expressions) or "lvis"; PROMPT_STYLE ("categories" or "sampled") applies
    to detection files. Relative paths are taken from the working directory. A name already
    registered with the same files is left as is; the config wins over other registrations.
    Returns the names (re)registered.
    """
    registered = []
    for name, spec in cfg.DATASETS.REGISTER.items():
        unknown = set(spec.keys()) - {"JSON_FILE", "IMAGE_ROOT", "TYPE", "PROMPT_STYLE"}
        missing = {"JSON_FILE", "IMAGE_ROOT"} - set(spec.keys())
        if unknown or missing:
            raise ValueError(
                f"DATASETS.REGISTER.{name}: needs JSON_FILE and IMAGE_ROOT, may have TYPE and PROMPT_STYLE; "
                f"missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        kind = spec.get("TYPE", "coco")
        if kind not in _REGISTER_KINDS:
            raise ValueError(f"DATASETS.REGISTER.{name}.TYPE must be one of {_REGISTER_KINDS}, got {kind!r}")
        json_file, image_root = spec.JSON_FILE, spec.IMAGE_ROOT
        if name in DatasetCatalog.list():
            meta = MetadataCatalog.get(name)
            if meta.get("json_file") == json_file and meta.get("image_root") == image_root:
                continue
            logger.info(f"DATASETS.REGISTER.{name}: replaces the earlier registration of '{name}'")
            _unregister(name)
        style = spec.get("PROMPT_STYLE", "categories")
        if kind == "coco":
            register_coco_detection(name, json_file, image_root, prompt_style=style)
        elif kind == "lvis":
            register_lvis_detection(name, json_file, image_root, prompt_style=style)
        else:
            register_mdetr_grounding(name, json_file, image_root, evaluator_type=kind)
        registered.append(name)
    return registered
