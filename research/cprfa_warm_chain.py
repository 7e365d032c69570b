"""The CPR-H chain checked before a trained CPR-H checkpoint exists: a weights folder in which ``cprfa`` is the
fused graph warm-started from the shipped unfused CPRFA (every trained tensor copied, the fused projections' new
columns zero: engine/methods/cprfa/train.warm_start) and ``cprfa-unfused`` is the shipped unfused graph itself.

The warm-started fused model computes what the unfused one computed whatever landmarks it is fed, so
``python main.py eval --method cprfa`` in that folder must reproduce the unfused numbers while running the whole
chain (mtcnn3d's ONNX, then the fused graph). Every other file is linked from the checkout's weights/; nothing in
weights/ is written.

    python -m research.cprfa_warm_chain --out runs/cprfa_warm_chain
    FACEALIGN_WEIGHTS=runs/cprfa_warm_chain python main.py eval --method cprfa --data ../shared/data/aflw2000_dev
    FACEALIGN_WEIGHTS=runs/cprfa_warm_chain python main.py eval --method cprfa-unfused --data ...
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import torch

from engine.paths import WEIGHTS_DIR


def build_warm_fused(source: Path, crops: int = 8):
    """(recipe, model): the CPR-H recipe's model warm-started from the unfused checkpoint ``source`` (the build
    needs a few training crops only: everything it derives from them is overwritten by the checkpoint)."""
    from engine.methods.cprfa.train import warm_start
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    recipe = get_recipe("cprfa")
    recipe.init_from = None
    model = recipe.build(load_training_set(limit=crops))
    print(f"[cprfa_warm_chain] {warm_start(model, torch.load(source, map_location='cpu', weights_only=False)['model'])}")
    model.eval()
    return recipe, model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the weights folder to write (linked files + the two graphs)")
    p.add_argument("--source", default=str(WEIGHTS_DIR / "cprfa.pt"), help="the unfused CPRFA checkpoint")
    args = p.parse_args()
    from engine.training.export import export_onnx

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in WEIGHTS_DIR.iterdir():
        if f.name.startswith("cprfa.") or f.name.startswith("cprfa-unfused") or f.name.startswith("visibility_cprfa"):
            continue
        link = out / f.name
        if not link.exists():
            os.symlink(f.resolve(), link)
    shutil.copyfile(WEIGHTS_DIR / "cprfa.onnx", out / "cprfa-unfused.onnx")
    shutil.copyfile(WEIGHTS_DIR / "visibility_cprfa.npz", out / "visibility_cprfa-unfused.npz")
    shutil.copyfile(WEIGHTS_DIR / "visibility_cprfa.npz", out / "visibility_cprfa.npz")
    recipe, model = build_warm_fused(Path(args.source))
    print(f"[cprfa_warm_chain] wrote {export_onnx(recipe, model, out / 'cprfa.onnx')} (fused, warm-started) and "
          f"{out / 'cprfa-unfused.onnx'} (the shipped unfused graph)")


if __name__ == "__main__":
    main()
