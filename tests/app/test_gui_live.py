"""The live window in compare mode (issue 27): every pane's landmarks on the face at a low frame rate with
smoothing on; tiles zoomed to the faces with a whole-frame toggle; the walk-through defects. Each test drives the
real window in its own process on Xvfb (tests/app/gui_sync_driver.py, tests/app/gui_live_driver.py)."""
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
    run_driver("tests/app/gui_sync_driver.py", display, tmp_path, clip, tmp_path, ",".join(present), 2)
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


@pytest.fixture(scope="module")
def live(display, dev_dir, tmp_path_factory):
    """One launch of the window through the compare-mode walk-through (tests/app/gui_live_driver.py)."""
    from engine.methods.base import registry

    video = dev_dir.parent / "video" / "obama.mp4"
    if not video.exists():
        pytest.skip(f"{video} missing")
    pair = [m for m in ("mtcnn3d", "mediapipe", "baseline") if registry()[m].available][:2]
    if len(pair) < 2:
        pytest.skip("two of mtcnn3d, mediapipe, baseline need weights")
    out = tmp_path_factory.mktemp("live")
    clip = out / "clip.mp4"
    low_rate_clip(video, clip, step=1, fps=25.0)
    run_driver("tests/app/gui_live_driver.py", display, out, clip, out, *pair)
    return json.loads((out / "live.json").read_text()), out, pair


def test_compare_tiles_are_zoomed_to_the_face_and_toggle_to_the_whole_frame(live):
    rep, out, pair = live
    assert rep["played"]
    w, h = rep["frame_size"]
    x0, y0, x1, y1 = rep["region"]
    # the region holds every face's box and is a fraction of the frame, at the tiles' aspect
    for bx0, by0, bx1, by1 in rep["face_boxes"]:
        assert x0 <= bx0 + 2 and y0 <= by0 + 2 and bx1 - 2 <= x1 and by1 - 2 <= y1
    assert (x1 - x0) * (y1 - y0) < 0.6 * w * h
    face_h = max(b[3] - b[1] for b in rep["face_boxes"])
    for m, (tw, th) in rep["tile_sizes"].items():
        vw, vh = rep["view_sizes"][m]
        assert tw == vw or th == vh  # scaled to the pane in the worker thread
        assert face_h / (y1 - y0) * th > 0.45 * th  # the face fills about half the tile's height or more
    # "Whole frame" shows the whole frame
    assert rep["region_whole"] == [0, 0, w, h]
    tile = cv2.imread(str(out / "tile_zoomed.png"))
    other = cv2.imread(str(out / "tile_zoomed_second.png"))
    # the same region in both tiles: below the face (no overlays there) their pixels agree
    bottom = slice(int(0.9 * tile.shape[0]), tile.shape[0])
    assert tile.shape == other.shape
    assert np.abs(tile[bottom].astype(int) - other[bottom].astype(int)).mean() < 4
    band = tile[: tile.shape[0] // 12]
    assert band.mean() < tile.mean()  # the label's dark band along the top


def test_switching_method_keeps_the_frame_and_the_pause(live):
    rep, _, pair = live
    assert rep["at_20"] and rep["after_switch_shown"]
    assert rep["after_switch_indices"] == [20] and rep["after_switch_paused"] == [True, True]
    assert rep["single_indices"] == [20] and rep["single_paused"]
    assert rep["max_faces_redone"]
    # the speed chart's time axis stood still through 1.5 s of pause and a step (playing time)
    assert rep["chart_advance_while_paused_s"] < 0.5, rep["chart_advance_while_paused_s"]


def test_method_box_names_the_first_tile_and_the_side_panes(live):
    rep, _, pair = live
    first, second = pair
    assert rep["method_box"] == first and first in rep["compare_label"] and second in rep["compare_label"]
    # choosing the second in the box makes it the first tile and the side panes' method
    assert rep["after_switch_grid"][0] == second and rep["after_switch_method_box"] == second
    assert second in rep["after_switch_mesh_label"]


def test_provider_label_names_the_shown_methods_runtime(live):
    rep, _, pair = live
    assert rep["single_methods"] == [pair[1]]
    if pair[1] == "mediapipe":
        assert "TFLite" in rep["provider_label"] and "CPUExecutionProvider" not in rep["provider_label"]


def test_exports_follow_the_toolbar_and_say_when_partial(live):
    rep, out, pair = live
    doc = json.loads((out / "export" / "annotations.json").read_text())
    assert doc["metadata"]["max_faces"] == 1 and doc["metadata"]["partial"] is True
    assert len(rep["compare_export_methods"]) >= 2 and set(pair) <= set(rep["compare_export_methods"])
    assert "partial" in rep["compare_message"], rep["compare_message"]
    assert json.loads((out / "compare_report" / "report.json").read_text())["partial"] is True


def test_existing_files_banner_without_open_buttons_and_still_image_label(live):
    rep, _, pair = live
    assert "already exist" in rep["exists_message"], rep["exists_message"]
    assert rep["exists_banner_and_buttons"] == [True, False]
    assert rep["still_label"].startswith(pair[1]) and "shown" not in rep["still_label"]


def test_toolbar_at_1024_and_menu_and_settings(live):
    rep, _, _ = live
    assert all(rep["toggles_visible_1024"].values()), rep["toggles_visible_1024"]
    assert rep["menu_open_after_tick"] and rep["menu_ticked"]
    assert rep["texture_after_reopen"] is False
    assert rep["ticked_after_reopen"] == rep["ticked_before_close"]
