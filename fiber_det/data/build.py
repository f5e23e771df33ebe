"""The training data loader: several datasets mixed with sampling ratios, and the reference's rule
of skipping a batch in which too many images have no box."""
import itertools
import logging
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import torch
from detectron2.data import DatasetCatalog, build_detection_train_loader
from detectron2.data.build import filter_images_with_only_crowd_annotations
from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler

logger = logging.getLogger(__name__)


def dataset_repeat_factors(sizes: Sequence[int], ratios: Sequence[float]) -> List[float]:
    """Per-dataset repeat factor so that dataset ``i`` makes up ``ratios[i] / sum(ratios)`` of the
    sampled images while an epoch keeps the total number of images (the mean factor is 1)."""
    if len(sizes) != len(ratios):
        raise ValueError(f"DATASETS.TRAIN_RATIOS has {len(ratios)} entries for {len(sizes)} training datasets")
    if any(r <= 0 for r in ratios):
        raise ValueError(f"DATASETS.TRAIN_RATIOS must be positive, got {tuple(ratios)}")
    if any(n == 0 for n in sizes):
        raise ValueError(f"a training dataset is empty (sizes {tuple(sizes)})")
    total, ratio_sum = sum(sizes), float(sum(ratios))
    return [r / ratio_sum * total / n for r, n in zip(ratios, sizes)]


def load_training_dicts(names: Sequence[str], filter_empty: bool = True) -> List[List[Dict]]:
    """Each training dataset's dicts, images with only crowd boxes (or none) removed if ``filter_empty``.

    Unlike Detectron2's ``get_detection_dataset_dicts``, datasets may have different classes (the
    caption carries them), so their metadata is not required to agree.
    """
    per_dataset = []
    for name in names:
        dicts = DatasetCatalog.get(name)
        if filter_empty and dicts and "annotations" in dicts[0]:
            dicts = filter_images_with_only_crowd_annotations(dicts)
        if not dicts:
            raise ValueError(f"training dataset '{name}' has no image with a box")
        per_dataset.append(dicts)
    return per_dataset


def build_training_sampler(
    cfg, per_dataset: Sequence[Sequence[Dict]], names: Optional[Sequence[str]] = None
) -> torch.utils.data.Sampler:
    """TrainingSampler over the concatenation, or RepeatFactorTrainingSampler when
    DATASETS.TRAIN_RATIOS is set and/or DATALOADER.SAMPLER_TRAIN asks for LVIS-style category
    repeat factors (computed per detection dataset; both factors multiply)."""
    sizes = [len(d) for d in per_dataset]
    ratios = tuple(cfg.DATASETS.TRAIN_RATIOS)
    sampler_name = cfg.DATALOADER.SAMPLER_TRAIN
    if sampler_name not in ("TrainingSampler", "RepeatFactorTrainingSampler"):
        raise ValueError(f"DATALOADER.SAMPLER_TRAIN {sampler_name!r} is not supported by fiber-det's train loader")
    if not ratios and sampler_name == "TrainingSampler":
        return TrainingSampler(sum(sizes))
    factors = []
    dataset_factors = dataset_repeat_factors(sizes, ratios) if ratios else [1.0] * len(sizes)
    for dicts, f in zip(per_dataset, dataset_factors):
        if sampler_name == "RepeatFactorTrainingSampler" and dicts and dicts[0].get("task") != "grounding":
            category = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
                dicts, cfg.DATALOADER.REPEAT_THRESHOLD
            )
            factors.append(category * f)
        else:
            factors.append(torch.full((len(dicts),), f, dtype=torch.float32))
    for name, n, f in zip(names or cfg.DATASETS.TRAIN, sizes, dataset_factors):
        logger.info(f"training dataset '{name}': {n} images, repeat factor {f:.3f}")
    return RepeatFactorTrainingSampler(torch.cat(factors))


class SkipMostlyEmptyBatches:
    """Wraps a training loader and drops every batch in which all images, or more than
    ``max_empty_fraction`` of them, have no box (the reference's ``SOLVER.MAX_NEG_PER_BATCH``).

    Unlike the reference, where a skipped batch still uses up one of the MAX_ITER loader steps,
    here the next batch takes its place, so every iteration trains.
    """

    def __init__(self, loader: Iterable[List[Dict]], max_empty_fraction: float = 0.1, max_consecutive: int = 1000):
        self.loader = loader
        self.max_empty_fraction = max_empty_fraction
        self.max_consecutive = max_consecutive
        self.num_skipped = 0

    def __iter__(self) -> Iterator[List[Dict]]:
        consecutive = 0
        for batch in self.loader:
            n_empty = sum(len(x["instances"]) == 0 for x in batch)
            if n_empty == len(batch) or n_empty > len(batch) * self.max_empty_fraction:
                self.num_skipped += 1
                consecutive += 1
                logger.info(
                    f"skipping a batch: {n_empty} of its {len(batch)} images have no box "
                    f"(more than SOLVER.MAX_NEG_PER_BATCH = {self.max_empty_fraction}); {self.num_skipped} skipped so far"
                )
                if consecutive >= self.max_consecutive:
                    raise RuntimeError(
                        f"{consecutive} training batches in a row had too many images without boxes; check the "
                        "training datasets (all boxes dropped?) or raise SOLVER.MAX_NEG_PER_BATCH"
                    )
                continue
            consecutive = 0
            yield batch


def build_fiber_train_loader(cfg, mapper, *, dataset_names: Optional[Sequence[str]] = None):
    """Detectron2's train loader over DATASETS.TRAIN mixed by DATASETS.TRAIN_RATIOS, wrapped in
    :class:`SkipMostlyEmptyBatches`."""
    names = list(dataset_names or cfg.DATASETS.TRAIN)
    per_dataset = load_training_dicts(names, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    sampler = build_training_sampler(cfg, per_dataset, names)
    loader = build_detection_train_loader(
        list(itertools.chain.from_iterable(per_dataset)),
        mapper=mapper,
        sampler=sampler,
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    return SkipMostlyEmptyBatches(loader, cfg.SOLVER.MAX_NEG_PER_BATCH)
