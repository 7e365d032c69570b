"""Drives the real window on a video with the 'Flip avg' toggle (run by tests/app/test_flip_gui.py in its own process
on Xvfb): plays with one method, turns flip averaging on from the toolbar, then off, and reports as JSON what the
status bar, the speed panel and the results said in each mode."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gui_common import start_app, wait_until  # noqa: E402


def main(video: str, method: str, out_dir: str) -> None:
    out = Path(out_dir)
    app, MainWindow = start_app()
    report: dict = {}
    win = MainWindow(source=video, method=method)
    win.show()
    seen: list[dict] = []

    def record(res, fps) -> None:
        r = res.faces[0].results.get(method) if res.faces else None
        seen.append({"stages": sorted(res.timings), "flip_ms": res.timings.get("flip"),
                     "result_flip_ms": None if r is None else r.timings.get("flip")})

    win.bridge.result.connect(record)
    report["played"] = wait_until(app, lambda: len(seen) >= 10, 120)
    report["plain"] = seen[-1] if seen else None
    report["status_plain"] = win.status_label.text()
    seen.clear()
    win.act_flip.trigger()   # the toolbar toggle, as a click
    report["flip_checked"] = win.act_flip.isChecked()
    report["flipped"] = wait_until(app, lambda: sum(s["flip_ms"] is not None for s in seen) >= 10, 120)
    report["flip"] = next((s for s in reversed(seen) if s["flip_ms"] is not None), None)
    wait_until(app, lambda: False, 0.5)   # the speed panel redraws at most 5 times a second
    report["status_flip"] = win.status_label.text()
    table = win.fps_panel.table
    report["panel_rows"] = [[table.item(r, c).text() for c in range(table.columnCount()) if table.item(r, c)]
                            for r in range(table.rowCount())]
    seen.clear()
    win.act_flip.trigger()
    report["unflipped"] = wait_until(app, lambda: sum(s["flip_ms"] is None for s in seen) >= 5, 120)
    win.close()
    wait_until(app, lambda: not win.bridge.running, 10)
    time.sleep(0.3)
    report["threads_left"] = [t.name for t in threading.enumerate() if t.name.startswith("facealign")]
    (out / "report.json").write_text(json.dumps(report))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (C-extension finalisers can abort; see app/main_window.run)


if __name__ == "__main__":
    main(*sys.argv[1:4])
