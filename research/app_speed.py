"""Speed of the real window, stage by stage, against `main.py bench`'s one-thread numbers in the same run.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m research.app_speed out/obama_640x360.mp4 \
        --methods mtcnn3d --seconds 20 [--policy off] [--compare]

Plays the clip (looped, paced at its frame rate) in the window for ``--seconds`` after a warm-up, then records:
frames shown per second (what the user sees), frames processed per second (the pipeline), the median of each
stage's ms per frame from the status bar's figures (detect, align, visibility, frontalize, total), each method's
in-app ms per face (the speed panel's figure), and how long the GUI thread spent per shown frame. After closing
the window it times each method on fixed crops with one thread (`engine.evaluation.bench.ms_per_face`, the
bench's one-thread figure) so both numbers come from the same run on the same load. ``--policy off`` runs the
window without the app's session thread policy (ONNX Runtime's defaults), for an A/B on the same machine.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


import engine  # noqa: E402,F401  (pins BLAS threads before numpy loads, as main.py does)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip")
    ap.add_argument("--methods", required=True, help="comma-separated; more than one turns compare mode on")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=4.0)
    ap.add_argument("--policy", choices=("on", "off"), default="on")
    ap.add_argument("--workers", type=int, help="threads running one frame's methods side by side (default: the "
                    "app's, one per core under the policy)")
    ap.add_argument("--switch-ms", type=float, help="the interpreter's thread switch interval (default 5 ms)")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--screenshot")
    args = ap.parse_args()
    methods = args.methods.split(",")

    from app.qt import QtCore, QtWidgets

    app = QtWidgets.QApplication(sys.argv[:1])
    from vispy import app as vispy_app

    vispy_app.use_app("pyside6")
    from app import bridge as bridge_module
    from app.main_window import MainWindow

    if args.policy == "off":
        bridge_module.APP_THREAD_POLICY = None
    if args.workers:
        bridge_module.method_workers = lambda: args.workers
    if args.switch_ms:
        sys.setswitchinterval(args.switch_ms / 1000.0)
    win = MainWindow(source=args.clip, method=methods[0], compare=methods if len(methods) > 1 else None)
    win.show()
    frames: list = []
    gui_ms: list[float] = []
    recording = [False]

    def on_result(res, fps) -> None:
        if recording[0]:
            frames.append((time.perf_counter(), res.index, dict(res.timings), dict(res.method_ms), len(res.faces)))

    win.bridge.result.connect(on_result)
    original = win.on_result

    def timed(res, fps) -> None:  # the window's own slot, timed: the GUI thread's cost per shown frame
        t = time.perf_counter()
        original(res, fps)
        if recording[0]:
            gui_ms.append((time.perf_counter() - t) * 1e3)

    win.bridge.result.disconnect(win.on_result)
    win.bridge.result.connect(timed)

    def pump(seconds: float) -> None:
        t0 = time.time()
        while time.time() - t0 < seconds:
            app.processEvents(QtCore.QEventLoop.AllEvents, 20)
            time.sleep(0.002)

    # GUI responsiveness: how late a 50 ms timer fires on the GUI thread (a key press waits as long)
    lateness: list[float] = []
    probe = QtCore.QTimer()
    probe.setTimerType(QtCore.Qt.PreciseTimer)
    last_fire = [None]

    def on_probe() -> None:
        now = time.perf_counter()
        if recording[0] and last_fire[0] is not None:
            lateness.append(max(0.0, (now - last_fire[0]) * 1e3 - 50.0))
        last_fire[0] = now

    probe.timeout.connect(on_probe)
    probe.start(50)
    pump(args.warmup)
    shown0, processed0 = win.frames_shown, (win.bridge.pipeline.frames_processed if win.bridge.pipeline else 0)
    # OS threads of this process once everything is running: ONNX Runtime's pools show up here
    os_threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None
    recording[0] = True
    t0 = time.perf_counter()
    pump(args.seconds)
    span = time.perf_counter() - t0
    recording[0] = False
    pipe = win.bridge.pipeline
    processed = (pipe.frames_processed if pipe else 0) - processed0
    latency = dict(win.bridge.latency)
    if args.screenshot:
        win.grab().save(args.screenshot)
    win.close()
    pump(1.0)

    import numpy as np

    def med(values) -> float:
        return round(float(np.median(values)), 2) if len(values) else float("nan")

    stages = sorted({k for _, _, t, _, _ in frames for k in t})
    with_face = [f for f in frames if f[4]]
    per_face = {m: med([f[3][m] / f[4] for f in with_face if m in f[3]]) for m in methods}
    report = {
        "clip": args.clip, "methods": methods, "policy": args.policy, "workers": args.workers,
        "switch_ms": args.switch_ms, "seconds": round(span, 1),
        "shown_fps": round((win.frames_shown - shown0) / span, 2), "processed_fps": round(processed / span, 2),
        "stage_ms_median": {k: med([t[k] for _, _, t, _, _ in frames if k in t]) for k in stages},
        "in_app_ms_per_face_median": per_face,
        "speed_panel_ms_per_face": {m: round(v, 2) for m, v in latency.items()},
        "gui_thread_ms_per_shown_frame_median": med(gui_ms),
        "gui_timer_late_ms_median": med(lateness),
        "os_threads": os_threads, "load_1min": round(os.getloadavg()[0], 1), "cores": os.cpu_count(),
    }
    if not args.no_bench:
        from engine.evaluation.bench import fixed_crops, ms_per_face

        crops = fixed_crops()
        report["bench_1t_ms_per_face"] = {m: round(ms_per_face(m, 1, repeats=40, crops=crops)["median"], 2)
                                          for m in methods}
        report["ratio_in_app_to_bench"] = {m: round(per_face[m] / report["bench_1t_ms_per_face"][m], 2)
                                           for m in methods}
    print(json.dumps(report))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
