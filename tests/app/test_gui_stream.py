"""The app's OSC stream toggle (issue 29): streams what the worker processes, survives a killed receiver,
keeps host, port and toggle between runs."""
import json
import os
import subprocess
import sys

from engine.paths import PROJECT_ROOT


def test_stream_toggle_sends_what_the_worker_processed_and_persists(display, dev_dir, tmp_path):
    video = dev_dir.parent / "video" / "obama.mp4"
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"), DISPLAY=display, QT_QPA_PLATFORM="xcb")
    p = subprocess.run([sys.executable, "tests/app/gui_stream_driver.py", str(video), str(tmp_path)], cwd=PROJECT_ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["control_visible"] and rep["off_by_default"], rep
    assert rep["streaming"] and rep["compared"] >= 20 and rep["ids_equal"], rep
    assert rep["max_diff_px"] < 0.01, rep
    # the receiver is gone: the window kept playing and streaming, said nothing alarming, counted the refusals
    assert rep["kept_playing"] and rep["stream_frames_after_kill"] >= 20 and rep["banner_hidden"], rep
    assert rep["dropped_after_kill"] > 0 and "dropped" in rep["state_text"], rep
    assert rep["restored"] == ["127.0.0.1", rep["port"], True], rep
