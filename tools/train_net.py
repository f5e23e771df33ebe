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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fiber_det  # noqa: E402  (applies the compat shims and registers the model and datasets)
from detectron2.config import get_cfg  # noqa: E402
from detectron2.engine import default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.evaluation import verify_results  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from fiber_det.checkpoint import FiberCheckpointer  # noqa: E402
from fiber_det.config import add_fiber_config  # noqa: E402
from fiber_det.engine import FiberTrainer  # noqa: E402

logger = logging.getLogger("fiber_det")


def setup(args):
    cfg = get_cfg()
    add_fiber_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def write_results(cfg, results) -> None:
    """One JSON with every metric, plus the headline numbers under "summary"."""
    if not comm.is_main_process() or not results:
        return
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
    path = cfg.TEST.RESULTS_FILE
    if not os.path.isabs(path):
        path = os.path.join(cfg.OUTPUT_DIR, path)
    payload = {"summary": summary, "results": results, "weights": cfg.MODEL.WEIGHTS, "config": cfg.dump()}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=float)
    os.replace(tmp, path)
    for k, v in summary.items():
        logger.info(f"{k}: {v:.2f}")
    logger.info(f"results written to {path}")


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = FiberTrainer.build_model(cfg)
        FiberCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = FiberTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        write_results(cfg, res)
        return res
    trainer = FiberTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    res = trainer.train() or getattr(trainer, "_last_eval_results", None)
    write_results(cfg, res)
    return res


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
