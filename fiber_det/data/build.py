"""The training data loader: several datasets mixed with sampling ratios, the reference's rule of
skipping a batch in which too many images have no box, and a resumable, deterministic data stream.

Determinism: the batches a process sees are a pure function of (seed, loader state). Each epoch's
order comes from a generator seeded with (seed, epoch); every sample is mapped with Python, NumPy and
torch RNGs seeded from (seed, epoch, position), whichever worker maps it; aspect-ratio grouping runs on
dataset indices (from the dicts' width/height) before mapping. The state after a batch (epoch,
position, grouping buckets) travels with the batch, so a checkpoint can record exactly where the
trainer is, and a resumed run produces the same batches for any DATALOADER.NUM_WORKERS.
"""
import contextlib
import copy
import itertools
import logging
import random
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.build import filter_images_with_only_crowd_annotations
from detectron2.data.common import DatasetFromList
from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler
from detectron2.utils import comm

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

    def state_dict(self) -> Dict[str, Any]:
        """The wrapped loader's position (if it has one) and the skip counter."""
        state = {"num_skipped": self.num_skipped}
        if hasattr(self.loader, "state_dict"):
            state["loader"] = self.loader.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.num_skipped = int(state.get("num_skipped", 0))
        if "loader" in state:
            if not hasattr(self.loader, "load_state_dict"):
                raise TypeError(f"{type(self.loader).__name__} cannot restore a data-loader position")
            self.loader.load_state_dict(state["loader"])

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


def _seeds(*entropy: int, n: int = 1) -> List[int]:
    """``n`` independent 32-bit seeds derived from the integers in ``entropy``."""
    return [int(x) for x in np.random.SeedSequence([int(e) for e in entropy]).generate_state(n)]


