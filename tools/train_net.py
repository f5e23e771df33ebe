#!/usr/bin/env python
"""Train and evaluate fiber-det models with Detectron2's conventions.

    python tools/train_net.py --config-file configs/quickstart/fiber_tiny.yaml
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth
    python tools/train_net.py --config-file CFG --resume              # continue a killed run
    python tools/train_net.py --config-file CFG --num-gpus 8 SOLVER.IMS_PER_BATCH 64
"""
import json
import logging
import os
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fiber_det  # noqa: E402  (applies the compat shims and registers the model and datasets)
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.engine import default_argument_parser, default_setup  # noqa: E402
from detectron2.evaluation import verify_results  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from fiber_det.checkpoint import FiberCheckpointer  # noqa: E402
from fiber_det.config import add_fiber_config  # noqa: E402
from fiber_det.data.datasets import register_datasets_from_config  # noqa: E402
from fiber_det.engine import FiberTrainer, launch  # noqa: E402  (launch: also CPU/gloo and torchrun)
from fiber_det.evaluation.inference import checkpoint_record, evaluator_protocol  # noqa: E402

logger = logging.getLogger("fiber_det")


def setup(args):
    cfg = get_cfg()
    add_fiber_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    # default_setup logs "detectron2" and "fvcore"; fiber-det's own lines (progress, results) go there too.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="fiber_det")
    return cfg


def write_results(cfg, results, checkpoint: Optional[dict] = None, protocols: Optional[dict] = None) -> None:
    """One JSON with every metric, the headline numbers under "summary", the protocol of each
    dataset's evaluator, the checkpoint (path and sha256) and the full config."""
    if not comm.is_main_process() or not results:
        return
    datasets = list(cfg.DATASETS.TEST)
    if len(datasets) == 1 and datasets[0] not in results:  # Detectron2 unwraps a single dataset's results
        results = {datasets[0]: results}
    if protocols is None:
        protocols = {name: evaluator_protocol(evaluator_type=MetadataCatalog.get(name).get("evaluator_type", "coco"))
                     for name in results}
    summary = {}
    for dataset, res in results.items():
        if "bbox" in res:
            summary[f"{dataset}/box_AP"] = res["bbox"]["AP"]
            summary[f"{dataset}/box_AP50"] = res["bbox"]["AP50"]
        for task, metrics in res.items():
            if task.startswith("grounding"):
                for k in ("R@1", "R@5", "R@10"):
                    if k in metrics:
                        summary[f"{dataset}/{task}_{k}"] = metrics[k]
            elif task == "refexp":
                summary.update({f"{dataset}/{k}": v for k, v in metrics.items() if k.startswith("P@1")})
    path = cfg.TEST.RESULTS_FILE
    if not os.path.isabs(path):
        path = os.path.join(cfg.OUTPUT_DIR, path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = {
        "summary": summary,
        "results": results,
        "protocols": protocols,
        "checkpoint": checkpoint if checkpoint is not None else checkpoint_record(cfg.MODEL.WEIGHTS),
        "weights": cfg.MODEL.WEIGHTS,
        "config": cfg.dump(),
    }
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=float)
    os.replace(tmp, path)
    for k, v in summary.items():
        dataset = k.split("/", 1)[0]
        logger.info(f"{k}: {v:.2f}  [{protocols.get(dataset) or 'protocol unknown'}]")
    logger.info(f"results written to {path}")


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = FiberTrainer.build_model(cfg)
        checkpointer = FiberCheckpointer.for_inference(model, cfg, save_dir=cfg.OUTPUT_DIR)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        weights = checkpointer.get_checkpoint_file() if args.resume and checkpointer.has_checkpoint() else cfg.MODEL.WEIGHTS
        checkpoint = checkpoint_record(weights) if comm.is_main_process() else None
        # Built here, not in FiberTrainer.test, to record what each one measures.
        register_datasets_from_config(cfg)
        evaluators = [FiberTrainer.build_evaluator(cfg, name) for name in cfg.DATASETS.TEST]
        protocols = {name: evaluator_protocol(ev) for name, ev in zip(cfg.DATASETS.TEST, evaluators)}
        res = FiberTrainer.test(cfg, model, evaluators)
        if comm.is_main_process():
            verify_results(cfg, res)
        write_results(cfg, res, checkpoint, protocols)
        return res
    trainer = FiberTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    res = trainer.train() or getattr(trainer, "_last_eval_results", None)
    # The numbers are those of the trained model, i.e. of the run's last checkpoint.
    last = trainer.checkpointer.get_checkpoint_file() if trainer.checkpointer.has_checkpoint() else ""
    write_results(cfg, res, checkpoint_record(last) if comm.is_main_process() else None)
    return res


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
