"""annotate's files as their clients read them: OpenFace's CSV (pandas, the way py-feat reads it), 300-W .pts
(menpo), a textured .obj (trimesh), the JSON Schema (jsonschema), H.264 with audio (PyAV, ffprobe)."""
import json
import shutil
import subprocess
from fractions import Fraction
from importlib.metadata import version

import cv2
import numpy as np
import pytest

from engine.export.openface import (Camera, openface_euler_to_rotation, openface_geometry, openface_rotation,
                                    rotation_to_openface_euler)
from engine.geometry.rotation import euler_to_matrix
from engine.paths import PROJECT_ROOT

METHOD = "mtcnn3d"
IMAGES = ["image00002.jpg", "image00006.jpg", "image00014.jpg"]   # image00006 holds two faces


def read_openface_like_pyfeat(path):
    """What py-feat 2.1.5's ``feat.utils.io.read_openface`` does before wrapping the frame in a Fex: read with
    pandas, strip the header's spaces; its ``.landmarks`` are x_0..x_67, y_0..y_67 and its ``.poses`` pose_Rx,
    pose_Ry, pose_Rz. (py-feat itself does not import here: its torchvision wheel needs another torch build.)"""
    pd = pytest.importorskip("pandas")
    d = pd.read_csv(path, sep=",")
    d.columns = d.columns.str.strip(" ")
    landmarks = d[[f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]]
    poses = d[["pose_Rx", "pose_Ry", "pose_Rz"]]
    return d, landmarks, poses


@pytest.fixture(scope="module")
def image_run(dev_dir, tmp_path_factory):
    if not (PROJECT_ROOT / "weights" / f"{METHOD}.onnx").exists():
        pytest.skip(f"weights/{METHOD}.onnx missing")
    from engine.export.annotate import annotate

    root = tmp_path_factory.mktemp("images")
    folder = root / "in"
    folder.mkdir()
    for name in IMAGES:
        shutil.copy(dev_dir / "images" / name, folder / name)
    cv2.imwrite(str(folder / "zz_noface.png"), np.full((200, 200, 3), 128, np.uint8))
    frames = []
    annotate(str(folder), [METHOD], root / "out", ["csv", "json", "pts", "obj"], on_frame=frames.append)
    return folder, root / "out", frames


def test_camera_defaults_are_openfaces():
    assert Camera.for_image(640, 480) == Camera(500.0, 500.0, 320.0, 240.0)
    assert Camera.for_image(1280, 720) == Camera(875.0, 875.0, 640.0, 360.0)
    assert Camera.for_image(640, 480, fx=800) == Camera(800.0, 800.0, 320.0, 240.0)
    with pytest.raises(ValueError, match="positive"):
        Camera.for_image(640, 480, fx=-1)


def test_openface_euler_convention_round_trips():
    rng = np.random.default_rng(0)
    for angles in rng.uniform(-1.2, 1.2, (20, 3)):
        r = openface_euler_to_rotation(angles)
        assert np.allclose(rotation_to_openface_euler(r), angles, atol=1e-9)
    # a pure pitch / yaw / roll of the engine stays a rotation about OpenFace's x / y / z alone
    for k, axis in ((1, 0), (0, 1), (2, 2)):
        pose = np.zeros(3)
        pose[k] = 20.0
        rot = openface_rotation(pose)
        assert abs(abs(rot[axis]) - np.deg2rad(20)) < 1e-9 and np.abs(np.delete(rot, axis)).max() < 1e-9


def test_camera_space_millimetres_from_a_synthetic_view():
    """A face of known size placed at a known camera position, seen through OpenFace's default camera: the CSV's
    translation and 3D points come back in millimetres."""
    from engine.export.openface import model_landmarks_mm

    cam = Camera.for_image(1280, 720)
    t_true = np.array([60.0, -25.0, 600.0])
    r_true = openface_euler_to_rotation(np.deg2rad([10.0, -30.0, 5.0]))
    pts_cam = model_landmarks_mm() @ r_true.T + t_true                     # mm, x right, y down, z away
    u = cam.fx * pts_cam[:, 0] / pts_cam[:, 2] + cam.cx
    v = cam.fy * pts_cam[:, 1] / pts_cam[:, 2] + cam.cy
    s = cam.fx / t_true[2]
    z_px = -(pts_cam[:, 2] - t_true[2]) * s                                 # pixel frame: z toward the camera
    g = openface_geometry(np.stack([u, v, z_px], 1), np.zeros(3), cam)
    assert np.allclose(g.pose_t, t_true, rtol=0.02), g.pose_t
    assert abs(g.p_scale - s) / s < 0.03
    # p_r* are weak-perspective (as OpenFace's): an off-axis face looks turned by up to its viewing angle,
    # atan(60 / 600) = 0.1 rad here
    assert np.allclose(g.p_r, np.deg2rad([10.0, -30.0, 5.0]), atol=0.1)
    assert np.allclose(g.points_mm, pts_cam, atol=3.0)                       # mm, against a 100+ mm face
    assert np.allclose(g.p_t, [u.mean(), v.mean()], atol=1e-6)


