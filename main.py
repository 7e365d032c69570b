#!/usr/bin/env python3
"""FaceAlign Studio: the GUI by default; subcommands for headless work (`python main.py --help`)."""
from __future__ import annotations

import argparse
import json
import os
import sys

import engine  # noqa: E402,F401  (pins BLAS threads before anything loads numpy)

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def cmd_methods(args: argparse.Namespace) -> int:
    from engine.methods.base import registry
    from engine.paths import WEIGHTS_ENV, user_weights_dir, weights_location, weights_path
    from engine.runtime import preferred_providers

    folder, origin = weights_location()
    print(f"weights: {folder} (from {origin}{'' if folder.is_dir() else '; the folder does not exist'})")
    if not folder.is_dir():
        print(f"note: point {WEIGHTS_ENV} at a folder holding the weights (a checkout's weights/), or copy them "
              f"to {user_weights_dir()}")
    print(f"{'method':<14} {'weights':<22} {'present':<8} {'backend':<28} provider")
    for name, info in sorted(registry().items()):
        present = weights_path(info.weights).exists()
        backend = getattr(info.factory, "backend", "")
        provider = getattr(info.factory, "provider", "") if backend != "onnxruntime" else preferred_providers()[0]
        print(f"{name:<14} {info.weights:<22} {'yes' if present else 'MISSING':<8} {backend:<28} {provider}")
    for info in sorted(registry().values(), key=lambda i: i.name):
        if not info.available:  # listed, but not offered as working: say why and how to fix it
            print(f"note: {info.unavailable_reason()}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from engine.evaluation.protocol import evaluate
    from engine.methods.factory import create

    method = create(args.method, quantized=args.quantized, flip=args.flip)
    last = [0]

    def progress(i: int, n: int) -> None:
        if not args.json and (i - last[0] >= 100 or i == n):
            last[0] = i
            print(f"  {i}/{n}", file=sys.stderr)

    res = evaluate(method, args.data, mode=args.mode, limit=args.limit, progress=progress, crops=args.crops)
    if args.ced:
        from engine.evaluation.plots import ced_plot

        ced_plot({args.method: res["_per_image"]}, args.ced)
    out = {k: v for k, v in res.items() if not k.startswith("_")}
    out["quantized"] = args.quantized
    out["flip"] = args.flip
    if args.json:
        print(json.dumps(out))
    else:
        b = out["nme"]
        label = f"{out['method']} flip-averaged" if args.flip else out["method"]
        print(f"{label} ({out['mode']}, {out['n']['overall']} images, {out['failures']} failures): "
              f"NME 0-30 {b['0-30']:.2f}  30-60 {b['30-60']:.2f}  60-90 {b['60-90']:.2f}  "
              f"balanced {b['balanced']:.2f}  overall {b['overall']:.2f}")
        if out["mode"] == "e2e":
            d, ms = out["nme_detected"], out["cpu_ms_per_image"]
            print(f"detector missed {out['misses']} ({out['misses_by_bucket']}); detected only: NME 0-30 "
                  f"{d['0-30']:.2f}  30-60 {d['30-60']:.2f}  60-90 {d['60-90']:.2f}  balanced {d['balanced']:.2f}; "
                  f"CPU ms per image: detect {ms['detect']:.1f}, settle crop {ms['settle_crop'] or 0:.1f}, "
                  f"network {ms['network'] or 0:.1f}")
        pm = out["pose_mae"]
        if pm["yaw"] is not None:
            print(f"pose MAE (FSA-Net/SynergyNet protocol, {pm['n']} images): yaw {pm['yaw']:.2f}  "
                  f"pitch {pm['pitch']:.2f}  roll {pm['roll']:.2f}  mean {pm['mean']:.2f} degrees")
    method.close()
    return 0


def cmd_pose_study(args: argparse.Namespace) -> int:
    from engine.evaluation.pose_study import study
    from engine.methods.factory import create

    from engine.paths import data_path

    method = create(args.method)
    res = study(method, args.train or data_path("aflw_train"), args.data or data_path("aflw2000_dev"),
                n_train=args.n_train,
                progress=lambda part, i, n: print(f"  {part} {i}/{n}", file=sys.stderr) if i % 640 == 0 or i == n
                else None)
    if args.write:
        from engine.evaluation.pose_study import write_calibration

        where = write_calibration(res, method.info.weights_path)
        print(f"wrote {res['method']}'s corrections to {where}", file=sys.stderr)
    method.close()
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{res['method']}: pose MAE (degrees, yaw / pitch / roll / mean); train = {res['n_train']} aflw_train "
          f"crops vs the teacher's camera, dev = aflw2000_dev protocol crops vs Pose_Para, both the protocol's way")
    for k in res["train_vs_teacher"]:
        t, d = res["train_vs_teacher"][k], res["dev_protocol"][k]
        mark = " <- chosen on train" if k == res["chosen_on_train"] else ""
        print(f"  {k:20s} train {t['yaw']:.2f} / {t['pitch']:.2f} / {t['roll']:.2f} / {t['mean']:.2f}   "
              f"dev {d['yaw']:.2f} / {d['pitch']:.2f} / {d['roll']:.2f} / {d['mean']:.2f}{mark}")
    print(f"  declared now (MethodInfo.pose_source): {method.info.pose_source}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from engine.training.harness import train
    from engine.training.recipes import get_recipe

    try:
        recipe = get_recipe(args.name, args.ablation)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    if args.benchmark:
        from engine.training.benchmark import benchmark, format_table

        # other overlap variants only on request (docs/training.md: which won on 2 cores)
        extra = {"worker": ("new_worker",), "none": ("new_serial",)}.get(args.overlap or "", ())
        paths = ("old",) if args.legacy else ("old", "new") + extra
        res = benchmark(args.name, steps=args.steps, threads=args.threads, limit=args.limit,
                        batch_size=args.batch_size, seed=args.seed, paths=paths, device=args.device,
                        rounds=args.rounds, log=(lambda s: print(s, file=sys.stderr)) if args.json else print)
        print(json.dumps(res) if args.json else format_table(res))
        return 0
    from pathlib import Path

    speed = dict(legacy=args.legacy, overlap=args.overlap, device=args.device, rewarm=args.rewarm,
                 pack=Path(args.pack) if args.pack else None)
    if args.schedule_from:
        import torch

        ck = torch.load(args.schedule_from, map_location="cpu", weights_only=False)
        segments = (ck.get("schedule") or {}).get("segments") if isinstance(ck, dict) else None
        if not segments:
            print(f"{args.schedule_from} records no schedule to replay", file=sys.stderr)
            return 2
        speed["schedule_from"] = segments
    if args.promote:
        from engine.training.harness import promote

        try:
            promote(recipe, args.promote, previous_as=args.previous_as,
                    previous_weights_as=args.previous_weights_as)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.ablation is None:
        out_dir = Path(args.out) if args.out else None
        train(recipe, epochs=args.epochs, resume=args.resume, seed=args.seed, threads=args.threads,
              limit=args.limit, batch_size=args.batch_size, out_dir=out_dir, export=out_dir is None, **speed)
        return 0
    from engine.training.harness import RUNS_DIR, write_ablation

    # an ablation trains beside the shipped run and never replaces weights/; its history is a result
    out = train(recipe, epochs=args.epochs, resume=args.resume, seed=args.seed, threads=args.threads,
                limit=args.limit, batch_size=args.batch_size, out_dir=RUNS_DIR / f"{args.name}-{args.ablation}",
                export=False, **speed)
    print(f"wrote {write_ablation(recipe, args.ablation, out['history'], args.seed, schedule=out['schedule'])}")
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from engine.training.model_card import refresh_card_text, write_card

    if args.text_only:
        if not refresh_card_text(args.name):
            print(f"no card weights/{args.name}.md to refresh", file=sys.stderr)
            return 1
        print(f"weights/{args.name}.md: architecture notes, stage table and research sections rewritten")
        return 0
    print(write_card(args.name, e2e=not args.no_e2e))
    return 0


class TerminalProgress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, i: int, n: int | None) -> None:
        import time

        now = time.time()
        if now - self.last < (0.2 if self.tty else 5.0) and i != n:
            return
        self.last = now
        if n:
            bar = "#" * int(30 * i / n)
            msg = f"{self.label} [{bar:<30}] {i}/{n}"
        else:
            msg = f"{self.label} {i} frames"
        print(("\r" + msg) if self.tty else msg, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def cmd_annotate(args: argparse.Namespace) -> int:
    from engine.export.annotate import annotate

    bar = TerminalProgress("annotating")
    try:
        methods = args.method.split(",")
        if args.quantized:
            from engine.methods.factory import create

            methods = [create(n, quantized=True) for n in methods]
        s = annotate(args.input, methods, args.out, args.formats.split(","), force=args.force,
                     progress=bar, max_faces=args.max_faces, flip=args.flip,
                     camera={"fx": args.fx, "fy": args.fy, "cx": args.cx, "cy": args.cy})
    except KeyboardInterrupt:
        bar.done()
        print("cancelled: the files hold every frame processed so far", file=sys.stderr)
        return 130
    bar.done()
    print(f"{s.frames} frames ({s.frames_with_face} with a face, {s.faces} faces), {s.skipped} unreadable images "
          f"skipped, {s.seconds:.1f} s -> {args.out}")
    if s.frames_over_limit:
        print(f"note: {s.frames_over_limit} frames had more faces than --max-faces {args.max_faces}; the extra "
              f"faces are not annotated", file=sys.stderr)
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    import time

    from engine.aligner import FaceAligner
    from engine.stream import OscStreamer, parse_target

    host, port = parse_target(args.osc)
    streamer = OscStreamer(host, port, vmc=args.vmc)
    streamer.open()  # an unknown host fails here, before any model loads
    t0 = time.perf_counter()
    clock = None  # --realtime: perf_counter() at the first frame's timestamp (after the models have loaded)
    try:
        with FaceAligner(args.method, max_faces=args.max_faces, quantized=args.quantized,
                         flip=args.flip) as aligner:
            print(f"streaming {aligner.name} on {args.source} to {streamer.target}"
                  f"{' (+ VMC)' if args.vmc else ''}; Ctrl+C stops", file=sys.stderr)
            for res in aligner.frames(args.source):
                if args.realtime:  # a video file at its own frame rate, as a camera would deliver it
                    clock = time.perf_counter() - res.timestamp if clock is None else clock
                    wait = res.timestamp - (time.perf_counter() - clock)
                    if wait > 0:
                        time.sleep(wait)
                streamer.send_frame(res, aligner.name)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        streamer.close()
    note = f" (last: {streamer.last_error})" if streamer.dropped else ""
    print(f"{streamer.frames} frames, {streamer.sent} messages sent, {streamer.dropped} refused or dropped{note}, "
          f"{time.perf_counter() - t0:.1f} s -> {streamer.target}")
    return 0


def cmd_annotate_batch(args: argparse.Namespace) -> int:
    from engine.export.batch import MANIFEST, run_batch

    try:
        r = run_batch(args.inputs, args.out, args.methods.split(","), args.formats.split(","), workers=args.workers,
                      ray_address=args.ray)
    except KeyboardInterrupt:
        print("cancelled: finished inputs are in the manifest; run the same command again to resume",
              file=sys.stderr)
        return 130
    except RuntimeError as e:  # Ray missing, or another batch writing to the same folder
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{r.total} inputs: {r.done} annotated, {r.skipped} already done, {r.failed} failed, {r.seconds:.1f} s "
          f"-> {args.out} (progress in {args.out}/{MANIFEST})")
    for rec in r.records:
        if rec["status"] != "done":
            err = rec["error"] or ""
            print(f"failed: {err if err.startswith(rec['input']) else rec['input'] + ': ' + err}", file=sys.stderr)
    return 1 if r.failed else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from engine.evaluation.compare import compare

    bar = TerminalProgress("comparing")
    res = compare(args.input, args.methods.split(","), args.out, force=args.force, progress=bar, flip=args.flip)
    bar.done()
    print(f"{res['frames']} frames -> {args.out}/report.md, {args.out}/compare.mp4")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from engine.quantize import quantize

    try:
        path = quantize(args.name, out=args.out, n_calibration=args.calibration, calibrate=args.calibrate,
                        keep_float=None if args.keep_float is None else [n for n in args.keep_float.split(",") if n])
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from engine.evaluation.bench import bench
    from engine.methods.base import registry
    from engine.paths import weights_path

    names = args.methods.split(",") if args.methods else \
        [n for n, i in sorted(registry().items()) if weights_path(i.weights).exists()]
    res = bench(names, repeats=args.repeats, quantized=args.quantized)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{'method':<14} {'ms/face 1t':>11} {'ms/face 2t':>11} {'pipeline FPS':>13}  provider")
        for n, r in res["methods"].items():
            print(f"{n:<14} {r['ms_per_face_1t']:>11.2f} {r['ms_per_face_2t']:>11.2f} {r['pipeline_fps']:>13.1f}  "
                  f"{r['provider']}")
        ks = list(next(iter(res["methods"].values()))["ms_per_face_by_faces"]) if res["methods"] else []
        print("\nms per face, one thread, every face of a frame in one batch (network + tail):")
        print(f"{'method':<14} " + " ".join(f"{k + ' face' + ('s' if k != '1' else ''):>22}" for k in ks))
        for n, r in res["methods"].items():
            cells = [f"{r['ms_per_face_by_faces'][k]:.3f} ({r['network_ms_by_faces'][k]:.3f} + "
                     f"{r['tail_ms_by_faces'][k]:.3f})" for k in ks]
            print(f"{n:<14} " + " ".join(f"{c:>22}" for c in cells))
    return 0


