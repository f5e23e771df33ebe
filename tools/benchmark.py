#!/usr/bin/env python
"""Measure a fiber-det model: parameters by module, latency and peak memory of the whole model,
of the fused backbone alone (with and without gradient checkpointing), of the head, and ATSS /
Hungarian assignment time.

    CFG=configs/fiber_b/fiber_b_pretrain.yaml; NOPRE="MODEL.FIBER.TEXT.PRETRAINED False"
    python tools/benchmark.py --config-file $CFG --task params --tokenizer DIR $NOPRE
    python tools/benchmark.py --config-file $CFG --task backbone --size 800 1333 $NOPRE
    python tools/benchmark.py --config-file $CFG --task head --size 800 1333 $NOPRE
    python tools/benchmark.py --config-file $CFG --task assign --size 800 1333 --num-gt 1 50 300 $NOPRE
    python tools/benchmark.py --config-file CFG --task inference|train --tokenizer DIR ...

``backbone`` runs each mode (forward without grad, forward+backward, forward+backward with gradient
checkpointing of the Swin blocks and the text layers) in a fresh process so that every mode's peak
memory is its own: on CUDA the allocator's peak, on CPU the peak resident set size, reported in
full and above the process's size after building the model. Text inputs are padded to
MODEL.FIBER.TEXT.MAX_LENGTH as in the reference, with --text-tokens valid tokens.

``params``, ``inference`` and ``train`` build the whole detector (``inference``/``train`` run it on
a random image and the 10-class prompt below); they need a tokenizer (``--tokenizer DIR``, any
fast BERT-family tokenizer folder) when the configured text model has none on disk. ``head`` and
``assign`` use random features, boxes and logits of the shapes an image of --size gives.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import fiber_det  # noqa: E402,F401
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_backbone, build_model  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402

from fiber_det.config import add_fiber_config  # noqa: E402
from fiber_det.modeling.backbone.fusion import text_hidden_size  # noqa: E402
from fiber_det.modeling.anchors import AnchorGenerator, LegacyBoxCoder  # noqa: E402
from fiber_det.modeling.head.vl_head import VLHead  # noqa: E402
from fiber_det.modeling.matching import ATSSMatcher, HungarianMatcher  # noqa: E402
from fiber_det.modeling.param_count import count_parameters  # noqa: E402
from fiber_det.modeling.postprocess import fiber_inference  # noqa: E402

CAPTION = "person. bicycle. car. motorcycle. airplane. bus. train. truck. boat. traffic light"
BACKBONE_MODES = ("forward", "train", "train-checkpointing")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def padded_size(h: int, w: int, div: int):
    return -(-h // div) * div, -(-w // div) * div


class Timer:
    def __init__(self, cuda: bool):
        self.cuda, self.times = cuda, []

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
        self.t = time.perf_counter()

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self.t)

    def summary(self) -> str:
        steady = self.times[1:] or self.times
        return (f"{sum(steady) / len(steady) * 1e3:.1f} ms (mean of {len(steady)} after the first; "
                f"first {self.times[0] * 1e3:.1f} ms)" if len(self.times) > 1 else f"{self.times[0] * 1e3:.1f} ms")


def make_inputs(h, w, num_boxes=5):
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


def random_boxes(n: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.4, h * 0.4]) + 8
    return torch.cat([xy, torch.min(xy + wh, torch.tensor([w - 1.0, h - 1.0]))], dim=1)


# ---------------------------------------------------------------------------------------------
def bench_model(cfg, args):
    """The whole detector: inference or one training step (forward + backward)."""
    model = build_model(cfg)
    batch = [make_inputs(*args.size) for _ in range(args.batch)]
    cuda = cfg.MODEL.DEVICE.startswith("cuda")
    timer = Timer(cuda)
    for i in range(args.iters):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with timer:
            if args.task == "inference":
                model.eval()
                with torch.no_grad():
                    model(batch)
            else:
                model.train()
                losses = model(batch)
                sum(losses.values()).backward()
                model.zero_grad(set_to_none=True)
        print(f"  iter {i}: {timer.times[-1]:.3f}s", flush=True)
    mem = (f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda
           else f"peak RSS {peak_rss_gib():.2f} GiB")
    print(f"{args.task} {args.size[0]}x{args.size[1]} batch {args.batch}: {timer.summary()}, {mem}")


def backbone_one_mode(cfg, args) -> dict:
    """One backbone mode in this process; returns its figures."""
    mode = args.backbone_mode
    cfg = cfg.clone()
    cfg.defrost()
    ckpt = mode == "train-checkpointing"
    cfg.MODEL.FIBER.SWIN.USE_CHECKPOINT = ckpt
    cfg.MODEL.FIBER.TEXT.USE_CHECKPOINT = ckpt
    cfg.freeze()
    device = torch.device(cfg.MODEL.DEVICE)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    backbone = build_backbone(cfg).to(device)
    h, w = padded_size(*args.size, cfg.MODEL.FIBER.SIZE_DIVISIBILITY)
    images = torch.randn(args.batch, 3, h, w, device=device)
    T = cfg.MODEL.FIBER.TEXT.MAX_LENGTH
    valid = min(args.text_tokens, T)
    input_ids = torch.randint(5, 1000, (args.batch, T), device=device)
    attention_mask = torch.zeros(args.batch, T, dtype=torch.long, device=device)
    attention_mask[:, :valid] = 1
    sizes = [tuple(args.size)] * args.batch
    base = torch.cuda.memory_allocated() / 2**30 if cuda else current_rss_gib()
    timer = Timer(cuda)
    backbone.train(mode != "forward")
    for i in range(args.iters):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with timer:
            if mode == "forward":
                with torch.no_grad():
                    backbone(images, input_ids, attention_mask, sizes)
            else:
                feats, text = backbone(images, input_ids, attention_mask, sizes)
                # A loss touching every output, so that backward reaches every trainable parameter.
                loss = sum(f.float().mean() for f in feats.values()) + text["embedded"].float().mean()
                loss.backward()
                backbone.zero_grad(set_to_none=True)
                del feats, text, loss
        print(f"  {mode} iter {i}: {timer.times[-1]:.2f}s", file=sys.stderr, flush=True)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else peak_rss_gib()
    steady = timer.times[1:] or timer.times
    return {"mode": mode, "seconds": sum(steady) / len(steady), "first_seconds": timer.times[0],
            "peak_gib": peak, "after_build_gib": base, "memory": "GPU allocated" if cuda else "RSS"}


def bench_backbone(cfg, args):
    """Each mode in its own process (a process's peak RSS never goes down)."""
    rows = []
    for mode in args.modes:
        cmd = [sys.executable, os.path.abspath(__file__), "--config-file", args.config_file, "--task", "backbone",
               "--backbone-mode", mode, "--size", *map(str, args.size), "--batch", str(args.batch),
               "--iters", str(args.iters), "--text-tokens", str(args.text_tokens)] + args.opts
        print(f"[backbone] {mode} ...", flush=True)
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    h, w = args.size
    print(f"\nfused backbone (Swin + text encoder + fusion + FPN), {h}x{w}, batch {args.batch}, "
          f"{args.text_tokens} valid text tokens, threads {torch.get_num_threads()}, device {cfg.MODEL.DEVICE}")
    print(f"| mode | time / iter | peak memory ({rows[0]['memory']}) | above model build |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['seconds']:.2f} s | {r['peak_gib']:.2f} GiB | "
              f"{r['peak_gib'] - r['after_build_gib']:.2f} GiB |")


def bench_head(cfg, args):
    device = torch.device(cfg.MODEL.DEVICE)
    cuda = device.type == "cuda"
    f = cfg.MODEL.FIBER
    text_dim = text_hidden_size(cfg)
    torch.manual_seed(0)
    head = VLHead(cfg, text_dim=text_dim).to(device).eval()
    h, w = padded_size(*args.size, f.SIZE_DIVISIBILITY)
    shapes = [(-(-h // s), -(-w // s)) for s in f.ANCHOR_STRIDES]
    C = f.FPN.OUT_CHANNELS
    feats = [torch.randn(args.batch, C, hh, ww, device=device) for hh, ww in shapes]
    T = f.TEXT.MAX_LENGTH
    embedded = torch.randn(args.batch, T, text_dim, device=device)
    embedded[:, args.text_tokens:] = 0
    anchors = AnchorGenerator([s[0] for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES], f.ANCHOR_STRIDES)(shapes, device)
    pmap = torch.zeros(80, T, dtype=torch.bool, device=device)
    for c in range(80):  # 80 classes of ~2 tokens each, as a COCO prompt
        pmap[c, 1 + 2 * c: 3 + 2 * c] = True
    coder = LegacyBoxCoder(f.BOX_CODER_WEIGHTS)
    t_head, t_post = Timer(cuda), Timer(cuda)
    for _ in range(args.iters):
        with torch.no_grad():
            with t_head:
                out = head(feats, embedded)
            with t_post:
                fiber_inference(token_logits=[l[0] for l in out["token_logits"]],
                                box_deltas=[d[0] for d in out["box_deltas"]],
                                centerness=[c[0] for c in out["centerness"]], anchors=anchors,
                                positive_map=pmap, image_size=tuple(args.size), box_coder=coder,
                                score_threshold=f.INFERENCE_TH, pre_nms_top_n=f.PRE_NMS_TOP_N,
                                nms_threshold=f.NMS_TH, max_detections=f.DETECTIONS_PER_IMAGE)
    n = sum(a.shape[0] for a in anchors)
    print(f"head ({f.HEAD.NUM_CONVS} DyConv blocks, deform impl {f.HEAD.DEFORM_IMPL}) at {args.size[0]}x{args.size[1]}, "
          f"{n} anchors, {T} tokens, batch {args.batch}: {t_head.summary()}")
    print(f"post-processing (80 classes, 1 image): {t_post.summary()}")


def bench_assign(cfg, args):
    device = torch.device(cfg.MODEL.DEVICE)
    cuda = device.type == "cuda"
    f = cfg.MODEL.FIBER
    h, w = padded_size(*args.size, f.SIZE_DIVISIBILITY)
    shapes = [(-(-h // s), -(-w // s)) for s in f.ANCHOR_STRIDES]
    anchors = AnchorGenerator([s[0] for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES], f.ANCHOR_STRIDES)(shapes, device)
    per_level = [a.shape[0] for a in anchors]
    all_anchors = torch.cat(anchors)
    A, T = all_anchors.shape[0], f.TEXT.MAX_LENGTH
    g = torch.Generator().manual_seed(0)
    atss = ATSSMatcher(f.ATSS_TOPK, plus_one=f.NMS_LEGACY_PLUS_ONE)
    hung = HungarianMatcher(f.HUNGARIAN.COST_CLASS, f.HUNGARIAN.COST_BBOX, f.HUNGARIAN.COST_GIOU,
                            alpha=f.FOCAL_ALPHA, gamma=f.FOCAL_GAMMA)
    logits = torch.randn(A, T, generator=g).to(device)
    pred = random_boxes(A, *args.size, g).to(device)
    print(f"assignment at {args.size[0]}x{args.size[1]}: {A} anchors ({per_level}), {T} tokens, device {device}")
    print("| GT boxes | ATSS | Hungarian (cost matrix + linear_sum_assignment) |")
    print("|---|---|---|")
    for n in args.num_gt:
        gt = random_boxes(n, *args.size, g).to(device)
        pmap = torch.zeros(n, T, dtype=torch.bool, device=device)
        pmap[torch.arange(n), torch.randint(1, T - 1, (n,), generator=g)] = True
        t_a, t_h = Timer(cuda), Timer(cuda)
        for _ in range(args.iters):
            with t_a:
                atss(all_anchors, per_level, gt)
            with t_h:
                hung(logits, pred, gt, pmap, tuple(args.size))
        print(f"| {n} | {t_a.summary()} | {t_h.summary()} |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--task", choices=["params", "inference", "train", "backbone", "head", "assign"], default="params")
    p.add_argument("--size", type=int, nargs=2, default=[800, 1333], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--modes", nargs="+", choices=BACKBONE_MODES, default=list(BACKBONE_MODES),
                   help="backbone modes to measure")
    p.add_argument("--backbone-mode", choices=BACKBONE_MODES, help=argparse.SUPPRESS)
    p.add_argument("--text-tokens", type=int, default=160, help="valid (unpadded) text tokens per caption")
    p.add_argument("--num-gt", type=int, nargs="+", default=[1, 50, 300], help="ground-truth boxes for --task assign")
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
    if args.backbone_mode:  # a child process of --task backbone
        print(json.dumps(backbone_one_mode(cfg, args)))
        return
    print(f"threads: {torch.get_num_threads()}  device: {cfg.MODEL.DEVICE}")
    if args.task == "params":
        torch.manual_seed(0)
        print("parameters by module:")
        for k, v in count_parameters(build_model(cfg)).items():
            print(f"  {k:24s} {v / 1e6:8.2f}M")
    elif args.task in ("inference", "train"):
        bench_model(cfg, args)
    else:
        {"backbone": bench_backbone, "head": bench_head, "assign": bench_assign}[args.task](cfg, args)


if __name__ == "__main__":
    main()
