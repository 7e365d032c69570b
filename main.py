#!/usr/bin/env python3
"""FaceAlign Studio: the GUI by default; subcommands for headless work (`python main.py --help`)."""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def cmd_methods(args: argparse.Namespace) -> int:
    from engine.methods.base import registry
    from engine.paths import weights_path
    from engine.runtime import preferred_providers

    print(f"{'method':<11} {'weights':<22} {'present':<8} {'backend':<28} provider")
    for name, info in sorted(registry().items()):
        present = weights_path(info.weights).exists()
        backend = getattr(info.factory, "backend", "")
        provider = getattr(info.factory, "provider", "") if backend != "onnxruntime" else preferred_providers()[0]
        print(f"{name:<11} {info.weights:<22} {'yes' if present else 'MISSING':<8} {backend:<28} {provider}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from engine.evaluation.protocol import evaluate
    from engine.methods.base import create

    method = create(args.method)
    last = [0]

    def progress(i: int, n: int) -> None:
        if not args.json and (i - last[0] >= 100 or i == n):
            last[0] = i
            print(f"  {i}/{n}", file=sys.stderr)

    res = evaluate(method, args.data, mode=args.mode, limit=args.limit, progress=progress)
    if args.ced:
        from engine.evaluation.plots import ced_plot

        ced_plot({args.method: res["_per_image"]}, args.ced)
    out = {k: v for k, v in res.items() if not k.startswith("_")}
    if args.json:
        print(json.dumps(out))
    else:
        b = out["nme"]
        print(f"{out['method']} ({out['mode']}, {out['n']['overall']} images, {out['failures']} failures): "
              f"NME 0-30 {b['0-30']:.2f}  30-60 {b['30-60']:.2f}  60-90 {b['60-90']:.2f}  "
              f"balanced {b['balanced']:.2f}  overall {b['overall']:.2f}")
        pm = out["pose_mae"]
        if pm["yaw"] is not None:
            print(f"pose MAE: yaw {pm['yaw']:.2f}  pitch {pm['pitch']:.2f}  roll {pm['roll']:.2f} degrees")
    method.close()
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from engine.training.harness import train
    from engine.training.recipes import get_recipe

    train(get_recipe(args.name), epochs=args.epochs, resume=args.resume, seed=args.seed, threads=args.threads,
          limit=args.limit, batch_size=args.batch_size)
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from engine.training.model_card import write_card

    print(write_card(args.name, e2e=not args.no_e2e))
    return 0


def cmd_build_face_model(args: argparse.Namespace) -> int:
    from engine.facemodel_build import build_and_save

    print(build_and_save(n_images=args.images))
    return 0


def cmd_fit_mediapipe_map(args: argparse.Namespace) -> int:
    from engine.methods.mediapipe_ref.fit_map import fit_and_save

    print(fit_and_save(n_images=args.images))
    return 0


def cmd_calibrate_crop(args: argparse.Namespace) -> int:
    from engine.detect.crop_policy import calibrate

    calibrate(n_images=args.images)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="main.py", description=__doc__)
    sub = p.add_subparsers(dest="command")
    s = sub.add_parser("methods", help="list methods, weights, backend and execution provider")
    s.set_defaults(func=cmd_methods)
    s = sub.add_parser("eval", help="AFLW2000-3D NME per |yaw| bucket")
    s.add_argument("--method", required=True)
    s.add_argument("--data", required=True, help="AFLW2000-3D-style folder (images/*.jpg + .mat)")
    s.add_argument("--mode", choices=["protocol", "e2e"], default="protocol")
    s.add_argument("--json", action="store_true")
    s.add_argument("--ced", help="write a cumulative error distribution plot (PNG)")
    s.add_argument("--limit", type=int)
    s.set_defaults(func=cmd_eval)
    s = sub.add_parser("train", help="train a method on ../shared/data/aflw_train")
    s.add_argument("name")
    s.add_argument("--epochs", type=int)
    s.add_argument("--resume", action="store_true")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int)
    s.add_argument("--limit", type=int, help="use only the first N training crops (smoke runs)")
    s.add_argument("--batch-size", type=int)
    s.set_defaults(func=cmd_train)
    s = sub.add_parser("card", help="measure a trained method and write its model card")
    s.add_argument("name")
    s.add_argument("--no-e2e", action="store_true")
    s.set_defaults(func=cmd_card)
    for name, fn, n, hlp in [("build-face-model", cmd_build_face_model, 1500, "build weights/face_model.npz"),
                             ("fit-mediapipe-map", cmd_fit_mediapipe_map, 3000, "learn Face Mesh -> 68 points"),
                             ("calibrate-crop", cmd_calibrate_crop, 1500, "calibrate detector box -> crop box")]:
        s = sub.add_parser(name, help=hlp)
        s.add_argument("--images", type=int, default=n)
        s.set_defaults(func=fn)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        print("The desktop app is not built yet (issue 3); use a subcommand: python main.py --help", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (FileNotFoundError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