def test_csv_reads_as_openface(image_run):
    folder, out, frames = image_run
    d, landmarks, poses = read_openface_like_pyfeat(out / "annotations.csv")
    doc = json.loads((out / "annotations.json").read_text())
    faces = [(fr["name"], f) for fr in doc["frames"] for f in fr["faces"]]
    ok = d[d["success"] == 1]
    assert len(ok) == len(faces) >= len(IMAGES) + 1
    for (name, face), (i, row) in zip(faces, ok.iterrows()):
        assert row["file"] == name and row["method"] == METHOD and row["timestamp"] == 0
        lm = np.array(face["landmarks"])
        assert np.allclose(landmarks.loc[i].to_numpy().reshape(2, 68).T, lm[:, :2], atol=1e-3)
        pose = [face["pose"][k] for k in ("yaw_deg", "pitch_deg", "roll_deg")]
        assert np.allclose(poses.loc[i].to_numpy(float), openface_rotation(pose), atol=1e-4)
        assert np.isclose(row["confidence"], face["confidence"], atol=1e-3) and 0 < row["confidence"] <= 1
        xyz = np.stack([row[[f"{a}_{k}" for k in range(68)]].to_numpy(float) for a in "XYZ"], 1)
        assert (xyz[:, 2] > 0).all() and row["pose_Tz"] > 0                     # in front of the camera
        assert np.allclose(xyz.mean(0), row[["pose_Tx", "pose_Ty", "pose_Tz"]].to_numpy(float), atol=15)
        eyes = np.linalg.norm(xyz[36] - xyz[45])
        assert 60 < eyes < 115, eyes                                             # outer eye corners, mm
        # the similarity's rotation (p_r*) and the method's pose (pose_R*) describe one head
        assert np.abs(row[["p_rx", "p_ry", "p_rz"]].to_numpy(float) - poses.loc[i].to_numpy(float)).max() < 0.35
    assert len(set(ok["confidence"])) > 1, "confidence must vary between faces"
    miss = d[d["success"] == 0]
    assert list(miss["file"]) == ["zz_noface.png"] and (miss["confidence"] == 0).all()
    assert miss[["x_0", "X_0", "pose_Tz", "p_scale"]].isna().all().all()


def test_csv_intrinsics_move_the_camera(image_run, tmp_path):
    from engine.export.annotate import annotate

    folder, out, _ = image_run
    annotate(str(folder), [METHOD], tmp_path, ["csv"], camera={"fx": 2000.0})
    d0, _, _ = read_openface_like_pyfeat(out / "annotations.csv")
    d1, _, _ = read_openface_like_pyfeat(tmp_path / "annotations.csv")
    ok = d0["success"] == 1
    fx0 = Camera.for_image(450, 450).fx
    # about five times the focal length: the same image from about five times as far. The depth is OpenFace's
    # weak-perspective one (fx / p_scale) up to the perspective fit of the face's own depth
    for d, fx in ((d0, fx0), (d1, 2000.0)):
        assert np.allclose(d.loc[ok, "pose_Tz"], fx / d.loc[ok, "p_scale"], rtol=0.1)
    assert np.allclose(d1.loc[ok, "pose_Tz"] / d0.loc[ok, "pose_Tz"], 2000.0 / fx0, rtol=0.06)
    assert np.allclose(d1.loc[ok, "p_scale"], d0.loc[ok, "p_scale"], rtol=1e-3)   # the image did not change


