"""ODinW-13 and ODinW-35 (Roboflow exports in COCO format), one registered name per dataset and
split: ``odinw13_{name}_{split}`` and ``odinw35_{name}_{split}``, split in train / val / test; and
where a benchmark's files are (:func:`locate_odinw`, used by tools/eval_odinw.py)."""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from .coco import register_coco_detection
from .odinw_meta import ODINW_13, ODINW_35, ODINW_35_OFFICIAL

SPLITS = ("train", "val", "test")
BENCHMARKS: Dict[str, Dict[str, dict]] = {"odinw13": ODINW_13, "odinw35": ODINW_35}


def odinw_dataset_names(benchmark: str = "odinw35", split: str = "test") -> List[str]:
    """Registered names of a benchmark's datasets: ``odinw_dataset_names("odinw13")`` lists the 13
    test sets (ODinW-35's list is the official 35, without plantdoc_100x100)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {sorted(BENCHMARKS)}, got {benchmark!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    datasets = ODINW_35_OFFICIAL if benchmark == "odinw35" else list(ODINW_13)
    return [f"{benchmark}_{name}_{split}" for name in datasets]


def odinw_names(benchmark: str) -> List[str]:
    """The short names of a benchmark's datasets (``Aquarium``, ``pistols``, ...), in benchmark order;
    ODinW-35's are the official 35."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {sorted(BENCHMARKS)}, got {benchmark!r}")
    return list(ODINW_35_OFFICIAL) if benchmark == "odinw35" else list(ODINW_13)


@dataclass
class OdinwFiles:
    """Where one ODinW dataset split was looked for, and whether it is there."""

    name: str  # short name, e.g. "Aquarium"
    registered_name: str  # e.g. "odinw13_Aquarium_test"
    json_file: str
    image_root: str

    @property
    def missing(self) -> List[str]:
        return [p for p, ok in ((self.json_file, os.path.isfile(self.json_file)),
                                (self.image_root, os.path.isdir(self.image_root))) if not ok]


def locate_odinw(
    benchmark: str,
    names: Sequence[str],
    split: str,
    root: str,
    annotation_files: Optional[Dict[str, str]] = None,
    image_roots: Optional[Dict[str, str]] = None,
) -> List[OdinwFiles]:
    """The files of ``names`` (short names of ``benchmark``) for ``split``.

    Files are looked for where GLIP's download script puts them (``odinw_meta.py``: ``ann`` paths,
    images in the annotation file's folder) under ``root``, which is the datasets root holding
    ``odinw/`` or that ``odinw/`` folder itself. ``annotation_files`` / ``image_roots`` give a
    dataset's annotation file / image folder elsewhere (images default to the file's folder,
    against which COCO ``file_name`` entries are resolved).
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {sorted(BENCHMARKS)}, got {benchmark!r}")
    table = BENCHMARKS[benchmark]
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"{benchmark} has no dataset(s) {unknown}; its datasets are {sorted(table)}")
    annotation_files, image_roots = annotation_files or {}, image_roots or {}
    for option in (annotation_files, image_roots):
        extra = sorted(set(option) - set(names))
        if extra:
            raise ValueError(f"files given for {extra}, which are not among the datasets evaluated {list(names)}")
    odinw_root = os.path.join(root, "odinw") if os.path.isdir(os.path.join(root, "odinw")) else root
    out = []
    for name in names:
        json_file = annotation_files.get(name) or os.path.join(odinw_root, table[name]["ann"][split])
        image_root = image_roots.get(name) or os.path.dirname(json_file)
        out.append(OdinwFiles(name, f"{benchmark}_{name}_{split}", json_file, image_root))
    return out


def register_odinw(benchmark: str, files: OdinwFiles) -> None:
    """(Re-)register ``files.registered_name`` with ``files``' paths and the benchmark's class names."""
    entry = BENCHMARKS[benchmark][files.name]
    for catalog in (DatasetCatalog, MetadataCatalog):
        if files.registered_name in catalog.list():
            catalog.remove(files.registered_name)
    register_coco_detection(files.registered_name, files.json_file, files.image_root,
                            thing_classes=entry["classes"], odinw_key=entry["glip_key"])
