"""The evaluation loop: Detectron2's ``inference_on_dataset`` with a progress display (images/s, ETA)
and shape-bucketed batching.

Batching: a forward pass pads its images to the largest one (then to ``size_divisibility``), and
padding is not neutral in FIBER (Swin windows, the head's GroupNorm and scale attention, and the
text-to-image attention all see the padded pixels). Images are therefore grouped by padded shape
before the forward pass: every image is run exactly as it would be alone, so the numbers do not
depend on ``TEST.IMS_PER_BATCH`` or on which images share a batch, while same-size images (most of
a dataset, after resizing) still share forward passes. Images wait in per-shape buckets across
loader batches; evaluators see each (input, output) pair once, in a different order, which none of
them depends on.
"""
import datetime
import hashlib
import logging
import math
import os
import sys
import time
from collections import OrderedDict, abc
from contextlib import ExitStack
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators, print_csv_format
from detectron2.evaluation.evaluator import inference_context
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

logger = logging.getLogger(__name__)

__all__ = [
    "Progress",
    "ShapeBuckets",
    "padded_shape",
    "inference_on_dataset",
    "evaluate_datasets",
    "evaluator_protocol",
    "checkpoint_record",
]


def _unwrap(model):
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def padded_shape(image: torch.Tensor, size_divisibility: int) -> Tuple[int, int]:
    """(H, W) of ``image`` (C, H, W) once padded to a multiple of ``size_divisibility`` (as
    ImageList.from_tensors pads a batch of one)."""
    h, w = image.shape[-2:]
    if size_divisibility > 1:
        h, w = (int(math.ceil(s / size_divisibility) * size_divisibility) for s in (h, w))
    return int(h), int(w)


