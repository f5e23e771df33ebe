"""Reading annotation files, with errors that name the dataset and the file."""
import json
import os
from typing import Dict, Optional, Sequence


def read_annotation_json(json_file: str, dataset_name: Optional[str], required: Sequence[str], what: str) -> Dict:
    """Load ``json_file`` and check it has the ``required`` top-level lists; ``what`` names the
    format in the error (e.g. "a COCO detection file")."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"dataset '{dataset_name}': annotation file {json_file} not found "
            f"(see datasets/README.md for the expected layout under $FIBER_DATASETS)"
        )
    with open(json_file) as f:
        data = json.load(f)
    for key in required:
        if key not in data:
            raise ValueError(f"{json_file}: not {what} (no '{key}' list)")
    return data
