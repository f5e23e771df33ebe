#!/usr/bin/env python
"""Measure a fiber-det model: parameters by module, inference latency, training-step latency and
peak memory, and ATSS / Hungarian assignment time.

    python tools/benchmark.py --config-file configs/fiber_b/fiber_b_pretrain.yaml \
        --task params MODEL.FIBER.TEXT.PRETRAINED False
    python tools/benchmark.py --config-file CFG --task inference --size 800 1333 --iters 3 ...
    python tools/benchmark.py --config-file CFG --task train --size 800 1333 --iters 3 ...

Text prompts use the model's tokenizer when one is configured; with PRETRAINED False and no
tokenizer files, pass --tokenizer DIR (any fast BERT-family tokenizer folder).
"""
import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import fiber_det  # noqa: E402,F401
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402

from fiber_det.config import add_fiber_config  # noqa: E402
from fiber_det.modeling.param_count import count_parameters  # noqa: E402

CAPTION = "person. bicycle. car. motorcycle. airplane. bus. train. truck. boat. traffic light"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_inputs(h, w, num_boxes=5, device="cpu"):
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 255, (3, h, w), dtype=torch.uint8, generator=g)
    xy = torch.rand(num_boxes, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
    wh = torch.rand(num_boxes, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 16
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
    inst.gt_classes = torch.zeros(num_boxes, dtype=torch.long)
    spans = [[(0, 6)]] * num_boxes
    return {"image": image, "height": h, "width": w, "caption": CAPTION, "instances": inst,
            "instance_spans": spans, "class_spans": [[(0, 6)], [(8, 15)], [(17, 20)]]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--task", choices=["params", "inference", "train"], default="params")
    p.add_argument("--size", type=int, nargs=2, default=[800, 1333], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (sets MODEL.FIBER.TEXT.TOKENIZER)")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    args = p.parse_args()
    cfg = get_cfg()
    add_fiber_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if args.tokenizer:
        cfg.MODEL.FIBER.TEXT.TOKENIZER = args.tokenizer
    cfg.freeze()
    torch.manual_seed(0)
    model = build_model(cfg)
    print(f"threads: {torch.get_num_threads()}  device: {cfg.MODEL.DEVICE}")
    print("parameters by module:")
    for k, v in count_parameters(model).items():
        print(f"  {k:24s} {v / 1e6:8.2f}M")
    if args.task == "params":
        return
    batch = [make_inputs(*args.size, device=cfg.MODEL.DEVICE) for _ in range(args.batch)]
    cuda = cfg.MODEL.DEVICE.startswith("cuda")
    times = []
    for i in range(args.iters):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        if args.task == "inference":
            model.eval()
            with torch.no_grad():
                model(batch)
        else:
            model.train()
            losses = model(batch)
            sum(losses.values()).backward()
            model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        print(f"  iter {i}: {times[-1]:.3f}s", flush=True)
    steady = times[1:] or times
    mem = (f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda
           else f"peak RSS {peak_rss_gib():.2f} GiB")
    print(f"{args.task} {args.size[0]}x{args.size[1]} batch {args.batch}: "
          f"{sum(steady) / len(steady):.3f}s/iter (after the first), {mem}")


if __name__ == "__main__":
    main()
