#!/usr/bin/env python
"""Convert a released FIBER fine-grained checkpoint into a fiber-det checkpoint.

    python tools/convert_checkpoint.py official.pth fiber_det_model.pth [--ema]

The input is read with ``torch.load(weights_only=True)``; nothing in it is executed. ``--ema``
takes ``model_ema`` instead of ``model``. Keys that could not be placed are listed.
(``MODEL.WEIGHTS`` may also point at the released file directly: it is converted on the fly.)
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from fiber_det.checkpoint.convert import load_reference_checkpoint  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source")
    p.add_argument("dest")
    p.add_argument("--ema", action="store_true", help="convert model_ema instead of model")
    args = p.parse_args(argv)
    state, unplaced = load_reference_checkpoint(args.source, use_ema=args.ema)
    tmp = args.dest + ".tmp"
    torch.save({"model": state, "__author__": "FIBER reference (converted by fiber-det)"}, tmp)
    os.replace(tmp, args.dest)
    print(f"wrote {len(state)} tensors to {args.dest}")
    if unplaced:
        print(f"{len(unplaced)} keys could not be placed:")
        for k in unplaced:
            print(f"  {k}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
