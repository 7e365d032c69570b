"""Plays a low-frame-rate clip in compare mode with smoothing on (run by tests/app/test_gui_live.py on Xvfb) and
records, for every result the window shows, the frame index each pane's image was drawn from and the landmarks
drawn on it; after closing the window, aligns every frame of the clip alone (a fresh tracker per frame, no
smoothing) with the same methods and reports each pane's distance to that, frame by frame."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gui_common import start_app, wait_until  # noqa: E402


def main(clip: str, out_dir: str, methods: str, passes: str = "2") -> None:
    out = Path(out_dir)
    names = methods.split(",")
    app, MainWindow = start_app()
    win = MainWindow(source=clip, compare=names)
    win.act_smooth.setChecked(True)
    win.bridge.set_smoothing(True)
    win.show()
    shown: list = []

    def record(res, fps) -> None:
        panes = {m: win.pane_frames.get(m) for m in names}
        shown.append({"index": res.index, "panes": panes,
                      "faces": [{m: f.results[m].landmarks[:, :2].tolist() for m in names if m in f.results}
                                for f in res.faces]})

    win.bridge.result.connect(record)
    from engine.sources import open_source

    n = open_source(clip).length
    ok = wait_until(app, lambda: len({s["index"] for s in shown}) >= n and len(shown) >= int(passes) * n, 300)
    win.close()
    wait_until(app, lambda: not win.bridge.running, 10)

    import numpy as np

    from engine.pipeline import FrameProcessor

    proc = FrameProcessor(names)
    alone = {}
    for frame in open_source(clip).frames():
        proc.tracker.reset()
        res = proc.process(frame)
        alone[frame.index] = [{m: f.results[m].landmarks[:, :2] for m in names if m in f.results} for f in res.faces]
    proc.close()
    rows = []
    for s in shown:
        ref = alone[s["index"]]
        for face in s["faces"]:
            for m, pts in face.items():
                pts = np.asarray(pts)
                # the face alone nearest to this one (one face in the clip; several would match by position)
                cands = [r[m] for r in ref if m in r]
                if not cands:
                    rows.append({"index": s["index"], "method": m, "error_px": None})
                    continue
                err = min(float(np.linalg.norm(pts - c, axis=1).mean()) for c in cands)
                rows.append({"index": s["index"], "method": m, "error_px": err})
    report = {"finished": ok, "frames": n, "shown": len(shown), "rows": rows,
              "pane_frames_match": all(all(v == s["index"] for v in s["panes"].values()) for s in shown)}
    (out / "sync.json").write_text(json.dumps(report))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:])
