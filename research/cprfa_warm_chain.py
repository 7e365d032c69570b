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
    OMP_NUM_THREADS=1 python -m research.cprfa_warm_chain --out runs/cprfa_warm_chain --speed 5   # ms per face
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
    state = torch.load(source, map_location="cpu", weights_only=False)["model"]
    print(f"[cprfa_warm_chain] {warm_start(model, state)}")
    model.eval()
    return recipe, model


def speed(folder: Path, rounds: int, faces: int = 20) -> dict:
    """ms per face of ``align`` on one thread for the chain (cprfa), the unfused graph and mtcnn3d alone, in
    alternating rounds (each round: every method on the same ``faces`` crops of engine.evaluation.bench), so that
    machine load falls on all three alike; medians over rounds of each round's median (wall clock, and the process's
CPU time per face), and the chain's stages (wall clock)."""
    import statistics
    import time

    from engine.evaluation.bench import fixed_crops
    from engine.methods.base import LANDMARK_STAGE
    from engine.methods.factory import create

    os.environ["FACEALIGN_WEIGHTS"] = str(folder)
    names = ("cprfa", "cprfa-unfused", "mtcnn3d")
    methods = {n: create(n, threads=1) for n in names}
    crops = fixed_crops()
    per_round: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    stages: dict[str, list[float]] = {LANDMARK_STAGE: [], "network": []}
    for n, m in methods.items():   # warm-up
        for k in range(5):
            m.align(crops[k % len(crops)])
    for _ in range(rounds):
        for n, m in methods.items():
            times = []
            c0 = time.process_time()
            for k in range(faces):
                t0 = time.perf_counter()
                r = m.align(crops[k % len(crops)])
                times.append((time.perf_counter() - t0) * 1e3)
                if n == "cprfa":
                    for s in stages:
                        stages[s].append(r.timings[s])
            per_round[n].append(statistics.median(times))
            cpu[n].append((time.process_time() - c0) * 1e3 / faces)
    out = {n: statistics.median(v) for n, v in per_round.items()}
    # the process's CPU time per face: what the method costs on one thread, less swayed by other jobs' load
    out.update({f"{n} (CPU time)": statistics.median(v) for n, v in cpu.items()})
    out.update({f"cprfa {s}": statistics.median(v) for s, v in stages.items()})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the weights folder to write (linked files + the two graphs)")
    p.add_argument("--source", default=str(WEIGHTS_DIR / "cprfa.pt"), help="the unfused CPRFA checkpoint")
    p.add_argument("--speed", type=int, metavar="ROUNDS",
                   help="only time the folder's chain, unfused graph and mtcnn3d (one thread, alternating rounds)")
    args = p.parse_args()
    if args.speed:
        for k, v in speed(Path(args.out), args.speed).items():
            print(f"{k}: {v:.2f} ms per face")
        return
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
