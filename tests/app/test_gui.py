"""The real window under Xvfb, driven and checked through its screenshots."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from engine.paths import PROJECT_ROOT


@pytest.fixture(scope="module")
def gui_run(display, dev_dir, tmp_path_factory):
    video = dev_dir.parent / "video" / "obama.mp4"
    if not video.exists():
        pytest.skip(f"{video} missing")
    out = tmp_path_factory.mktemp("gui")
    env = dict(os.environ, XDG_CONFIG_HOME=str(out / "config"), DISPLAY=display, QT_QPA_PLATFORM="xcb")
    p = subprocess.run([sys.executable, "tests/app/gui_driver.py", str(video), str(out)], cwd=PROJECT_ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (out / "report.json").exists(), p.stderr[-3000:]
    return json.loads((out / "report.json").read_text()), out


def test_plays_and_tracks(gui_run):
    rep, _ = gui_run
    assert rep["played"] and rep["frames_shown"] >= 40
    assert rep["tracked"] >= 38
    assert rep["fps_has_data"] and rep["table_rows"] >= 1


def test_landmarks_drawn_on_the_face(gui_run):
    _, out = gui_run
    img = cv2.imread(str(out / "video.png"))
    green = (img[..., 1] > 180) & (img[..., 0] < 110) & (img[..., 2] < 130)
    ys, xs = np.nonzero(green)
    assert len(xs) > 30
    # clustered in one face-sized region, not spread over the frame
    assert np.ptp(xs) < 0.5 * img.shape[1] and np.ptp(ys) < 0.7 * img.shape[0]


def test_mesh_and_frontal_panes_not_empty(gui_run):
    rep, out = gui_run
    mesh = cv2.imread(str(out / "mesh.png"))
    assert rep["mesh_frames"] > 0
    bg = np.array([0x1b, 0x1b, 0x1b])
    assert (np.abs(mesh.astype(int) - bg).sum(-1) > 30).mean() > 0.05
    front = cv2.imread(str(out / "frontal.png"))
    assert (front.sum(-1) > 60).mean() > 0.1 and front.std() > 20


def test_fps_plot_has_a_curve(gui_run):
    _, out = gui_run
    img = cv2.imread(str(out / "fps.png"))
    green = (img[..., 1] > 150) & (img[..., 0] < 120) & (img[..., 2] < 120)
    assert green.sum() > 50


def test_switch_method_and_compare(gui_run):
    rep, out = gui_run
    if rep["other_method"] is None:
        pytest.skip("only one method has weights")
    assert rep["switched"] and rep["compared"]
    assert rep["grid_views"] == sorted(["mediapipe", rep["other_method"]]) and rep["grid_filled"]


def test_gui_export_cancelled_halfway_leaves_valid_files(gui_run):
    rep, out = gui_run
    if rep["other_method"] is None:
        pytest.skip("only one method has weights")
    assert rep["export_finished"] and rep["export_message"].startswith("cancelled after"), rep["export_message"]
    import csv

    rows = list(csv.DictReader(open(out / "export" / "annotations.csv")))
    doc = json.loads((out / "export" / "annotations.json").read_text())
    assert 5 <= len(doc["frames"]) < 55 and rows
    assert doc["metadata"]["partial"] is True  # a cancelled export says it holds only part of the source


def test_no_thread_left_behind(gui_run):
    rep, _ = gui_run
    assert rep["threads_left"] == []


@pytest.mark.parametrize("source", ["zero.mp4", "missing.mp4", "7"])
def test_scripted_run_that_cannot_open_exits_nonzero(display, tmp_path, source):
    """`--source zero.mp4 --exit-after 5 --screenshot x.png` (an empty file), a missing path or an absent camera:
    the scripted run exits non-zero with the reason, and still writes its screenshot (it used to wait forever)."""
    (tmp_path / "zero.mp4").write_bytes(b"")
    spec = source if source == "7" else str(tmp_path / source)
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path), DISPLAY=display, QT_QPA_PLATFORM="xcb")
    shot = tmp_path / "x.png"
    p = subprocess.run([sys.executable, "main.py", "--source", spec, "--exit-after", "5", "--screenshot", str(shot)],
                       cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr and ("empty file" in p.stderr or "no such file" in p.stderr
                                             or "camera 7" in p.stderr), p.stderr[-2000:]
    assert shot.exists()


@pytest.fixture(scope="module")
def checks(display, dev_dir, tmp_path_factory):
    """One launch of the real window through issue 10's points (tests/app/gui_checks.py)."""
    video = dev_dir.parent / "video" / "obama.mp4"
    if not video.exists():
        pytest.skip(f"{video} missing")
    out = tmp_path_factory.mktemp("checks")
    folder = out / "folder"
    folder.mkdir()
    images = sorted((dev_dir / "images").glob("*.jpg"))[:23]
    for f in images:
        shutil.copy(f, folder / f.name)
    cv2.imwrite(str(folder / "zz_no_face.png"), np.full((300, 300, 3), 128, np.uint8))  # last: no face
    env = dict(os.environ, XDG_CONFIG_HOME=str(out / "config"), DISPLAY=display, QT_QPA_PLATFORM="xcb")
    p = subprocess.run([sys.executable, "tests/app/gui_checks.py", str(video), str(folder), str(out)], cwd=PROJECT_ROOT,
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((out / "checks.json").read_text()), out


def test_default_method_is_the_most_accurate_measured(checks):
    rep, _ = checks
    from engine.methods.base import registry
    from engine.paths import weights_path

    balanced = {}
    for name, info in registry().items():
        path = PROJECT_ROOT / "docs" / "results" / f"{name}_protocol.json"
        if weights_path(info.weights).exists() and path.exists():
            balanced[name] = json.loads(path.read_text())["nme"]["balanced"]
    if not balanced:
        pytest.skip("no measured results in docs/results")
    assert rep["default_method"] == min(balanced, key=balanced.get)


def test_keys_work_from_the_spin_box_and_after_a_dialog(checks):
    rep, _ = checks
    assert rep["focus_at_start"] == "QSpinBox"  # the focus where the bug report found it
    assert rep["keys_in_spinbox"] == {"space": True, "s": True, "w": True}
    assert rep["key_after_dialog"]


def test_folder_is_browsed(checks):
    """Opens on the first image, paused; next, the slider and previous show the image asked for; play processes
    every image in order and stays on the last; the export holds every image."""
    rep, out = checks
    n = rep["folder_images"]
    assert n == 24 and rep["folder_dialog_used"]
    assert rep["folder_first"] == [0] and rep["folder_paused"] and rep["folder_slider"] == [True, n - 1]
    assert rep["after_next"] == [1] and rep["after_slider"] == [n - 3] and rep["after_prev"] == [n - 4]
    played = rep["played_indices"]
    assert played == sorted(played) and set(range(1, n)) <= set(played), played
    assert rep["still_running_at_end"]  # held on the last image for browsing, not closed
    doc = json.loads((out / "folder_export" / "annotations.json").read_text())
    assert [f["frame"] for f in doc["frames"]] == list(range(n)) and doc["metadata"]["partial"] is False


def test_video_length_from_the_decoder(checks):
    """obama.mp4's header says 158 frames, the file holds 55: the slider ends at 54, seeking past a third keeps
    playing (to the end, then the loop), the export's progress reaches 55 of 55."""
    rep, _ = checks
    assert rep["video_slider_max"] == 54
    assert rep["after_seek_indices"]
    assert rep["video_export_last_progress"] == [55, 55]
    assert rep["video_export_message"].startswith("exported 55 frames")


def test_export_feedback(checks):
    rep, _ = checks
    assert rep["cancel_notice"].startswith("export cancelled")
    assert rep["empty_folder_dialog_open"] and "folder" in rep["empty_folder_message"]
    assert rep["progress_dialog_visible_at_start"]
    assert rep["notice_after_frames"] == rep["video_export_message"]  # frames did not overwrite it
    assert "overwrite existing files" in rep["overwrite_message"] and "--force" not in rep["overwrite_message"]


def test_speed_numbers_are_labelled_and_agree(checks):
    rep, _ = checks
    lat, thr = rep["speed_headers"][1:3]
    assert "ms/face" in lat and "faces/s alone" in thr and "30 frames" in lat and "same 30 frames" in thr
    assert "shown" in rep["speed_rates"] and "processed" in rep["speed_rates"]
    # compare mode: the panel says why its ms per face differ from the bench's (methods side by side, load)
    assert "bench: 1t" in rep["speed_rates"] and "mean of 30 frames" in rep["speed_rates"]
    if (os.cpu_count() or 1) > 1:
        assert "methods at a time" in rep["speed_rates"], rep["speed_rates"]


def test_no_stale_state(checks):
    rep, _ = checks
    assert rep["legend_compare"] == rep["compare_order_given"]
    assert rep["legend_single"] == [rep["single_method"]]  # leaving compare mode empties the legend
    assert len(rep["after_switch_methods"]) == 1 and rep["after_switch_methods"] != [rep["single_method"]]
    assert rep["after_switch_statuses_old"] == []
    assert rep["noface_index"] == [rep["folder_images"] - 1]
    assert not rep["noface_mesh_visible"] and not rep["noface_frontal_has_image"]
    assert rep["failed_open_banner"] and not rep["failed_open_has_image"]


def test_compare_grid_order_labels_and_toolbar(checks):
    rep, _ = checks
    first = rep["compare_order_given"][0]
    assert rep["grid_order"] == rep["compare_order_given"]
    assert first in rep["mesh_label"] and first in rep["frontal_label"]  # the panes name their method
    assert rep["window_width"] == 1280 and rep["export_compare_visible"]


def test_compare_report_pauses_the_live_view(checks):
    rep, _ = checks
    assert rep["compare_export_message"].startswith("compare report")
    assert rep["live_paused_during_compare_export"] and rep["live_resumed_after"]


def test_key_response_in_compare_mode(checks):
    """A key queued behind the pending results takes effect within 100 ms (median of 12) with every method in
    compare mode: results are coalesced and drawn and scaled in the worker thread. (Median 240-360 ms before.)"""
    rep, _ = checks
    assert len(rep["compare_methods_for_latency"]) >= 2
    assert rep["key_latency_median_ms"] < 100, rep["key_latency_ms"]


SOAK_SECONDS = 44.0  # the acceptance run: a 44 s clip in compare mode with every method


def looped_clip(video, path, seconds: float) -> tuple[int, float]:
    """``video`` played forward then backward until ``seconds`` long (no jump cut for the tracker); returns
    (frames, fps)."""
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    n = int(np.ceil(seconds * fps))
    for i in range(n):
        writer.write(frames[order[i % len(order)]])
    writer.release()
    return n, fps


def test_soak_compare_every_method(display, dev_dir, tmp_path):
    """The real window plays a 44 s clip in compare mode with every method; plots, mesh and frontal panes update
    all the way; the process exits 0 (PySide6-Essentials 6.12.0 aborted here with none_dealloc) at flat memory."""
    video = dev_dir.parent / "video" / "obama.mp4"
    if not video.exists():
        pytest.skip(f"{video} missing")
    clip = tmp_path / "clip44.mp4"
    n_frames, fps = looped_clip(video, clip, SOAK_SECONDS)
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"), DISPLAY=display, QT_QPA_PLATFORM="xcb")
    p = subprocess.run([sys.executable, "tests/app/gui_soak.py", str(clip), str(tmp_path), str(SOAK_SECONDS + 2)],
                       cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"exit code {p.returncode}: {p.stderr[-3000:]}"
    rep = json.loads((tmp_path / "soak.json").read_text())
    every = rep["methods"]
    assert len(every) >= 2 and sorted(rep["grid_views"]) == every and rep["methods_seen"] == every
    # played to the clip's end (the capture is paced at the clip's frame rate), updating every pane
    assert rep["max_index"] >= 0.9 * n_frames, rep["max_index"]
    assert rep["frames_shown"] >= 50 and rep["distinct_indices"] >= 50
    assert rep["mesh_received"] >= 0.9 * rep["frames_shown"] and rep["frontal_frames"] >= 0.9 * rep["frames_shown"]
    # the mesh pane redraws at its capped rate (software rendering on the GUI thread), all the way through
    assert rep["mesh_frames"] >= 0.5 * min(rep["mesh_received"], rep["mesh_max_fps"] * rep["seconds"])
    assert all(n >= 50 for n in rep["plot_points"].values()) and set(every) <= set(rep["plot_points"])
    # None's reference count stays put: PySide6-Essentials 6.12.0 drained it by ~25 per PlotDataItem.setData until
    # the interpreter aborted ("none_dealloc"; ~1000 a second here, so a slow machine crashed only after 44 s)
    none_refs = [(t, n) for t, _, _, n in rep["rss"]]
    start = np.median([n for t, n in none_refs if 10 <= t < 15])
    assert min(n for t, n in none_refs if t >= 15) > start - 2000, none_refs
    # flat memory: after a 10 s warm-up, resident memory grows by less than 80 MB over the remaining 34 s (one
    # leaked 1280x720 frame per update would add ~2.7 MB per frame, hundreds of MB here)
    rss = [(t, mb) for t, mb, _, _ in rep["rss"]]
    warm = [mb for t, mb in rss if 10 <= t < 15]
    last = [mb for t, mb in rss if t >= rss[-1][0] - 5]
    assert warm and last and np.median(last) - np.median(warm) < 80, rss
