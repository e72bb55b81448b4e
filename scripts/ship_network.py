"""Make a trained network checkpoint the shipped one: its linear layers in float16.

    python scripts/ship_network.py runs/small/model.pt furpe/data/networks/furpe-small.pt

Reads a ``model.pt`` of ``furpe train``, stores its linear layers' weights in float16 (half
the file; :func:`furpe.networks.inference.load_network` loads them into the float32 network;
normalisation layers stay float32) and writes the result atomically. Prints the largest
difference between the float32 and the float16 network's outputs on rendered people
(relative to each output's range), the file's size and its sha256 (for MODELS.md).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch

from furpe.bodymodels import load_body_model
from furpe.core.files import atomic_write
from furpe.networks.inference import load_network, person_crops, read_checkpoint
from furpe.synthetic import make_person


def halve(state: dict) -> dict:
    """``state`` with the float32 weights of its linear layers in float16; normalisation
    layers stay float32 (the frozen encoders' features vary by ~0.01: their running
    variances fall below float16's normal range)."""
    weights = {k: v.half() if v.dtype == torch.float32 and "norm" not in k else v
               for k, v in state["weights"].items()}
    return {**state, "weights": weights}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("output", type=Path)
    args = ap.parse_args(argv)
    state = read_checkpoint(args.checkpoint)
    small = halve(state)
    small.pop("path")
    with atomic_write(args.output) as fh:
        torch.save(small, fh)

    model = load_body_model(state["body_model"])
    full, half = load_network(state, model), load_network(args.output, model)
    people = [make_person(model, 900 + k, 512, 512) for k in range(4)]
    boxes = [[p.box] for p in people]
    crops = person_crops([p.image for p in people], boxes, [p.intrinsics for p in people],
                         full.config.input_size)
    image = torch.from_numpy(crops.images).float()
    K = torch.from_numpy(crops.K).float()
    with torch.no_grad():
        a, b = full(image, K), half(image, K)
    diff = max(float((a[k] - b[k]).abs().max() / a[k].abs().max()) for k in a
               if k.startswith(("body", "camera", "part_")))
    digest = hashlib.sha256(args.output.read_bytes()).hexdigest()
    print(f"{args.output}: {args.output.stat().st_size / 1e6:.1f} MB, sha256 {digest}; "
          f"float16 vs float32 outputs on 4 rendered people: largest difference {diff:.1e} of the "
          f"output's range")
    return 0


if __name__ == "__main__":
    sys.exit(main())
