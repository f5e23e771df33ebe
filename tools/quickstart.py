#!/usr/bin/env python
"""The CPU quickstart: generate the synthetic grounding dataset, make a small tokenizer and text
encoder, train the tiny FIBER config, evaluate box AP and grounding recall on the val split, and
write the numbers to OUTPUT_DIR/results.json.

    python tools/quickstart.py                       # everything, ~14 minutes on 2 CPU cores
    python tools/quickstart.py SOLVER.MAX_ITER 200   # extra args are config overrides
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=os.path.join(ROOT, "configs/quickstart/fiber_tiny.yaml"))
    p.add_argument("--output-dir", default=os.path.join(ROOT, "output/quickstart"))
    p.add_argument("--image-size", type=int, default=192,
                   help="side of the generated square images (the config's INPUT sizes must match)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)

    from fiber_det.data.synthetic import generate_synthetic_dataset
    from fiber_det.text.tiny import init_random_roberta, train_bpe_tokenizer

    datasets_root = os.path.abspath(os.environ.get("FIBER_DATASETS", os.path.join(ROOT, "datasets")))
    # Where the registered names synthetic_* look (fiber_det/data/datasets/builtin.py).
    data_dir = os.path.join(datasets_root, "synthetic")
    t0 = time.time()
    generate_synthetic_dataset(data_dir, image_size=(args.image_size, args.image_size))
    print(f"[quickstart] synthetic dataset ready in {data_dir} ({time.time() - t0:.1f}s)", flush=True)

    text_dir = os.path.join(args.output_dir, "text_encoder")
    if not os.path.exists(os.path.join(text_dir, "config.json")):
        with open(os.path.join(data_dir, "annotations", "grounding_train.json")) as f:
            corpus = [img["caption"] for img in json.load(f)["images"]]
        with open(os.path.join(data_dir, "annotations", "instances_train.json")) as f:
            corpus += [". ".join(c["name"] for c in json.load(f)["categories"])]
        from transformers import AutoTokenizer

        train_bpe_tokenizer(corpus, text_dir, vocab_size=600)
        vocab = len(AutoTokenizer.from_pretrained(text_dir))
        init_random_roberta(text_dir, vocab, hidden=96, layers=4, heads=4, intermediate=192)
        print(f"[quickstart] tokenizer ({vocab} tokens) and text encoder written to {text_dir}", flush=True)

    env = dict(os.environ, FIBER_DATASETS=datasets_root, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, os.path.join(ROOT, "tools/train_net.py"), "--config-file", args.config_file,
           "OUTPUT_DIR", args.output_dir, "MODEL.FIBER.TEXT.MODEL_NAME", text_dir] + args.opts
    print("[quickstart] " + " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True, env=env)
    with open(os.path.join(args.output_dir, "results.json")) as f:
        summary = json.load(f)["summary"]
    print(f"\n[quickstart] trained and evaluated in {time.time() - t0:.0f}s; results "
          f"({os.path.join(args.output_dir, 'results.json')}):")
    for k, v in summary.items():
        print(f"  {k:40s} {v:6.2f}")


if __name__ == "__main__":
    main()
