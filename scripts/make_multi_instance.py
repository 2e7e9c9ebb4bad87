#!/usr/bin/env python
"""Make the seeded multi-instance test folder of docs/method.md 11 from a PerSeg folder.

    python scripts/make_multi_instance.py --data PERSEG_DIR --out /tmp/perseg-multi --seed 0
    persam eval instances --checkpoint CKPT --data /tmp/perseg-multi

Each object gets --per-object images with 0, 1, 2, 3, 0, ... pasted copies of it on other
objects' test images, and instance label maps; see persam_datasets.multi_instance.
"""
from __future__ import annotations

import argparse
import sys

from persam_datasets import make_multi_instance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="PerSeg folder (Images/, Annotations/)")
    parser.add_argument("--out", required=True, help="output folder (PerSeg layout, label-map annotations)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-object", type=int, default=8, help="generated images per object (default: 8)")
    parser.add_argument("--ref-idx", default="00")
    args = parser.parse_args(argv)
    try:
        manifest = make_multi_instance(args.data, args.out, seed=args.seed, images_per_object=args.per_object,
                                       ref_idx=args.ref_idx)
    except (ValueError, OSError) as exc:
        print(f"make_multi_instance: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"wrote {len(manifest['images'])} images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
