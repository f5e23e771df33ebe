#!/usr/bin/env python
"""Run a fiber-det model on image files with a text prompt and write images with labelled boxes.

    python tools/demo.py --config-file configs/quickstart/fiber_tiny.yaml \
        --input img1.png img2.jpg --prompt "red circle. blue square" --output out/ \
        MODEL.WEIGHTS output/quickstart/model_final.pth
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fiber_det  # noqa: E402,F401
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.utils.visualizer import Visualizer  # noqa: E402

from fiber_det.config import add_fiber_config  # noqa: E402
from fiber_det.predictor import FiberPredictor  # noqa: E402


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--input", nargs="+", required=True, help="image files")
    p.add_argument("--prompt", required=True,
                   help='caption; without --phrases, class names separated by "." ("red circle. blue square")')
    p.add_argument("--phrases", nargs="*", default=None, help="phrases of the caption to ground")
    p.add_argument("--output", required=True, help="output folder (or a .png path for a single input)")
    p.add_argument("--confidence-threshold", type=float, default=0.3)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    cfg = get_cfg()
    add_fiber_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    predictor = FiberPredictor(cfg)
    single_file = args.output.lower().endswith(".png") and len(args.input) == 1
    if not single_file:
        os.makedirs(args.output, exist_ok=True)
    for path in args.input:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"input image {path} does not exist")
        image = read_image(path, format="BGR")
        instances, names = predictor(image, args.prompt, args.phrases)
        instances = instances[instances.scores >= args.confidence_threshold]
        labels = [f"{names[c]} {s:.2f}" for c, s in zip(instances.pred_classes.tolist(), instances.scores.tolist())]
        vis = Visualizer(image[:, :, ::-1])
        out = vis.overlay_instances(boxes=instances.pred_boxes, labels=labels)
        dest = args.output if single_file else os.path.join(
            args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        out.save(dest)
        print(f"{path}: {len(instances)} detections -> {dest}")


if __name__ == "__main__":
    main()
