"""annotate / compare / bench: round trips, cancel safety, bad input."""
import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from engine.export.openface import openface_rotation
from engine.export.writers import csv_columns
from engine.paths import PROJECT_ROOT


def run_main(*args, timeout=300):
    return subprocess.run([sys.executable, "main.py", *map(str, args)], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, dev_dir):
    """A short real clip: the first 12 frames of the shared test video."""
    src = dev_dir.parent / "video" / "obama.mp4"
    if not src.exists():
        pytest.skip(f"{src} missing")
    out = tmp_path_factory.mktemp("clip") / "clip.mp4"
    cap = cv2.VideoCapture(str(src))
    w = None
    for _ in range(12):
        ok, f = cap.read()
        f = cv2.resize(f, (640, 360))
        if w is None:
            w = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 360))
        w.write(f)
    w.release()
    return out


def test_csv_columns_follow_openface():
    cols = csv_columns()
    assert cols[:11] == ["frame", "face_id", "timestamp", "confidence", "success", "pose_Tx", "pose_Ty", "pose_Tz",
                         "pose_Rx", "pose_Ry", "pose_Rz"]
    assert cols[11] == "x_0" and cols[11 + 68] == "y_0" and cols[11 + 136] == "X_0" and cols[11 + 340] == "p_scale"
    assert cols[11 + 346] == "v_0" and cols[-2:] == ["file", "method"] and len(cols) == 11 + 6 * 68 + 6 + 2


def test_annotate_round_trip(clip, tmp_path):
    from engine.export.annotate import annotate

    frames = []
    s = annotate(str(clip), ["mediapipe"], tmp_path, ["csv", "json", "pts", "obj", "video"],
                 on_frame=frames.append)
    assert s.frames == 12 and s.frames_with_face >= 10
    rows = [r for r in csv.DictReader(open(tmp_path / "annotations.csv")) if r["success"] == "1"]
    doc = json.loads((tmp_path / "annotations.json").read_text())
    assert doc["metadata"]["methods"] == ["mediapipe"] and doc["metadata"]["version"]
    by_frame = {f.index: f for f in frames}
    assert len(rows) == sum(len(f.faces) for f in frames)
    for row in rows:
        r = by_frame[int(row["frame"])].faces[0].results["mediapipe"]
        xs = np.array([float(row[f"x_{i}"]) for i in range(68)])
        vs = np.array([int(row[f"v_{i}"]) for i in range(68)])
        assert np.allclose(xs, r.landmarks[:, 0], atol=1e-3)
        assert (vs == r.visible).all()
        rx_ry_rz = [float(row[k]) for k in ("pose_Rx", "pose_Ry", "pose_Rz")]
        assert np.allclose(rx_ry_rz, openface_rotation(r.pose), atol=1e-4)
    for jf in doc["frames"]:
        for face in jf["faces"]:
            r = by_frame[jf["frame"]].faces[0].results["mediapipe"]
            assert np.allclose(face["landmarks"], r.landmarks, atol=1e-3)
    pts = sorted((tmp_path / "pts" / "mediapipe").glob("*.pts"))
    assert len(pts) == len(rows) and "n_points: 68" in pts[0].read_text()
    frame_index, face_id = map(int, pts[0].stem.split("_"))
    face = next(f for f in by_frame[frame_index].faces if f.face_id == face_id)
    assert np.allclose(_menpo_style_import(pts[0]), face.results["mediapipe"].landmarks[:, :2], atol=1e-3)
    obj = sorted((tmp_path / "obj" / "mediapipe").glob("*.obj"))[0].read_text()
    assert obj.count("\nv ") + obj.startswith("v ") == 468 and obj.count("\nf ") > 800
    cap = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    assert not list(tmp_path.glob(".*part*"))


def test_cancel_halfway_leaves_valid_files(clip, tmp_path):
    from engine.export.annotate import annotate

    seen = []
    s = annotate(str(clip), ["mediapipe"], tmp_path, ["csv", "json", "video"],
                 on_frame=seen.append, cancelled=lambda: len(seen) >= 5)
    assert s.cancelled and s.frames == 5
    rows = list(csv.DictReader(open(tmp_path / "annotations.csv")))
    assert {int(r["frame"]) for r in rows} == set(range(5))
    doc = json.loads((tmp_path / "annotations.json").read_text())
    assert len(doc["frames"]) == 5
    cap = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    assert cap.read()[0]


def test_no_overwrite_without_force(clip, tmp_path):
    assert run_main("annotate", clip, "--method", "mediapipe", "--out", tmp_path).returncode == 0
    before = (tmp_path / "annotations.csv").read_bytes()
    out = run_main("annotate", clip, "--method", "mediapipe", "--out", tmp_path)
    assert out.returncode != 0 and "--force" in out.stderr
    assert (tmp_path / "annotations.csv").read_bytes() == before
    assert run_main("annotate", clip, "--method", "mediapipe", "--out", tmp_path, "--force").returncode == 0


