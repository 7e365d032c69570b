"""Soak run of the real window (run by tests/app/test_gui.py in its own process on Xvfb): play a long clip in compare
mode with every method that has weights, sample this process's resident memory once a second, then close and
exit 0. A crash in Qt/pyqtgraph (PySide6-Essentials 6.12.0 aborted with "none_dealloc" after ~60 plot updates)
kills the process before the report is written, so the test sees a non-zero exit code."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gui_common import start_app  # noqa: E402  (pins BLAS threads before numpy loads, as main.py does)
from app.qt import QtCore  # noqa: E402


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main(clip: str, out_dir: str, seconds: float) -> None:
    out = Path(out_dir)
    app, MainWindow = start_app()
    from engine.methods.base import registry

    every = sorted(n for n, info in registry().items() if info.available)
    win = MainWindow(source=clip, compare=every)
    win.show()
    seen: dict = {"indices": set(), "methods": set(), "frontal": 0}
    win.bridge.result.connect(lambda res, fps: (seen["indices"].add(res.index), seen["methods"].update(res.method_ms),
                                                seen.__setitem__("frontal", seen["frontal"] + (res.frontal is not None))))
    samples: list[tuple[float, float, int]] = []
    t0 = time.time()
    while time.time() - t0 < seconds:
        tick = time.time()
        while time.time() - tick < 1.0:
            app.processEvents(QtCore.QEventLoop.AllEvents, 50)
            time.sleep(0.005)
        samples.append((time.time() - t0, rss_mb(), win.frames_shown, sys.getrefcount(None)))
    import PySide6
    import pyqtgraph

    report = {
        "versions": {"PySide6": PySide6.__version__, "pyqtgraph": pyqtgraph.__version__},
        "methods": every,
        "grid_views": list(win.grid_views),
        "methods_seen": sorted(seen["methods"]),
        "frames_shown": win.frames_shown,
        "max_index": max(seen["indices"], default=-1),
        "distinct_indices": len(seen["indices"]),
        "mesh_frames": win.mesh_view.frames_drawn,
        "mesh_received": win.mesh_view.frames_received,
        "mesh_max_fps": win.mesh_view.max_fps,
        "seconds": seconds,
        "frontal_frames": seen["frontal"],
        "plot_points": {k: len(v[0]) for k, v in win.fps_panel.data.items()},
        "rss": samples,
    }
    win.grab().save(str(out / "soak.png"))
    win.close()
    t = time.time()
    while win.bridge.running and time.time() - t < 10:
        app.processEvents(QtCore.QEventLoop.AllEvents, 50)
    (out / "soak.json").write_text(json.dumps(report))
    sys.stdout.flush()
    os._exit(0)  # as app.main_window.run does: skip C-extension finalisers


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
