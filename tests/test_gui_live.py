"""The live window in compare mode (issue 27): every pane's landmarks on the face at a low frame rate with
smoothing on; tiles zoomed to the faces with a whole-frame toggle; the walk-through defects. Each test drives the
real window in its own process on Xvfb (tests/gui_sync_driver.py, tests/gui_live_driver.py)."""
import json
import os
import subprocess
import sys
from collections import defaultdict

import cv2
import numpy as np
import pytest

from engine.paths import PROJECT_ROOT

SYNC_METHODS = ["baseline", "cprfa", "mediapipe", "mtcnn3d"]  # the four: the first three missed the face
MAX_PANE_ERROR_PX = 6.0  # mean landmark distance on a 640x360 frame, face about 155 px: the filter's lag at 3 fps


def low_rate_clip(video, path, step: int = 8, fps: float = 3.0) -> list[int]:
    """Every ``step``-th frame of ``video`` at 640x360, forward then back (no jump cut), written at ``fps``: what
    a window processing about 3 frames a second of a 25 fps clip sees, but the same frames on every run."""
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA))
    cap.release()
    order = list(range(0, len(frames), step))
    order += order[-2:0:-1]
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 360))
    for i in order:
        w.write(frames[i])
    w.release()
    return order


def run_driver(script: str, display, tmp_path, *args: str, timeout: int = 600) -> None:
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"), DISPLAY=display, QT_QPA_PLATFORM="xcb")
    p = subprocess.run([sys.executable, script, *map(str, args)], cwd=PROJECT_ROOT, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]


def test_compare_panes_keep_landmarks_on_the_face_at_a_low_frame_rate(display, dev_dir, tmp_path):
    """Compare mode, four methods, smoothing on, a 3 fps clip (the head turns between frames): frame by frame,
    every pane shows the frame its results came from and its landmarks lie within a few pixels of what the same
    method gives on that frame alone. Before: 42-67 px off for baseline and mtcnn3d on the frame where the head
    turns (crops from the previous frame's smoothed landmarks)."""
    from engine.methods.base import registry

    present = [m for m in SYNC_METHODS if registry()[m].available]
    if len(present) < 2:
        pytest.skip("fewer than two of the methods have weights")
    video = dev_dir.parent / "video" / "obama.mp4"
    if not video.exists():
        pytest.skip(f"{video} missing")
    clip = tmp_path / "low.mp4"
    order = low_rate_clip(video, clip)
    run_driver("tests/gui_sync_driver.py", display, tmp_path, clip, tmp_path, ",".join(present), 2)
    rep = json.loads((tmp_path / "sync.json").read_text())
    assert rep["finished"] and rep["frames"] == len(order)
    assert rep["pane_frames_match"]
    errors = defaultdict(list)
    for row in rep["rows"]:
        assert row["error_px"] is not None, row  # the method found the face alone, and found it here too
        errors[row["method"]].append(row["error_px"])
    assert set(errors) == set(present)
    for m, errs in errors.items():
        assert len(errs) >= len(order), (m, len(errs))
        assert max(errs) <= MAX_PANE_ERROR_PX, (m, [round(e, 1) for e in errs])
