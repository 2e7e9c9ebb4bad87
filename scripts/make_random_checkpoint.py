#!/usr/bin/env python
"""Write a SAM checkpoint with seeded random weights, in the official layout.

No pretrained SAM weights can be downloaded on some machines (CI, sandboxes). A random
checkpoint exercises the whole machinery -- loading, encoding, PerSAM, the command line --
with meaningless masks. Use a real checkpoint (sam_vit_h_4b8939.pth, mobile_sam.pt, ...)
for real results.

    python scripts/make_random_checkpoint.py --model vit_t --out /tmp/random_vit_t.pth
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from persam_files import atomic_write
from sam_core import MODEL_CONFIGS, build_sam_model


def random_weights(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random values with scales that keep activations of order one."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            state[name] = tensor.clone()
            continue
        normal = torch.randn(tensor.shape, generator=generator)
        if name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(tensor.shape, generator=generator)
        elif name.endswith("running_mean"):
            state[name] = 0.1 * normal
        elif tensor.ndim >= 2 and "gaussian_matrix" not in name:
            fan_in = tensor[0].numel() if "pos_embed" not in name else 1
            state[name] = normal / math.sqrt(max(fan_in, 1)) * (0.5 if "pos_embed" in name else 1.0)
        elif name.endswith("weight") and ("norm" in name or ".bn" in name or "neck" in name
                                          or "output_upscaling.1" in name or "mask_downscaling" in name):
            state[name] = 1.0 + 0.1 * normal
        elif "gaussian_matrix" in name:
            state[name] = normal
        else:
            state[name] = 0.02 * normal
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_t", choices=sorted(MODEL_CONFIGS), help="SAM variant")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = build_sam_model(MODEL_CONFIGS[args.model], args.model)
    state = random_weights(model, args.seed)
    atomic_write(args.out, lambda temp: torch.save(state, temp))
    print(f"wrote random {args.model} checkpoint to {args.out}")


if __name__ == "__main__":
    main()
