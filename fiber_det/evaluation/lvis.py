"""LVIS box AP (ARCHITECTURE.md section 11), the ``lvis`` package's LVISEval doing the matching, under
two protocols (both by default; TEST.LVIS_PROTOCOLS):

- "standard" -> ``results["bbox"]``: the official protocol: the 300 highest-scoring detections per
  image (TEST.LVIS_MAX_DETS_PER_IMAGE), LVISResults + LVISEval.
- "fixed" -> ``results["bbox_fixed"]``: fixed AP as MDETR (and the reference) compute it: the 10,000
  highest-scoring detections of each class over the whole dataset (TEST.LVIS_FIXED_AP_DETS_PER_CLASS),
  no per-image cap. The per-class top-k is taken over *all* detections, before LVISEval's federated
  filtering drops those on images where the class is neither annotated nor a listed negative, so the
  dropped ones still take slots; detections with zero width or height are then dropped.

Both report AP, AP50, AP75, APs, APm, APl, APr, APc, APf (x100; NaN where LVIS gives -1, e.g. a
frequency group without ground truth). Each number is logged with its protocol.
"""
import itertools
import logging
from collections import OrderedDict
from typing import Dict, List, Sequence

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm
from tabulate import tabulate

logger = logging.getLogger(__name__)

LVIS_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
PROTOCOL_KEYS = {"standard": "bbox", "fixed": "bbox_fixed"}

# Columns of the stored detections (float64; ids are exact below 2**53).
_IMG, _CAT, _X, _Y, _W, _H, _SCORE = range(7)


def top_k_per_class(dets: np.ndarray, k: int) -> np.ndarray:
    """Rows of ``dets`` (columns as above) among the ``k`` highest-scoring of their class; ties keep
    the earlier row (a stable sort, as the reference's ``sorted``)."""
    if len(dets) == 0:
        return dets
    order = np.lexsort((np.arange(len(dets)), -dets[:, _SCORE], dets[:, _CAT]))
    cats = dets[order, _CAT]
    first = np.searchsorted(cats, cats, side="left")  # start of each row's class run
    rank = np.arange(len(order)) - first
    return dets[np.sort(order[rank < k])]