@contextlib.contextmanager
def seeded_rngs(seed: int):
    """Seed Python's, NumPy's and torch's (CPU) global RNGs for the block, then restore them, so that
    mapping a sample in the main process leaves the training RNG streams untouched."""
    py_state, np_state = random.getstate(), np.random.get_state()
    s_py, s_np, s_torch = _seeds(seed, n=3)
    with torch.random.fork_rng(devices=[]):
        random.seed(s_py)
        np.random.seed(s_np)
        torch.manual_seed(s_torch)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class DeterministicBatchSampler:
    """This process's batches of ``(dataset index, epoch, position)``, a pure function of the state.

    Epoch ``e`` visits the indices that ``sampler`` (a Detectron2 TrainingSampler or
    RepeatFactorTrainingSampler, used for its settings) would draw for one epoch, in an order seeded
    by ``(seed, e)``; process ``rank`` takes positions ``rank, rank + world_size, ...``. With
    ``group_ids`` (0 for landscape images, 1 otherwise) a batch holds images of one group, as in
    Detectron2's AspectRatioGroupedDataset, but grouped before mapping.
    """

    def __init__(self, sampler, batch_size: int, group_ids: Optional[Sequence[int]] = None,
                 rank: int = 0, world_size: int = 1):
        if not isinstance(sampler, (TrainingSampler, RepeatFactorTrainingSampler)):
            raise TypeError(f"expected a TrainingSampler or RepeatFactorTrainingSampler, got {type(sampler).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch size per process must be >= 1, got {batch_size}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.group_ids = list(group_ids) if group_ids is not None else None
        self.rank, self.world_size = rank, world_size

    @staticmethod
    def initial_state(seed: int) -> Dict[str, Any]:
        return {"seed": int(seed), "epoch": 0, "position": 0, "buckets": [[], []]}

    def epoch_order(self, seed: int, epoch: int) -> List[int]:
        g = torch.Generator()
        g.manual_seed(_seeds(seed, epoch)[0])
        if isinstance(self.sampler, RepeatFactorTrainingSampler):
            indices = self.sampler._get_epoch_indices(g)
        else:
            indices = torch.arange(self.sampler._size)
        if self.sampler._shuffle:
            indices = indices[torch.randperm(len(indices), generator=g)]
        return indices.tolist()

    def batches(self, state: Dict[str, Any]) -> Iterator[Tuple[List[Tuple[int, int, int]], Dict[str, Any]]]:
        """Yield ``(batch, state after this batch)`` forever, starting from ``state``."""
        seed, epoch, position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        buckets = [[tuple(x) for x in b] for b in state["buckets"]]
        while True:
            order = self.epoch_order(seed, epoch)
            if not order:
                raise ValueError(f"epoch {epoch} of the training sampler is empty (all repeat factors rounded to 0?)")
            first = position + (self.rank - position) % self.world_size
            for pos in range(first, len(order), self.world_size):
                idx = order[pos]
                bucket = buckets[self.group_ids[idx] if self.group_ids is not None else 0]
                bucket.append((idx, epoch, pos))
                if len(bucket) == self.batch_size:
                    batch = list(bucket)
                    bucket.clear()
                    yield batch, {"seed": seed, "epoch": epoch, "position": pos + 1,
                                  "buckets": [[list(x) for x in b] for b in buckets]}
            epoch, position = epoch + 1, 0


def _identity(x):
    return x


class _MappedBatches(torch.utils.data.IterableDataset):
    """Maps the sampler's batches; with N loader workers, worker k maps batches k, k+N, ... (PyTorch's
    DataLoader returns them round-robin, i.e. in order)."""

    def __init__(self, dataset: DatasetFromList, mapper, batch_sampler: DeterministicBatchSampler, state):
        self.dataset, self.mapper, self.batch_sampler, self.state = dataset, mapper, batch_sampler, state

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        seed = int(self.state["seed"])
        for b, (batch, state) in enumerate(self.batch_sampler.batches(self.state)):
            if b % num_workers != worker:
                continue
            mapped = []
            for idx, epoch, pos in batch:
                with seeded_rngs(_seeds(seed, epoch, pos)[0]):
                    x = self.mapper(self.dataset[idx])
                if x is None:
                    raise ValueError(f"the training mapper returned None for dataset index {idx}")
                mapped.append(x)
            yield mapped, state


class ResumableTrainLoader:
    """An infinite iterable of mapped training batches whose position is checkpointable:
    ``state_dict()`` is the state after the last batch handed out; ``load_state_dict()`` makes the
    next ``iter()`` continue from there."""

    def __init__(self, dataset_dicts: List[Dict], mapper, batch_sampler: DeterministicBatchSampler, seed: int,
                 num_workers: int = 0):
        self.dataset = DatasetFromList(dataset_dicts, copy=False)
        self.mapper = mapper
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self._state = DeterministicBatchSampler.initial_state(seed)

    def state_dict(self) -> Dict[str, Any]:
        return copy.deepcopy(self._state)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        missing = {"seed", "epoch", "position", "buckets"} - set(state)
        if missing:
            raise KeyError(f"data-loader state lacks {sorted(missing)}")
        self._state = copy.deepcopy(dict(state))

    def __iter__(self) -> Iterator[List[Dict]]:
        stream = _MappedBatches(self.dataset, self.mapper, self.batch_sampler, self.state_dict())
        if self.num_workers > 0:
            stream = torch.utils.data.DataLoader(
                stream, batch_size=None, num_workers=self.num_workers, collate_fn=_identity,
                # Its own generator: starting the workers must not consume the global torch RNG.
                generator=torch.Generator().manual_seed(int(self._state["seed"])),
            )
        for batch, state in stream:
            self._state = state
            yield batch


def _aspect_groups(dicts: Sequence[Dict]) -> Optional[List[int]]:
    if not all("width" in d and "height" in d for d in dicts):
        logger.warning("DATALOADER.ASPECT_RATIO_GROUPING: some dataset dicts lack width/height; not grouping")
        return None
    return [0 if d["width"] > d["height"] else 1 for d in dicts]


def build_fiber_train_loader(cfg, mapper, *, dataset_names: Optional[Sequence[str]] = None,
                             seed: Optional[int] = None):
    """A :class:`ResumableTrainLoader` over DATASETS.TRAIN mixed by DATASETS.TRAIN_RATIOS, wrapped in
    :class:`SkipMostlyEmptyBatches`. Each process gets batches of
    SOLVER.IMS_PER_BATCH / (world size * SOLVER.ACCUMULATE_STEPS) images. ``seed`` defaults to
    cfg.SEED, or a seed shared by all processes when that is negative."""
    names = list(dataset_names or cfg.DATASETS.TRAIN)
    per_dataset = load_training_dicts(names, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    sampler = build_training_sampler(cfg, per_dataset, names)
    dicts = list(itertools.chain.from_iterable(per_dataset))
    world, accumulate = comm.get_world_size(), cfg.SOLVER.ACCUMULATE_STEPS
    total = cfg.SOLVER.IMS_PER_BATCH
    if accumulate < 1 or total % (world * accumulate) != 0:
        raise ValueError(f"SOLVER.IMS_PER_BATCH ({total}) must be divisible by the number of processes ({world}) "
                         f"times SOLVER.ACCUMULATE_STEPS ({accumulate})")
    if seed is None:
        seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    groups = _aspect_groups(dicts) if cfg.DATALOADER.ASPECT_RATIO_GROUPING else None
    batch_sampler = DeterministicBatchSampler(sampler, total // (world * accumulate), groups,
                                              comm.get_rank(), world)
    loader = ResumableTrainLoader(dicts, mapper, batch_sampler, seed, cfg.DATALOADER.NUM_WORKERS)
    return SkipMostlyEmptyBatches(loader, cfg.SOLVER.MAX_NEG_PER_BATCH)
