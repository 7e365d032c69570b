"""The real window under Xvfb, driven and checked through its screenshots."""
import json
import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from engine.paths import PROJECT_ROOT


@pytest.fixture(scope="module")
def display():
    """A private Xvfb display (.ci/run installs Xvfb; VisPy cannot render under Qt's offscreen platform)."""
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is not installed (apt-get install xvfb; .ci/run does): the GUI tests need a display")
    num = 90 + os.getpid() % 50
    proc = subprocess.Popen(["Xvfb", f":{num}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    yield f":{num}"
    proc.terminate()
    proc.wait(5)


@pytest.fixture(scope="module")
def gui_run(display, dev_dir, tmp_path_factory):
    video = dev_dir.parent / "video" / "obama.mp4"
    if not video.exists():
        pytest.skip(f"{video} missing")
    out = tmp_path_factory.mktemp("gui")
    env = dict(os.environ, XDG_CONFIG_HOME=str(out / "config"), DISPLAY=display, QT_QPA_PLATFORM="xcb")
    p = subprocess.run([sys.executable, "tests/gui_driver.py", str(video), str(out)], cwd=PROJECT_ROOT, env=env,
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


def test_no_thread_left_behind(gui_run):
    rep, _ = gui_run
    assert rep["threads_left"] == []


def test_no_camera_still_opens(display, tmp_path):
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path), DISPLAY=display, QT_QPA_PLATFORM="xcb")
    shot = tmp_path / "nocam.png"
    p = subprocess.Popen([sys.executable, "main.py", "--source", "7", "--exit-after", "1", "--screenshot", str(shot)],
                         cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        pass
    alive = p.poll() is None
    p.kill()
    _, err = p.communicate()
    assert alive or p.returncode == 0, err  # the window stays open, waiting for a file
    assert "Traceback" not in err


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
    p = subprocess.run([sys.executable, "tests/gui_soak.py", str(clip), str(tmp_path), str(SOAK_SECONDS + 2)],
                       cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"exit code {p.returncode}: {p.stderr[-3000:]}"
    rep = json.loads((tmp_path / "soak.json").read_text())
    every = rep["methods"]
    assert len(every) >= 2 and sorted(rep["grid_views"]) == every and rep["methods_seen"] == every
    # played to the clip's end (the capture is paced at the clip's frame rate), updating every pane
    assert rep["max_index"] >= 0.9 * n_frames, rep["max_index"]
    assert rep["frames_shown"] >= 50 and rep["distinct_indices"] >= 50
    assert rep["mesh_frames"] >= 0.9 * rep["frames_shown"] and rep["frontal_frames"] >= 0.9 * rep["frames_shown"]
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
