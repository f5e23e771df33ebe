"""Inference over chunked prompts (ARCHITECTURE.md section 9): a vocabulary too large for one caption
(LVIS: 1203 classes) is split into prompts of TEST.PROMPT_CHUNK_SIZE categories by the mapper
(``prompt_chunks``); the detector runs once per prompt and each image's detections are merged.

Image and text are fused inside the backbone, so the image features depend on the prompt: the whole
model runs once per chunk and no image-side computation can be cached across chunks.
"""
from typing import Dict, List, Sequence

import torch
from detectron2.structures import Instances


def merge_chunk_detections(per_chunk: Sequence[Instances], class_ids: Sequence[Sequence[int]]) -> Instances:
    """One image's detections from every chunk, best score first. Chunk k's class index j (its j-th
    category) becomes the dataset class ``class_ids[k][j]``. Each chunk keeps what its own
    post-processing kept (at most MODEL.FIBER.DETECTIONS_PER_IMAGE); there is no cap across chunks."""
    if len(per_chunk) != len(class_ids) or not per_chunk:
        raise ValueError(f"merge_chunk_detections: {len(per_chunk)} chunk results for {len(class_ids)} chunks")
    mapped = []
    for k, (inst, ids) in enumerate(zip(per_chunk, class_ids)):
        ids = torch.as_tensor(list(ids), dtype=torch.long, device=inst.pred_classes.device)
        if len(inst) and int(inst.pred_classes.max()) >= len(ids):
            raise ValueError(
                f"merge_chunk_detections: chunk {k} lists {len(ids)} categories but a detection has class "
                f"index {int(inst.pred_classes.max())}"
            )
        out = Instances(inst.image_size, **inst.get_fields())
        out.pred_classes = ids[inst.pred_classes]
        mapped.append(out)
    merged = Instances.cat(mapped)
    return merged[torch.sort(merged.scores, descending=True, stable=True).indices]


def chunked_inference(model, batched_inputs: List[Dict]) -> List[Dict]:
    """Run ``model`` (in eval mode) once per prompt chunk and merge each image's detections.

    Each input carries ``prompt_chunks``: a list of {"caption", "class_spans", "class_ids"}, where
    ``class_spans[j]`` names dataset class ``class_ids[j]`` in ``caption``. Every image of the batch
    must have the same number of chunks (they come from one dataset's vocabulary).
    """
    counts = {len(x.get("prompt_chunks") or ()) for x in batched_inputs}
    if len(counts) != 1 or 0 in counts:
        ids = [x.get("image_id") for x in batched_inputs]
        raise ValueError(
            f"chunked inference: images {ids} have {sorted(counts)} prompt chunks; every image of a batch needs "
            "the same non-zero number (evaluate one dataset per loader)"
        )
    num_chunks = counts.pop()
    per_image: List[List[Instances]] = [[] for _ in batched_inputs]
    for k in range(num_chunks):
        inputs = []
        for x in batched_inputs:
            chunk = x["prompt_chunks"][k]
            inputs.append({**{key: v for key, v in x.items() if key != "prompt_chunks"},
                           "caption": chunk["caption"], "class_spans": chunk["class_spans"]})
        for i, out in enumerate(model(inputs)):
            per_image[i].append(out["instances"])
    return [
        {"instances": merge_chunk_detections(dets, [c["class_ids"] for c in x["prompt_chunks"]])}
        for dets, x in zip(per_image, batched_inputs)
    ]