def cmd_stability(args: argparse.Namespace) -> int:
    from engine.evaluation.stability import stability
    from engine.methods.base import available_methods
    from engine.paths import data_path

    names = args.methods.split(",") if args.methods else available_methods()
    res = stability(names, data_path("aflw2000_dev"), n_images=args.images, n_frames=args.frames)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{'method':<11} {'still raw':>9} {'still 1€':>9} {'moving raw':>10} {'moving 1€':>10} {'1€ lag':>12}"
              f"  tracked   pose still / moving  (jitter: % of face size per frame; pose: degrees per frame)")
        for n, r in res["methods"].items():
            print(f"{n:<11} {r['still_raw']:>9.2f} {r['still_smoothed']:>9.2f} {r['moving_raw']:>10.2f} "
                  f"{r['moving_smoothed']:>10.2f} {r['lag_ms']:>9.0f} ms  {r['frames_tracked']}/{r['frames']}"
                  f"   {r['pose_still_deg']:.2f} / {r['pose_moving_deg']:.2f}")
    return 0


def cmd_visibility(args: argparse.Namespace) -> int:
    from engine.evaluation.visibility_bench import benchmark, group_table, table, to_json
    from engine.methods.base import available_methods

    names = [n for m in args.methods for n in m.split(",") if n] if args.methods else available_methods()
    res = benchmark(names, limit=args.limit, with_ablations=not args.no_ablations, reuse_outputs=args.reuse_outputs,
                    log=(lambda s: print(s, file=sys.stderr)) if args.json else print)
    print(to_json(res) if args.json else table(res) + "\n\n" + group_table(res))
    if args.save:
        from engine.evaluation.visibility_bench import save_results
        from engine.training.model_card import update_card_visibility

        print(f"wrote {save_results(res)}; cards updated: "
              f"{', '.join(n for n in names if update_card_visibility(n)) or 'none'}", file=sys.stderr)
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
    if args.detector == "yunet":
        from engine.detect.yunet import calibrate
    else:
        from engine.detect.crop_policy import calibrate

    calibrate(n_images=args.images)
    return 0