class ShapeBuckets:
    """Collects model inputs by padded image shape and hands out batches of one shape.

    ``add`` returns the batches that became full (``batch_size`` inputs of one shape); when more than
    ``max_pending`` inputs wait, the fullest bucket is released early. ``flush`` returns the rest.
    """

    def __init__(self, batch_size: int, size_divisibility: int = 0, max_pending: Optional[int] = None):
        if batch_size < 1:
            raise ValueError(f"ShapeBuckets: batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.size_divisibility = size_divisibility
        self.max_pending = max_pending if max_pending is not None else 4 * batch_size
        self._buckets: "OrderedDict[Tuple[int, int], List[Dict]]" = OrderedDict()

    @property
    def num_pending(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def add(self, inputs: Iterable[Dict]) -> List[List[Dict]]:
        ready = []
        for x in inputs:
            key = padded_shape(x["image"], self.size_divisibility)
            bucket = self._buckets.setdefault(key, [])
            bucket.append(x)
            if len(bucket) == self.batch_size:
                ready.append(self._buckets.pop(key))
        while self.num_pending > self.max_pending:
            key = max(self._buckets, key=lambda k: len(self._buckets[k]))
            ready.append(self._buckets.pop(key))
        return ready

    def flush(self) -> List[List[Dict]]:
        ready = list(self._buckets.values())
        self._buckets.clear()
        return ready


class Progress:
    """Images done, images/s and ETA: a tqdm bar on an interactive terminal, else a log line every
    ``log_period`` seconds (log files and batch jobs get the same information)."""

    def __init__(self, total: int, desc: str, log_period: float = 10.0, enabled: bool = True):
        self.total, self.desc, self.log_period = total, desc, log_period
        self.done = 0
        self._start = time.perf_counter()
        self._last_log = self._start
        self._bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True)
        self._log = enabled and self._bar is None

    def rate(self) -> float:
        elapsed = time.perf_counter() - self._start
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> Optional[datetime.timedelta]:
        rate = self.rate()
        if rate <= 0:
            return None
        return datetime.timedelta(seconds=int(max(self.total - self.done, 0) / rate))

    def line(self) -> str:
        eta = self.eta()
        return (f"{self.desc}: {self.done}/{self.total} images, {self.rate():.2f} images/s, "
                f"ETA {eta if eta is not None else '?'}")

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._log:
            now = time.perf_counter()
            if now - self._last_log >= self.log_period:
                self._last_log = now
                logger.info(self.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._log:
            logger.info(self.line())


def _num_images(data_loader) -> int:
    """Images this process will see: the sampler's length (InferenceSampler: this worker's share)."""
    sampler = getattr(data_loader, "sampler", None)
    if sampler is not None and hasattr(sampler, "__len__"):
        return len(sampler)
    return len(data_loader) * (getattr(data_loader, "batch_size", None) or 1)


def inference_on_dataset(
    model,
    data_loader,
    evaluator: Union[DatasetEvaluator, List[DatasetEvaluator], None],
    *,
    desc: str = "inference",
    progress: bool = True,
    log_period: float = 10.0,
):
    """
    Run ``model`` over ``data_loader`` and return ``evaluator.evaluate()``, like Detectron2's
    function of the same name, with two differences: progress (images/s, ETA) is shown, and each
    loader batch is re-batched by padded image shape (module docstring) so that results do not
    depend on the batch size. The loader's batch size is the most images per forward pass.

    Args:
        model: an nn.Module (put in eval mode for the loop) or any callable on a list of dicts.
        data_loader: yields lists of model inputs (dicts with an "image" tensor).
        evaluator: evaluator(s), or None to only run the model.
        desc: label of the progress display (e.g. the dataset name).
        progress: show progress (only the main process does).
    """
    if evaluator is None:
        evaluator = DatasetEvaluators([])
    if isinstance(evaluator, abc.MutableSequence):
        evaluator = DatasetEvaluators(evaluator)
    evaluator.reset()

    total = _num_images(data_loader)
    batch_size = getattr(data_loader, "batch_size", None) or 1
    size_div = int(getattr(_unwrap(model), "size_divisibility", 0) or 0)
    buckets = ShapeBuckets(batch_size, size_div)
    bar = Progress(total, desc, log_period, enabled=progress and comm.is_main_process())
    logger.info(f"Start inference on {total} images ({desc}), up to {batch_size} per forward pass")

    compute_time = 0.0
    num_forward = 0
    start = time.perf_counter()

    def run(batch: List[Dict]) -> None:
        nonlocal compute_time, num_forward
        t0 = time.perf_counter()
        outputs = model(batch)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        compute_time += time.perf_counter() - t0
        num_forward += 1
        evaluator.process(batch, outputs)
        bar.update(len(batch))

    with ExitStack() as stack:
        if isinstance(model, nn.Module):
            stack.enter_context(inference_context(model))
        stack.enter_context(torch.no_grad())
        for inputs in data_loader:
            for batch in buckets.add(inputs):
                run(batch)
        for batch in buckets.flush():
            run(batch)
    bar.close()

    total_time = time.perf_counter() - start
    logger.info(
        f"Total inference time ({desc}): {datetime.timedelta(seconds=int(total_time))} for {bar.done} images "
        f"({bar.done / max(total_time, 1e-9):.2f} images/s on {comm.get_world_size()} device(s); "
        f"{num_forward} forward passes, pure compute {compute_time:.1f}s)"
    )
    results = evaluator.evaluate()
    return results if results is not None else {}


# Protocol of each built-in evaluator kind, for evaluators that do not say it themselves.
_DEFAULT_PROTOCOLS = {
    "coco": "COCO box AP (pycocotools COCOeval, IoU 0.50:0.95, 100 detections per image)",
    "lvis": "LVIS box AP (lvis LVISEval, 300 detections per image)",
    "grounding": "Flickr30k Entities Recall@1/5/10, IoU>=0.5",
    "refexp": "referring expressions precision@1, IoU>=0.5 and GIoU>=0.5 (reference)",
}


def evaluator_protocol(evaluator=None, evaluator_type: Optional[str] = None) -> Optional[str]:
    """What an evaluator measures, in words: its ``protocol`` attribute when it has one, else the
    description of its evaluator type (from the argument or the evaluator's class)."""
    protocol = getattr(evaluator, "protocol", None)
    if protocol:
        return str(protocol)
    if isinstance(evaluator, DatasetEvaluators):
        parts = [evaluator_protocol(e) for e in evaluator._evaluators]
        return "; ".join(p for p in parts if p) or None
    if evaluator_type is None and evaluator is not None:
        name = type(evaluator).__name__.lower()
        evaluator_type = next((k for k in ("lvis", "coco", "grounding", "refexp") if k in name), None)
    return _DEFAULT_PROTOCOLS.get(evaluator_type)


def evaluate_datasets(
    cfg,
    model,
    build_test_loader: Callable,
    build_evaluator: Callable,
    evaluators: Optional[Sequence[DatasetEvaluator]] = None,
):
    """DefaultTrainer.test with :func:`inference_on_dataset`: evaluate ``model`` on every dataset of
    ``cfg.DATASETS.TEST``; returns {dataset: results}, or the results alone for one dataset (as
    Detectron2 does, which ``verify_results`` expects)."""
    if isinstance(evaluators, DatasetEvaluator):
        evaluators = [evaluators]
    if evaluators is not None and len(evaluators) != len(cfg.DATASETS.TEST):
        raise ValueError(
            f"{len(evaluators)} evaluators given for {len(cfg.DATASETS.TEST)} datasets in DATASETS.TEST "
            f"{list(cfg.DATASETS.TEST)}"
        )
    results = OrderedDict()
    for idx, dataset_name in enumerate(cfg.DATASETS.TEST):
        data_loader = build_test_loader(cfg, dataset_name)
        evaluator = evaluators[idx] if evaluators is not None else build_evaluator(cfg, dataset_name)
        res = inference_on_dataset(model, data_loader, evaluator, desc=dataset_name)
        results[dataset_name] = res
        if comm.is_main_process():
            if not isinstance(res, dict):
                raise TypeError(f"evaluator of {dataset_name} returned {type(res).__name__}, not a dict")
            logger.info(f"Evaluation results for {dataset_name} ({evaluator_protocol(evaluator)}) in csv format:")
            print_csv_format(res)
    if len(results) == 1:
        results = list(results.values())[0]
    return results


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_record(path: str) -> Dict[str, Optional[str]]:
    """Which checkpoint an evaluation used: {"path", "sha256"} (sha256 of the local file; None when
    there is no file, e.g. a randomly initialised model)."""
    if not path:
        return {"path": None, "sha256": None}
    local = PathManager.get_local_path(path) if "://" in path else path
    if not os.path.isfile(local):
        return {"path": path, "sha256": None}
    return {"path": os.path.abspath(local), "sha256": file_sha256(local)}