@pytest.mark.parametrize("kind", ["zero", "text", "truncated", "no_images", "missing"])
def test_bad_inputs_get_one_line_errors(kind, clip, tmp_path):
    if kind == "zero":
        p = tmp_path / "zero.mp4"
        p.write_bytes(b"")
    elif kind == "text":
        p = tmp_path / "notes.mp4"
        p.write_text("this is not a video\n" * 10)
    elif kind == "truncated":
        p = tmp_path / "cut.mp4"
        p.write_bytes(clip.read_bytes()[:2000])
    elif kind == "no_images":
        p = tmp_path / "empty_folder"
        p.mkdir()
        (p / "readme.txt").write_text("no images here")
    else:
        p = tmp_path / "nowhere.mp4"
    out = run_main("annotate", p, "--method", "mediapipe", "--out", tmp_path / "out")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    err = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    assert not (tmp_path / "out" / "annotations.csv").exists()


def test_odd_images_are_handled_or_skipped(dev_dir, tmp_path):
    """16-bit, RGBA, grayscale and normal images are aligned; 1x1 and corrupt files are skipped and counted."""
    src = cv2.imread(str(next((dev_dir / "images").glob("*.jpg"))))
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_normal.jpg"), src)
    cv2.imwrite(str(folder / "b_16bit.png"), src.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "c_rgba.png"), cv2.cvtColor(src, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(folder / "d_gray.png"), cv2.cvtColor(src, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "e_tiny.png"), src[:1, :1])
    (folder / "f_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    cv2.imwrite(str(folder / "g_noface.png"), np.full((200, 200, 3), 128, np.uint8))
    out = run_main("annotate", folder, "--method", "mediapipe", "--out", tmp_path / "out", "--formats", "csv,json")
    assert out.returncode == 0, out.stderr
    assert "2 unreadable images skipped" in out.stdout
    rows = list(csv.DictReader(open(tmp_path / "out" / "annotations.csv")))
    assert sorted({int(r["frame"]) for r in rows if r["success"] == "1"}) == [0, 1, 2, 3]
    assert [r["file"] for r in rows if r["success"] == "0"] == ["g_noface.png"]


def test_unwritable_output_folder(clip, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "file").write_text("x")
    out = run_main("annotate", clip, "--method", "mediapipe", "--out", ro / "file" / "sub")
    assert out.returncode != 0 and "cannot write" in out.stderr and "Traceback" not in out.stderr


def test_compare_produces_report_and_grid(clip, tmp_path):
    from engine.evaluation.compare import compare

    methods = ["mediapipe"] + [m for m in ("baseline",) if (PROJECT_ROOT / "weights" / f"{m}.onnx").exists()]
    res = compare(str(clip), methods, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert res["frames"] == 12 and all(m in report for m in methods)
    assert (tmp_path / "speed.png").stat().st_size > 1000 and (tmp_path / "compare.mp4").exists()
    r = res["methods"]["mediapipe"]
    assert r["ms_per_face"] > 0 and r["frames_with_face"] >= 10
    # no jitter from a real clip: its frame-to-frame motion is the head's (stability has its own benchmark)
    assert not any("jitter" in k for k in r) and "jitter" not in report.lower().split("no jitter here")[0]


def test_bench_json(tmp_path):
    out = run_main("bench", "--methods", "mediapipe", "--repeats", "5", "--json", timeout=600)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])["methods"]["mediapipe"]
    assert set(res) >= {"ms_per_face_1t", "ms_per_face_2t", "pipeline_fps", "provider"}
    assert res["ms_per_face_1t"] > 0 and res["pipeline_fps"] > 0


def _menpo_style_import(path) -> np.ndarray:
    """(N, 2) 0-based x, y read the way menpo's .pts importer reads 300-W files: the numbers between the braces,
    minus 1 (the format is 1-based)."""
    text = path.read_text()
    return np.loadtxt(text[text.index("{") + 1:text.index("}")].strip().splitlines(), ndmin=2) - 1.0


def test_pts_files_are_one_based_like_300w(tmp_path):
    from engine.export.writers import pts_text, read_pts

    lm = np.array([[0.0, 0.0, 5.0], [10.25, 3.5, -1.0], [639.0, 479.0, 0.0]])
    text = pts_text(lm)
    assert text.splitlines()[:3] == ["version: 1", "n_points: 3", "{"]
    assert text.splitlines()[3] == "1.000 1.000"  # the top-left pixel's centre is (1, 1) in 300-W
    p = tmp_path / "a.pts"
    p.write_text(text)
    assert np.allclose(_menpo_style_import(p), lm[:, :2])
    assert np.allclose(read_pts(p), lm[:, :2])
    p.write_text("not a pts file")
    with pytest.raises(ValueError, match="not a .pts file"):
        read_pts(p)
