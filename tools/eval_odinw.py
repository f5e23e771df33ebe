#!/usr/bin/env python
"""Evaluate a checkpoint on ODinW-13 / ODinW-35 (or some of their datasets): box AP of each dataset,
each with its own prompt (its class names), then the mean; a table in markdown and CSV.

    python tools/eval_odinw.py --config-file CFG --suite odinw13 MODEL.WEIGHTS model.pth
    python tools/eval_odinw.py --config-file CFG --suite odinw35 --root /data/datasets MODEL.WEIGHTS m.pth
    python tools/eval_odinw.py --config-file CFG --datasets Aquarium,pistols MODEL.WEIGHTS m.pth
    # a dataset whose files are not in GLIP's layout:
    python tools/eval_odinw.py --config-file CFG --datasets Aquarium \\
        --ann Aquarium=path/to/test_annotations.json [--image-root Aquarium=path/to/images] MODEL.WEIGHTS m.pth

Datasets are looked for under --root (default $FIBER_DATASETS, or its odinw/ folder) as GLIP's
download script lays them out (datasets/README.md). The ones not found are listed before anything is
evaluated and left out of the mean; the tool fails only when none is found. Writes
OUTPUT_DIR/{suite}_{split}.md, .csv and .json (the JSON also has every metric, the protocol and the
checkpoint's sha256).
"""
import csv
import io
import json
import logging
import math
import os
import sys
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fiber_det  # noqa: E402,F401  (applies the compat shims and registers the model and datasets)
from detectron2.config import get_cfg  # noqa: E402
from detectron2.engine import default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from fiber_det.checkpoint import FiberCheckpointer  # noqa: E402
from fiber_det.config import add_fiber_config  # noqa: E402
from fiber_det.data.datasets import datasets_root  # noqa: E402
from fiber_det.data.datasets.odinw import locate_odinw, odinw_names, register_odinw  # noqa: E402
from fiber_det.engine import FiberTrainer  # noqa: E402
from fiber_det.evaluation.inference import checkpoint_record, evaluator_protocol, inference_on_dataset  # noqa: E402,E501

logger = logging.getLogger("fiber_det")

METRICS = ("AP", "AP50", "AP75")


def parse_mapping(items: List[str], option: str) -> Dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{option} expects NAME=PATH, got {item!r}")
        out[name] = path
    return out


def argument_parser():
    parser = default_argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=("odinw13", "odinw35"), default="odinw13",
                        help="benchmark whose datasets and class names are used")
    parser.add_argument("--datasets", default="",
                        help="comma-separated subset of the suite's datasets (short names, e.g. Aquarium,pistols)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--root", default=None, help="datasets root holding odinw/ (default: $FIBER_DATASETS)")
    parser.add_argument("--ann", action="append", default=[], metavar="NAME=JSON",
                        help="annotation file of a dataset outside the standard layout (repeatable)")
    parser.add_argument("--image-root", action="append", default=[], metavar="NAME=DIR",
                        help="image folder of such a dataset (default: its annotation file's folder)")
    return parser


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


def format_table(rows: List[Dict], fmt: str) -> str:
    """rows: {"dataset", "images", AP, AP50, AP75} -> a markdown or CSV table (numbers in percent)."""
    header = ["dataset"] + list(METRICS) + ["images"]

    def cell(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.2f}"
        return str(v)

    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[cell(r[k]) for k in header] for r in rows])
        return buf.getvalue()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(r[k]) for k in header) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def mean_row(rows: List[Dict], label: str) -> Dict:
    row = {"dataset": label, "images": sum(r["images"] for r in rows)}
    for k in METRICS:
        vals = [r[k] for r in rows if not math.isnan(r[k])]
        row[k] = sum(vals) / len(vals) if vals else float("nan")
    return row


def main(args) -> Optional[Dict]:
    cfg = setup(args)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()] or odinw_names(args.suite)
    root = args.root or datasets_root()
    try:
        files = locate_odinw(args.suite, names, args.split, root,
                             parse_mapping(args.ann, "--ann"), parse_mapping(args.image_root, "--image-root"))
    except ValueError as e:
        raise SystemExit(f"eval_odinw: {e}") from e
    found = [f for f in files if not f.missing]
    missing = [f for f in files if f.missing]
    if comm.is_main_process():
        print(f"[eval_odinw] {args.suite} {args.split}: {len(found)} of {len(files)} datasets found under "
              f"{os.path.abspath(root)}", flush=True)
        for f in missing:
            print(f"[eval_odinw]   not found: {f.name} (missing {'; '.join(f.missing)})", flush=True)
    if not found:
        raise SystemExit(
            f"eval_odinw: none of the {len(files)} datasets of {args.suite} ({args.split}) was found under "
            f"{os.path.abspath(root)}; see datasets/README.md for the layout, or give files with --ann NAME=JSON"
        )

    model = FiberTrainer.build_model(cfg)
    FiberCheckpointer.for_inference(model, cfg, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)

    rows, results, protocol = [], {}, None
    for f in found:
        register_odinw(args.suite, f)
        loader = FiberTrainer.build_test_loader(cfg, f.registered_name)
        evaluator = FiberTrainer.build_evaluator(cfg, f.registered_name)
        protocol = protocol or evaluator_protocol(evaluator)
        res = inference_on_dataset(model, loader, evaluator, desc=f.registered_name)
        if not comm.is_main_process():
            continue
        if "bbox" not in res:
            raise RuntimeError(f"eval_odinw: the evaluator of {f.registered_name} returned no box AP ({sorted(res)})")
        results[f.name] = res
        row = {"dataset": f.name, "images": len(loader.dataset), **{k: float(res["bbox"][k]) for k in METRICS}}
        if all(math.isnan(row[k]) for k in METRICS):
            # Detectron2's COCO evaluator gives NaN when the model returned no box at all; that scores 0.
            logger.warning(f"{f.registered_name}: no detections (MODEL.FIBER.INFERENCE_TH "
                           f"{cfg.MODEL.FIBER.INFERENCE_TH}); its AP counts as 0 in the table and the mean")
            row.update({k: 0.0 for k in METRICS})
        rows.append(row)
    if not comm.is_main_process():
        return None

    label = f"mean ({len(rows)} of {len(files)})" if missing else "mean"
    table = rows + [mean_row(rows, label)]
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    stem = os.path.join(cfg.OUTPUT_DIR, f"{args.suite}_{args.split}")
    with open(stem + ".md", "w") as fh:
        fh.write(f"{args.suite} {args.split}, box AP per dataset ({protocol})\n\n" + format_table(table, "md"))
    with open(stem + ".csv", "w") as fh:
        fh.write(format_table(table, "csv"))
    with open(stem + ".json", "w") as fh:
        json.dump({"suite": args.suite, "split": args.split, "protocol": protocol, "table": table,
                   "not_found": {f.name: f.missing for f in missing}, "results": results,
                   "checkpoint": checkpoint_record(cfg.MODEL.WEIGHTS), "config": cfg.dump()},
                  fh, indent=2, default=float)
    print(f"\n{args.suite} {args.split} ({protocol}):\n\n" + format_table(table, "md"), flush=True)
    if missing:
        print(f"not found, left out of the mean: {', '.join(f.name for f in missing)}", flush=True)
    print(f"written: {stem}.md, {stem}.csv, {stem}.json", flush=True)
    return {"table": table, "results": results}


if __name__ == "__main__":
    args = argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