def top_k_per_image(dets: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest-scoring rows of one image, best first; ties keep their order (what
    LVISResults' per-image limit selects)."""
    return dets[np.argsort(-dets[:, _SCORE], kind="stable")[:k]]


def _as_lvis_results(dets: np.ndarray) -> List[Dict]:
    return [
        {"image_id": int(d[_IMG]), "category_id": int(d[_CAT]), "bbox": [float(v) for v in d[_X:_SCORE]],
         "score": float(d[_SCORE])}
        for d in dets
    ]


def run_lvis_eval(lvis_gt, results: List[Dict], max_dets: int) -> Dict[str, float]:
    """LVISEval (bbox) of ``results`` with at most ``max_dets`` per image (-1: no cap); metrics x100."""
    from lvis import LVISEval, LVISResults

    if not results:
        logger.warning("LVIS evaluation: no detections; every metric is NaN")
        return {m: float("nan") for m in LVIS_METRICS}
    lvis_dt = LVISResults(lvis_gt, results, max_dets=max_dets)
    lvis_eval = LVISEval(lvis_gt, lvis_dt, iou_type="bbox")
    lvis_eval.params.max_dets = max_dets
    lvis_eval.run()
    return {m: float(lvis_eval.results[m] * 100) if lvis_eval.results[m] >= 0 else float("nan")
            for m in LVIS_METRICS}


class LVISDetectionEvaluator(DatasetEvaluator):
    """LVIS box AP under the "standard" and/or "fixed" protocols (see the module docstring).

    Ground truth: the dataset's metadata ``json_file`` (an LVIS-format file). Predicted class
    indices are contiguous in sorted category-id order (as fiber-det's LVIS loader assigns them) unless
    the metadata has ``thing_dataset_id_to_contiguous_id``. ``protocols`` maps each result key to the
    protocol's description; ``protocol`` joins them.
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        protocols: Sequence[str] = ("standard", "fixed"),
        max_dets_per_image: int = 300,
        fixed_ap_dets_per_class: int = 10000,
        output_dir=None,
        distributed: bool = True,
    ):
        from lvis import LVIS

        unknown = [p for p in protocols if p not in PROTOCOL_KEYS]
        if unknown or not protocols:
            raise ValueError(f"TEST.LVIS_PROTOCOLS must hold some of {tuple(PROTOCOL_KEYS)}, got {tuple(protocols)}")
        if max_dets_per_image < 1 or fixed_ap_dets_per_class < 1:
            raise ValueError(
                f"LVIS evaluation of '{dataset_name}': max_dets_per_image ({max_dets_per_image}) and "
                f"fixed_ap_dets_per_class ({fixed_ap_dets_per_class}) must be >= 1"
            )
        meta = MetadataCatalog.get(dataset_name)
        json_file = meta.get("json_file")
        if json_file is None:
            raise ValueError(
                f"LVIS evaluation of '{dataset_name}': its metadata has no json_file (the LVIS ground truth)"
            )
        self._dataset_name = dataset_name
        self._lvis_gt = LVIS(json_file)
        id_map = meta.get("thing_dataset_id_to_contiguous_id")
        if id_map is None:
            id_map = {cid: i for i, cid in enumerate(sorted(self._lvis_gt.get_cat_ids()))}
        self._contiguous_to_id = np.zeros(len(id_map), dtype=np.float64)
        for cid, i in id_map.items():
            self._contiguous_to_id[i] = cid
        self.max_dets_per_image = int(max_dets_per_image)
        self.fixed_ap_dets_per_class = int(fixed_ap_dets_per_class)
        self._output_dir = output_dir
        self._distributed = distributed
        descriptions = {
            "standard": f"LVIS standard AP ({self.max_dets_per_image} detections/image, lvis LVISEval)",
            "fixed": f"LVIS fixed AP (top {self.fixed_ap_dets_per_class} detections/class over the dataset, "
                     "no per-image cap, MDETR protocol, lvis LVISEval)",
        }
        self.protocols = OrderedDict((PROTOCOL_KEYS[p], descriptions[p]) for p in protocols)
        self.protocol = "; ".join(self.protocols.values())
        # Keep the fixed-AP store at its per-class top-k once it holds this many rows beyond it.
        self._compact_every = 2_000_000
        self.reset()

    def reset(self):
        self._standard: List[np.ndarray] = []
        self._fixed: List[np.ndarray] = []
        self._fixed_rows = 0

    def process(self, inputs, outputs):
        for x, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            n = len(inst)
            if n == 0:
                continue
            classes = inst.pred_classes.numpy()
            if classes.min() < 0 or classes.max() >= len(self._contiguous_to_id):
                raise ValueError(
                    f"LVIS evaluation of '{self._dataset_name}', image {x['image_id']}: predicted class indices "
                    f"{classes.min()}..{classes.max()} outside [0, {len(self._contiguous_to_id)})"
                )
            boxes = BoxMode.convert(inst.pred_boxes.tensor.double().numpy(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
            dets = np.empty((n, 7), dtype=np.float64)
            dets[:, _IMG] = x["image_id"]
            dets[:, _CAT] = self._contiguous_to_id[classes]
            dets[:, _X:_SCORE] = boxes
            dets[:, _SCORE] = inst.scores.double().numpy()
            if "bbox" in self.protocols:
                self._standard.append(top_k_per_image(dets, self.max_dets_per_image))
            if "bbox_fixed" in self.protocols:
                self._fixed.append(dets)
                self._fixed_rows += n
                if self._fixed_rows > self._compact_every:
                    self._fixed = [top_k_per_class(np.concatenate(self._fixed), self.fixed_ap_dets_per_class)]
                    self._fixed_rows = len(self._fixed[0])

    def _gathered(self, arrays: List[np.ndarray]) -> np.ndarray:
        if self._distributed:
            arrays = list(itertools.chain(*comm.gather(arrays, dst=0)))
        return np.concatenate(arrays) if arrays else np.zeros((0, 7))

    def fixed_ap_detections(self, dets: np.ndarray) -> np.ndarray:
        """Fixed AP's selection: per-class top-k over the dataset, then boxes without area dropped."""
        dets = top_k_per_class(dets, self.fixed_ap_dets_per_class)
        counts = np.unique(dets[:, _CAT], return_counts=True)[1]
        short = len(self._contiguous_to_id) - int((counts >= self.fixed_ap_dets_per_class).sum())
        if short:
            logger.info(f"LVIS fixed AP: {short} classes have fewer than {self.fixed_ap_dets_per_class} detections")
        return dets[(dets[:, _W] > 0) & (dets[:, _H] > 0)]

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
        standard = self._gathered(self._standard) if "bbox" in self.protocols else None
        fixed = self._gathered(self._fixed) if "bbox_fixed" in self.protocols else None
        if self._distributed and not comm.is_main_process():
            return {}
        results = OrderedDict()
        for key, description in self.protocols.items():
            logger.info(f"Evaluating '{self._dataset_name}' with the {description}")
            if key == "bbox":
                results[key] = run_lvis_eval(self._lvis_gt, _as_lvis_results(standard), self.max_dets_per_image)
            else:
                results[key] = run_lvis_eval(self._lvis_gt, _as_lvis_results(self.fixed_ap_detections(fixed)), -1)
        table = tabulate(
            [[key, self.protocols[key]] + [f"{v:.3f}" for v in res.values()] for key, res in results.items()],
            headers=["result key", "protocol", *LVIS_METRICS], tablefmt="pipe",
        )
        logger.info(f"LVIS box AP of '{self._dataset_name}':\n{table}")
        return results