def test_json_validates_against_the_schema(image_run):
    jsonschema = pytest.importorskip("jsonschema")
    _, out, _ = image_run
    schema = json.loads((PROJECT_ROOT / "docs" / "annotation.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = json.loads((out / "annotations.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["format_version"] == 2 and doc["units"]["pose"] == "degrees"
    assert doc["metadata"]["version"] == version("facealign-studio")
    broken = json.loads(json.dumps(doc))
    broken["frames"][0]["faces"][0]["pose"]["yaw_deg"] = "10 degrees"   # a number, not text
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_pts_are_named_after_the_images_so_menpo_pairs_them(image_run, tmp_path):
    folder, out, frames = image_run
    pts_dir = out / "pts" / METHOD
    assert sorted(p.name for p in pts_dir.glob("*.pts")) == ["image00002.pts", "image00006.pts",
                                                             "image00006_1.pts", "image00014.pts"]
    menpo_io = pytest.importorskip("menpo.io")
    pair = tmp_path / "pair"
    pair.mkdir()
    for name in IMAGES:
        shutil.copy(folder / name, pair / name)
        shutil.copy(pts_dir / f"{name[:-4]}.pts", pair / f"{name[:-4]}.pts")
    images = list(menpo_io.import_images(pair, verbose=False))
    assert len(images) == len(IMAGES)
    by_name = {f.name: f for f in frames}
    for img in images:
        assert "PTS" in img.landmarks.keys(), img.path
        frame = by_name[img.path.name]
        # menpo keeps (y, x), 0-based: the first face of the image
        got = img.landmarks["PTS"].points[:, ::-1]
        assert np.allclose(got, frame.faces[0].results[METHOD].landmarks[:, :2], atol=1e-3)


def test_obj_loads_textured_and_consistently_wound(image_run):
    trimesh = pytest.importorskip("trimesh")
    from engine.export.obj_export import inconsistent_edges, orient_triangles
    from engine.facemodel import load_face_model

    _, out, frames = image_run
    tris = load_face_model().triangles
    assert inconsistent_edges(tris) == 50                 # the face model's list as shipped
    r = frames[0].faces[0].results[METHOD]
    assert inconsistent_edges(orient_triangles(r.mesh, tris)) == 0
    path = out / "obj" / METHOD / "image00002.obj"
    assert path.read_text().startswith("mtllib image00002.mtl")
    mesh = trimesh.load(path, process=False)
    assert mesh.visual.kind == "texture"
    assert mesh.visual.uv.shape == (468, 2) and (mesh.visual.uv >= 0).all() and (mesh.visual.uv <= 1).all()
    tex = np.asarray(mesh.visual.material.image.convert("RGB"))
    assert tex.shape[0] > 50 and tex.shape[1] > 50
    assert mesh.is_winding_consistent
    # outward normals: the nose tip's triangles face forward from the head (+z of the head frame; the .obj's frame
    # is the camera's y-up one, so the head's own axes are R^T of it), whatever way the head is turned
    nose = np.argmin(np.linalg.norm(r.mesh - r.landmarks[30], axis=1))
    near = np.flatnonzero((mesh.faces == nose).any(1))
    assert ((mesh.face_normals[near] @ r.rotation)[:, 2] > 0).all()
    # a texel under a vertex is the frame's pixel there (projective texture)
    img = frames[0].image
    k = nose
    h, w = tex.shape[:2]
    tu, tv = mesh.visual.uv[k]
    texel = tex[int(round((1 - tv) * h - 0.5)), int(round(tu * w - 0.5))]
    x, y = np.round(r.mesh[k, :2]).astype(int)
    assert np.abs(texel.astype(int) - img[y, x, ::-1].astype(int)).max() <= 2


def make_clip(src, out, container: str, audio: str) -> None:
    """8 frames of the shared video (MPEG-4 Part 2) with a 440 Hz tone in codec ``audio``, mono."""
    av = pytest.importorskip("av")
    cap = cv2.VideoCapture(str(src))
    c = av.open(str(out), "w", format=container)
    v = c.add_stream("mpeg4", rate=25)
    v.width, v.height, v.pix_fmt = 640, 360, "yuv420p"
    rate = 44100 if audio == "aac" else 22050
    a = c.add_stream(audio, rate=rate, layout="mono")
    for i in range(8):
        ok, f = cap.read()
        vf = av.VideoFrame.from_ndarray(cv2.resize(f, (640, 360)), format="bgr24")
        vf.pts, vf.time_base = i, Fraction(1, 25)
        for p in v.encode(vf):
            c.mux(p)
    tone = np.sin(2 * np.pi * 440 * np.arange(rate * 8 // 25) / rate)
    af = (av.AudioFrame.from_ndarray((0.3 * tone).astype(np.float32)[None], format="fltp", layout="mono")
          if audio == "aac" else
          av.AudioFrame.from_ndarray((3000 * tone).astype(np.int16)[None], format="s16", layout="mono"))
    af.sample_rate, af.pts = rate, 0
    for p in a.encode(af):
        c.mux(p)
    for s in (v, a):
        for p in s.encode(None):
            c.mux(p)
    c.close()


@pytest.fixture(scope="module")
def clip_with_audio(tmp_path_factory, dev_dir):
    """An MP4 with AAC audio (copied as it is) and a Matroska file with PCM audio (which MP4 cannot hold)."""
    src = dev_dir.parent / "video" / "obama.mp4"
    if not src.exists():
        pytest.skip(f"{src} missing")
    root = tmp_path_factory.mktemp("clip")
    make_clip(src, root / "clip.mp4", "mp4", "aac")
    make_clip(src, root / "clip_pcm.mkv", "matroska", "pcm_s16le")
    return root / "clip.mp4"


@pytest.mark.parametrize("name", ["clip.mp4", "clip_pcm.mkv"])
def test_video_is_h264_with_the_sources_audio(clip_with_audio, tmp_path, name):
    av = pytest.importorskip("av")
    from engine.export.annotate import annotate
    from engine.export.writers import h264_encoder

    if h264_encoder() is None:
        pytest.skip("this PyAV build has no H.264 encoder (the writer falls back to mp4v)")
    annotate(str(clip_with_audio.parent / name), ["mediapipe"], tmp_path, ["video"])   # PCM: re-encoded to AAC
    with av.open(str(tmp_path / "overlay.mp4")) as c:
        kinds = {s.type: s.codec_context.name for s in c.streams}
        assert kinds == {"video": "h264", "audio": "aac"}
        assert sum(1 for _ in c.decode(video=0)) == 8
    with av.open(str(tmp_path / "overlay.mp4")) as c:
        assert sum(f.samples for f in c.decode(audio=0)) >= 0.9 * 8 / 25 * c.streams.audio[0].rate
    ffprobe = shutil.which("ffprobe")
    if ffprobe:
        probe = json.loads(subprocess.run([ffprobe, "-v", "error", "-show_streams", "-of", "json",
                                           str(tmp_path / "overlay.mp4")], capture_output=True, text=True,
                                          check=True).stdout)
        assert {s["codec_name"] for s in probe["streams"]} == {"h264", "aac"}


def test_one_package_version():
    from engine.version import package_version

    assert package_version() == version("facealign-studio")
    for f in ("engine/export/annotate.py", "engine/export/writers.py"):
        assert "0.1.0" not in (PROJECT_ROOT / f).read_text()


def test_bad_intrinsics_get_a_clear_error(tmp_path):
    from engine.export.annotate import annotate

    with pytest.raises(ValueError, match="positive"):
        annotate("nowhere.mp4", ["mediapipe"], tmp_path, ["csv"], camera={"fx": 0.0})


def test_euler_of_engine_pose_matches_its_matrix():
    """pose_R* are the engine's rotation, only re-expressed: rebuilding both matrices gives one rotation."""
    pose = np.array([35.0, -12.0, 8.0])
    flip = np.diag([1.0, -1.0, -1.0])
    assert np.allclose(openface_euler_to_rotation(openface_rotation(pose)), flip @ euler_to_matrix(*pose) @ flip)


def test_video_falls_back_to_mp4v_without_h264(clip_with_audio, tmp_path, monkeypatch):
    import engine.export.writers as writers
    from engine.export.annotate import annotate

    monkeypatch.setattr(writers, "h264_encoder", lambda: None)
    annotate(str(clip_with_audio), ["mediapipe"], tmp_path, ["video"])
    av = pytest.importorskip("av")
    with av.open(str(tmp_path / "overlay.mp4")) as c:
        assert [(s.type, s.codec_context.name) for s in c.streams] == [("video", "mpeg4")]   # mp4v, no audio
        assert sum(1 for _ in c.decode(video=0)) == 8


def test_collapsed_landmarks_keep_their_row():
    """A face whose 68 points collapse to one has no scale: its row keeps the pixels and leaves the mm empty."""
    from engine.export.writers import csv_columns, face_row
    from engine.pipeline import FrameResult
    from engine.result import AlignmentResult

    r = AlignmentResult(landmarks=np.full((68, 3), 5.0), visible=np.ones(68, bool), mesh=np.zeros((468, 3)),
                        pose=np.zeros(3), confidence=0.5)
    frame = FrameResult(0, 0.0, np.zeros((48, 64, 3), np.uint8), [], name="a.png")
    row = dict(zip(csv_columns(), face_row(frame, 0, "m", r, Camera.for_image(64, 48), True)))
    assert len(row) == len(csv_columns()) and row["x_0"] == "5.000" and row["X_0"] == "" and row["pose_Tz"] == ""
    assert row["success"] == 1 and float(row["pose_Rx"]) == 0.0 and row["file"] == "a.png"
