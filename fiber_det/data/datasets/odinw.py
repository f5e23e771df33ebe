"""ODinW-13 and ODinW-35 (Roboflow exports in COCO format), one registered name per dataset and
split: ``odinw13_{name}_{split}`` and ``odinw35_{name}_{split}``, split in train / val / test."""
from typing import Dict, List

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
