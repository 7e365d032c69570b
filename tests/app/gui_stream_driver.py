"""Drives the real window's OSC stream toggle on the test clip (run by tests/app/test_gui_stream.py in its own
process): turns it on towards a python-osc receiver, checks what arrives against what the worker processed,
kills the receiver mid-stream, and checks the settings keep host, port and toggle. Writes report.json."""
from __future__ import annotations

import json
import socket
import sys
import threading
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gui_common import start_app, wait_until  # noqa: E402


def main(video: str, out_dir: str) -> None:
    from pythonosc.dispatcher import Dispatcher
    from pythonosc.osc_server import BlockingOSCUDPServer

    out = Path(out_dir)
    app, MainWindow = start_app()
    received: list[tuple] = []
    d = Dispatcher()
    d.map("/facealign/landmarks", lambda address, *args: received.append(args))
    server = BlockingOSCUDPServer(("127.0.0.1", 0), d)
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    report: dict = {}
    win = MainWindow(source=video, method="baseline")
    processed: list[tuple] = []   # what the worker processed, in order: (frame, face id, 136 coordinates)
    draw = win.bridge.prepare

    def record(res, fps):  # worker thread, right after the bridge has streamed this frame
        for f in res.faces:
            r = f.results.get("baseline")
            if r is not None:
                processed.append((res.index, f.face_id, *r.landmarks[:, :2].ravel().tolist()))
        draw(res, fps)

    win.bridge.prepare = record
    win.show()
    controls = win.stream_controls
    report["control_visible"] = wait_until(app, controls.enabled.isVisible, 10)
    report["off_by_default"] = not controls.enabled.isChecked() and win.bridge.stream is None
    controls.host.setText("127.0.0.1")
    controls.host.editingFinished.emit()
    controls.port.setValue(server.server_address[1])
    controls.enabled.setChecked(True)
    report["streaming"] = wait_until(app, lambda: len(received) >= 20, 180)
    server.shutdown()   # the receiver goes away mid-stream
    server.server_close()
    n_before = len(received)
    sent = list(received)
    shown_at_kill = win.frames_shown
    stream_frames_at_kill = win.bridge.stream.frames
    report["kept_playing"] = wait_until(app, lambda: win.frames_shown >= shown_at_kill + 20, 180)
    report["stream_frames_after_kill"] = win.bridge.stream.frames - stream_frames_at_kill
    report["dropped_after_kill"] = win.bridge.stream.dropped
    report["banner_hidden"] = win.banner.isHidden()
    report["state_text"] = controls.state.text()
    # what arrived equals what the worker processed, message for message, in order
    k = min(n_before, len(processed))
    report["compared"] = k
    report["max_diff_px"] = max((max(abs(a - b) for a, b in zip(sent[i][2:], processed[i][2:])) for i in range(k)),
                                default=None)
    report["ids_equal"] = all(sent[i][:2] == processed[i][:2] for i in range(k))
    win.grab().save(str(out / "window.png"))
    win.close()
    app.processEvents()
    from app.qt import QtCore
    from app.stream_controls import StreamControls

    s = QtCore.QSettings("FaceAlign", "FaceAlign Studio")
    restored = StreamControls(types.SimpleNamespace(stream=None), s)  # what the next run's toolbar starts with
    report["restored"] = [restored.host.text(), restored.port.value(), restored.enabled.isChecked()]
    report["port"] = server.server_address[1]
    restored.close_stream()
    (out / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