FLIP_HELP = "flip averaging: align the crop and its mirror and average (twice the network cost; docs/flip.md)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="main.py", description=__doc__)
    p.add_argument("--source", help="video file, image or folder, or a camera index (GUI)")
    p.add_argument("--method", dest="gui_method", help="method to start with (GUI)")
    p.add_argument("--compare", help="compare these methods side by side, e.g. mediapipe,baseline (GUI)")
    p.add_argument("--exit-after", type=int, help="close after N processed frames (GUI, for tests and scripts)")
    p.add_argument("--screenshot", help="save the whole window to this PNG before closing (with --exit-after)")
    sub = p.add_subparsers(dest="command")
    s = sub.add_parser("methods", help="list methods, weights, backend and execution provider")
    s.set_defaults(func=cmd_methods)
    s = sub.add_parser("eval", help="AFLW2000-3D NME per |yaw| bucket")
    s.add_argument("--method", required=True)
    s.add_argument("--data", required=True, help="AFLW2000-3D-style folder (images/*.jpg + .mat)")
    s.add_argument("--mode", choices=["protocol", "e2e"], default="protocol")
    s.add_argument("--crops", type=int, help="e2e: crops in the front end's crop ensemble (default: the app's; "
                                             "1 = the settled crop alone)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--ced", help="write a cumulative error distribution plot (PNG)")
    s.add_argument("--limit", type=int)
    s.add_argument("--quantized", action="store_true", help="the method's INT8 model (weights/NAME.int8.onnx)")
    s.add_argument("--flip", action="store_true", help=FLIP_HELP)
    s.set_defaults(func=cmd_eval)
    s = sub.add_parser("pose-study", help="which rotation each method should report: network vs Procrustes "
                                          "(chosen on aflw_train, reported on aflw2000_dev)")
    s.add_argument("--method", required=True)
    s.add_argument("--train", help="aflw_train folder (default: the shared data's)")
    s.add_argument("--data", help="aflw2000_dev folder (default: the shared data's)")
    s.add_argument("--n-train", type=int, default=3000, help="evenly spaced aflw_train crops")
    s.add_argument("--write", action="store_true",
                   help="store the fitted corrections in weights/pose_calibration.json")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_pose_study)
    s = sub.add_parser("train", help="train a method on ../shared/data/aflw_train")
    s.add_argument("name")
    s.add_argument("--epochs", type=int)
    s.add_argument("--resume", action="store_true")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int)
    s.add_argument("--limit", type=int, help="use only the first N training crops (smoke runs)")
    s.add_argument("--batch-size", type=int)
    s.add_argument("--ablation", help="train a named variant (e.g. prnet no-mask) beside the shipped run; "
                                      "its per-epoch history goes to docs/results/")
    s.add_argument("--benchmark", action="store_true",
                   help="time the data path, the compute and both together (images/s), old vs new path; no training")
    s.add_argument("--steps", type=int, default=20, help="timed batches per benchmark measurement (default 20)")
    s.add_argument("--rounds", type=int, default=3, help="benchmark rounds; the table shows the median (default 3)")
    s.add_argument("--json", action="store_true", help="with --benchmark: one JSON object on stdout")
    s.add_argument("--legacy", action="store_true",
                   help="today's data path (per-sample targets in the loop, NCHW, no prefetch); with --benchmark: "
                        "time only that path")
    s.add_argument("--overlap", choices=["none", "thread", "worker"],
                   help="how batches are prepared during compute (default thread); with --benchmark, worker or none "
                        "adds that variant of the new path to the comparison")
    s.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    s.add_argument("--rewarm", action="store_true",
                   help="with --resume: go back up to the base learning rate on purpose (default: a run that had "
                        "entered its final anneal keeps annealing)")
    s.add_argument("--pack", help="train from a packed training set (scripts/pack_training_set.py) instead of "
                                  "../shared/data")
    s.add_argument("--out", help="write checkpoints to this folder and ship nothing to weights/ (experiments)")
    s.add_argument("--schedule-from", help="replay the learning-rate schedule recorded in this checkpoint step for "
                                           "step, resumes included (an ablation arm on exactly the shipped run's "
                                           "schedule, e.g. weights/pifa.pt); --epochs defaults to that run's")
    s.add_argument("--promote", metavar="ABLATION",
                   help="ship a finished ablation arm (runs/NAME-ABLATION/last.pt) as weights/NAME without "
                        "retraining; the recipe's defaults must already be the arm's overrides")
    s.add_argument("--previous-as", metavar="ABLATION",
                   help="with --promote: keep the run shipped until now as this ablation's history "
                        "(docs/results/NAME_ablation_ABLATION.json), for the model card's comparison")
    s.add_argument("--previous-weights-as", metavar="VARIANT",
                   help="with --promote: also keep the shipped weights/NAME.* as weights/VARIANT.* (a declared "
                        "method variant, e.g. cprfa-unfused, runs them); an arm started from weights/NAME.pt "
                        "counts as started from weights/VARIANT.pt")
    s.set_defaults(func=cmd_train)
    s = sub.add_parser("card", help="measure a trained method and write its model card")
    s.add_argument("name")
    s.add_argument("--no-e2e", action="store_true")
    s.add_argument("--text-only", action="store_true",
                   help="rewrite only the written parts (architecture notes, stage table, research sections from "
                        "docs/results) without re-measuring: the accuracy, pose and speed lines stay as they are")
    s.set_defaults(func=cmd_card)
    s = sub.add_parser("annotate", help="annotate a video or image folder (CSV, JSON, .pts, .obj, overlay video)")
    s.add_argument("input")
    s.add_argument("--method", required=True, help="NAME[,NAME...]")
    s.add_argument("--out", required=True)
    s.add_argument("--formats", default="csv,json")
    s.add_argument("--force", action="store_true", help="overwrite existing outputs")
    s.add_argument("--max-faces", type=int, default=4, metavar="N",
                   help="track at most N faces per frame (default 4; 1-64); more detected faces are reported")
    s.add_argument("--quantized", action="store_true", help="the methods' INT8 models (weights/NAME.int8.onnx)")
    for k, what in (("fx", "focal length x"), ("fy", "focal length y"), ("cx", "optical centre x"),
                    ("cy", "optical centre y")):
        s.add_argument(f"--{k}", type=float, metavar="PX",
                       help=f"CSV camera {what} in pixels (default: OpenFace's for the image size; docs/exports.md)")
    s.add_argument("--flip", action="store_true", help=FLIP_HELP)
    s.set_defaults(func=cmd_annotate)
    s = sub.add_parser("stream", help="stream landmarks, visibility and pose live over OSC (and VMC) while "
                                      "processing a camera, video or image folder as annotate does")
    s.add_argument("source", help="camera index (0), video file, image or image folder")
    s.add_argument("--method", required=True, help="one method name")
    s.add_argument("--osc", default="127.0.0.1:9000", metavar="HOST:PORT",
                   help="where to send the OSC messages (default 127.0.0.1:9000; docs/library-and-stream.md)")
    s.add_argument("--vmc", action="store_true",
                   help="also send the VMC protocol's head bone and blink / mouth blend values (first face)")
    s.add_argument("--realtime", action="store_true", help="pace a video file at its frame rate")
    s.add_argument("--max-faces", type=int, default=4, metavar="N", help="track at most N faces (default 4)")
    s.add_argument("--quantized", action="store_true", help="the method's INT8 model")
    s.add_argument("--flip", action="store_true", help=FLIP_HELP)
    s.set_defaults(func=cmd_stream)
    s = sub.add_parser("annotate-batch", help="annotate many videos / image folders, resumable, on every core "
                                              "or a Ray cluster")
    s.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="videos, image folders, or text files (.txt/.lst/.list) listing them one per line")
    s.add_argument("--out", required=True, help="output root: one folder per input plus manifest.jsonl")
    s.add_argument("--methods", "--method", default="3dstn", help="NAME[,NAME...] (default 3dstn)")
    s.add_argument("--formats", default="csv,json")
    s.add_argument("--workers", type=int, help="local worker processes, one inference thread each "
                                               "(default: the core count; with --ray: a local cluster's CPUs)")
    s.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run on Ray (pip install -e '.[cluster]'): no ADDRESS starts a local cluster of --workers "
                        "CPUs for this command; 'auto' joins the cluster `ray start` runs here; HOST:6379 joins "
                        "that cluster (docs/annotate.md: Batch annotation)")
    s.set_defaults(func=cmd_annotate_batch)
    s = sub.add_parser("compare", help="side-by-side grid video + report comparing methods")
    s.add_argument("input")
    s.add_argument("--methods", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--force", action="store_true")
    s.add_argument("--flip", action="store_true", help=FLIP_HELP)
    s.set_defaults(func=cmd_compare)
    s = sub.add_parser("bench", help="ms/face at 1 and 2 threads, at 1/4/16 faces per frame, and pipeline FPS")
    s.add_argument("--methods")
    s.add_argument("--repeats", type=int, default=100)
    s.add_argument("--json", action="store_true")
    s.add_argument("--quantized", action="store_true",
                   help="also each method's INT8 model (weights/NAME.int8.onnx), right after its float model")
    s.set_defaults(func=cmd_bench)
    s = sub.add_parser("quantize", help="write weights/NAME.int8.onnx: static INT8 quantization calibrated on "
                                        "aflw_train crops")
    s.add_argument("name")
    s.add_argument("--out", help="another path than weights/NAME.int8.onnx")
    s.add_argument("--calibration", type=int, default=200, help="training crops for the activation ranges")
    s.add_argument("--calibrate", choices=["minmax", "percentile", "entropy"], default="percentile")
    s.add_argument("--keep-float", metavar="NODE[,NODE...]",
                   help="graph nodes left in float (default: the method's declared MethodInfo.int8.keep_float)")
    s.set_defaults(func=cmd_quantize)
    s = sub.add_parser("stability", help="landmark jitter on aflw2000_dev clips with known motion, raw and "
                                         "One-Euro, and One-Euro's lag")
    s.add_argument("--methods", help="NAME[,NAME...] (default: every method with weights)")
    s.add_argument("--images", type=int, default=8, help="aflw2000_dev images, two clips each (default 8)")
    s.add_argument("--frames", type=int, default=40, help="frames per clip (default 40)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_stability)
    s = sub.add_parser("visibility", help="landmark visibility against AFLW's human flags on aflw_train's held-out "
                                          "split: agreement, precision / recall / F1 of hidden, per |yaw| and group")
    s.add_argument("--methods", nargs="+", help="NAME[,NAME...] (default: every method with weights)")
    s.add_argument("--limit", type=int, help="first N crops of the held-out split (954)")
    s.add_argument("--no-ablations", action="store_true", help="only the shipped visibility, no ablation rows")
    s.add_argument("--reuse-outputs", action="store_true",
                   help="take the networks' outputs from runs/visibility/NAME-held.npz when made with the current "
                        "weights (made and kept otherwise) and recompute only the visibility")
    s.add_argument("--save", action="store_true", help="merge the rows into docs/results/visibility.json and the "
                                                       "methods' model cards (weights/NAME.md)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_visibility)
    for name, fn, n, hlp in [("build-face-model", cmd_build_face_model, 1500, "build weights/face_model.npz"),
                             ("fit-mediapipe-map", cmd_fit_mediapipe_map, 3000, "learn Face Mesh -> 68 points"),
                             ("calibrate-crop", cmd_calibrate_crop, 1500, "calibrate detector box -> crop box")]:
        s = sub.add_parser(name, help=hlp)
        s.add_argument("--images", type=int, default=n)
        s.set_defaults(func=fn)
    sub.choices["calibrate-crop"].add_argument("--detector", choices=["blazeface", "yunet"], default="blazeface",
                                               help="which detector's boxes to calibrate (yunet: its own file)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        from app.main_window import run

        return run(args.source, args.gui_method, args.compare.split(",") if args.compare else None,
                   args.exit_after, args.screenshot)
    try:
        return args.func(args)
    except (FileNotFoundError, FileExistsError, PermissionError, KeyError, ValueError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
