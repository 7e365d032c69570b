"""Head pose: the one convention (engine/geometry/head_pose.py), the FSA-Net/SynergyNet protocol in `eval`, and a
known rotation through the CSV and JSON writers and back."""
import csv
import json

import cv2
import numpy as np
import pytest
import scipy.io as sio

from engine.geometry.head_pose import (
    POSE_SOURCES, csv_pose_radians, euler_from_rotation, procrustes_rotations, protocol_angles, protocol_keep,
    protocol_mae, quaternion_from_rotation, rotation_from_csv_radians, rotation_from_euler, rotation_from_pose_para,
    rotation_from_quaternion, rotation_from_record)
from engine.methods.base import Method, MethodInfo
from engine.result import AlignmentResult

# (yaw, pitch, roll) degrees: frontal, moderate, large yaw, large everything, beyond 90 in pitch
EULERS = [(0, 0, 0), (20, -10, 5), (-75, 15, -8), (60, -40, 35), (-30, 120, -150)]


def random_rotations(n: int, seed: int = 0) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return np.stack([rotation_from_quaternion(v) for v in q])


def test_euler_round_trip_and_axes():
    for e in EULERS:
        r = rotation_from_euler(*e)
        assert np.allclose(r @ r.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(r), 1.0)
        assert np.allclose(rotation_from_euler(*euler_from_rotation(r)), r, atol=1e-10)
    nose = np.array([0.0, 0.0, 1.0])   # the head's +z, out of the face, in y-up axes
    assert (rotation_from_euler(30, 0, 0) @ nose)[0] < 0      # yaw > 0: nose toward the image's left
    assert (rotation_from_euler(0, 30, 0) @ nose)[1] < 0      # pitch > 0: nose down (y up)
    right = np.array([1.0, 0.0, 0.0])
    assert (rotation_from_euler(0, 0, 30) @ right)[1] > 0     # roll > 0: counter-clockwise on screen


def test_quaternion_matches_scipy_and_round_trips():
    from scipy.spatial.transform import Rotation

    for r in list(random_rotations(50)) + [rotation_from_euler(*e) for e in EULERS] + [np.diag([1.0, -1, -1])]:
        q = quaternion_from_rotation(r)
        assert q[3] >= 0 and np.isclose(np.linalg.norm(q), 1.0)
        want = Rotation.from_matrix(r).as_quat()   # (x, y, z, w)
        assert np.allclose(q, want, atol=1e-9) or np.allclose(q, -want, atol=1e-9)
        assert np.allclose(rotation_from_quaternion(q), r, atol=1e-9)


def test_protocol_recovers_a_pose_para_label():
    """A prediction whose rotation is the one Pose_Para builds scores (near) zero under the protocol; the same
    rotation compared the way eval used to (our Euler angles against (yaw, -pitch, -roll) of Pose_Para) does not."""
    rng = np.random.default_rng(1)
    labels = np.column_stack([rng.uniform(-40, 40, 200), rng.uniform(-90, 90, 200), rng.uniform(-40, 40, 200)])
    rots = np.stack([rotation_from_pose_para(*np.deg2rad(p)) for p in labels])
    got = protocol_angles(rots)
    assert np.allclose(got[:, [0, 2]], labels[:, [0, 2]], atol=1e-9)   # pitch and roll exactly
    mae = protocol_mae(rots, labels)
    assert mae["pitch"] < 1e-9 and mae["roll"] < 1e-9 and mae["n"] == 200
    # yaw: the protocol's asin(R[2, 0]) of X(p) Y(y) Z(r) is cos p cos r sin y + sin p sin r, Pose_Para's yaw only
    # up to the rotation order (SynergyNet's decomposition, kept as the field runs it): exact at zero pitch and roll
    want_yaw = np.rad2deg(np.arcsin(np.clip(rots[:, 2, 0], -1, 1)))
    assert np.allclose(got[:, 1], want_yaw)
    assert np.abs(got[:, 1] - labels[:, 1]).max() > 1.0
    small = labels * np.array([0.1, 1.0, 0.1])          # pitch and roll within 4 degrees
    small_rots = np.stack([rotation_from_pose_para(*np.deg2rad(p)) for p in small])
    assert protocol_mae(small_rots, small)["yaw"] < 0.3
    flat = small * np.array([0.0, 1.0, 0.0])            # yaw alone: exact too
    assert protocol_mae(np.stack([rotation_from_pose_para(*np.deg2rad(p)) for p in flat]), flat)["yaw"] < 1e-9
    # the comparison eval used before (our Euler angles against (yaw, -pitch, -roll) of Pose_Para) is not the same
    ours = np.stack([euler_from_rotation(r) for r in rots])
    old = np.abs(ours - labels[:, [1, 0, 2]] * np.array([1, -1, -1])).mean(0)
    assert old[1] > 1.0 and old[2] > 1.0


def test_protocol_filter_and_missing_faces():
    labels = np.array([[10.0, 20.0, 5.0], [0.0, 120.0, 0.0], [-100.0, 0.0, 0.0], [5.0, -30.0, 2.0], [np.nan] * 3])
    keep = protocol_keep(labels)
    assert keep.tolist() == [True, False, False, True, False]
    rots = np.stack([rotation_from_pose_para(*np.deg2rad(np.nan_to_num(p))) for p in labels])
    rots[3] = np.nan   # the method found no face there
    mae = protocol_mae(rots, labels)
    assert mae["n"] == 1 and mae["n_missing"] == 1 and mae["pitch"] < 1e-9
    off = rots.copy()
    off[0] = rotation_from_pose_para(*np.deg2rad([13.0, 20.0, 5.0]))   # 3 degrees of pitch off
    assert np.isclose(protocol_mae(off, labels)["pitch"], 3.0)


class _PoseOracle(Method):
    """Returns, for the i-th crop it sees, the rotation Pose_Para of image i builds (plus a known offset)."""

    def __init__(self, rotations: list[np.ndarray]) -> None:
        self.rotations = rotations
        self.i = 0

    def align(self, crop_bgr: np.ndarray) -> AlignmentResult:
        r = self.rotations[self.i]
        self.i += 1
        return AlignmentResult(landmarks=np.full((68, 3), 60.0), visible=np.ones(68, bool),
                               mesh=np.full((468, 3), 60.0), pose=euler_from_rotation(r), method="oracle")


MethodInfo("pose-oracle", "test double", _PoseOracle, weights="none")


def test_eval_scores_pose_under_the_protocol(tmp_path):
    """`eval` end to end on a synthetic AFLW2000-3D-style folder: Pose_Para in its .mat files, a method whose
    rotation is Pose_Para's own rotation with 2 degrees more roll."""
    from engine.evaluation.protocol import evaluate

    rng = np.random.default_rng(2)
    (tmp_path / "images").mkdir()
    paras = [np.deg2rad([12.0, -35.0, 4.0]), np.deg2rad([-20.0, 70.0, -10.0]), np.deg2rad([5.0, 150.0, 0.0])]
    rots = []
    for i, pp in enumerate(paras):
        cv2.imwrite(str(tmp_path / "images" / f"image{i:05d}.jpg"), rng.integers(0, 255, (200, 200, 3), np.uint8))
        pts = np.vstack([rng.uniform(60, 140, (2, 68)), rng.uniform(-20, 20, (1, 68))])
        sio.savemat(str(tmp_path / "images" / f"image{i:05d}.mat"),
                    {"pt3d_68": pts, "Pose_Para": np.concatenate([pp, [0, 0, 0, 1]])[None]})
        rots.append(rotation_from_pose_para(pp[0], pp[1], pp[2] + np.deg2rad(2.0)))
    res = evaluate(_PoseOracle(rots), tmp_path, mode="protocol")
    pm = res["pose_mae"]
    assert pm["n"] == 2   # the third has |yaw| 150 > 99: left out as FSA-Net does
    assert np.isclose(pm["roll"], 2.0, atol=1e-6) and pm["pitch"] < 1e-6
    assert np.isclose(pm["mean"], (pm["yaw"] + pm["pitch"] + pm["roll"]) / 3)


def _frame_with(rotation: np.ndarray):
    from engine.pipeline import FaceResult, FrameResult

    r = AlignmentResult(landmarks=np.zeros((68, 3)), visible=np.ones(68, bool), mesh=np.zeros((468, 3)),
                        pose=euler_from_rotation(rotation), method="m")
    return FrameResult(index=3, timestamp=0.12, image=np.zeros((8, 8, 3), np.uint8),
                       faces=[FaceResult(face_id=0, box=np.array([0.0, 0, 8, 8]), results={"m": r})])


@pytest.mark.parametrize("k", range(6))
def test_rotation_round_trips_through_csv_and_json(tmp_path, k):
    from engine.export.writers import CsvWriter, JsonWriter

    rot = (random_rotations(5, seed=7)[k] if k < 5 else rotation_from_euler(-70, 25, -15))
    frame = _frame_with(rot)
    assert np.allclose(frame.faces[0].results["m"].rotation, rot, atol=1e-10)
    cw, jw = CsvWriter(tmp_path / "out.csv"), JsonWriter(tmp_path / "out.json", {})
    cw.add(frame)
    jw.add(frame)
    cw.close()
    jw.close()
    row = next(csv.DictReader(open(tmp_path / "out.csv", encoding="utf-8")))
    back = rotation_from_csv_radians(float(row["pose_Rx"]), float(row["pose_Ry"]), float(row["pose_Rz"]))
    assert np.allclose(back, rot, atol=1e-4)   # 5 decimals of radians
    assert np.allclose([float(row["pose_Rx"]), float(row["pose_Ry"]), float(row["pose_Rz"])],
                       csv_pose_radians(rot), atol=1e-5)
    doc = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert "camera-from-head" in doc["metadata"]["pose_convention"]
    rec = doc["frames"][0]["faces"][0]["pose"]
    assert np.allclose(rotation_from_record(rec), rot, atol=2e-6)
    assert np.allclose(rotation_from_quaternion(rec["quaternion_xyzw"]), rot, atol=2e-6)
    assert np.allclose(rotation_from_euler(rec["yaw_deg"], rec["pitch_deg"], rec["roll_deg"]), rot, atol=1e-5)


def test_procrustes_recovers_a_rotation():
    from engine.facemodel import load_face_model
    from engine.geometry.projection import model_to_crop

    try:
        fm = load_face_model()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    for r in random_rotations(4, seed=3):
        pts = model_to_crop(1.7 * fm.mean.astype(np.float64) @ r.T + np.array([60.0, 60.0, 0.0]))
        for src in POSE_SOURCES[1:]:
            assert np.allclose(procrustes_rotations(fm.mean, pts[None], src)[0], r, atol=1e-6)


def test_pose_output_applies_the_training_choice_and_refuses_stale_weights(tmp_path):
    from engine.methods.pose_output import PoseOutput, file_sha256, fit_correction

    rng = np.random.default_rng(5)
    weights = tmp_path / "m.onnx"
    weights.write_bytes(b"weights")
    truth = random_rotations(40, seed=11)
    c = rotation_from_euler(2.0, -3.0, 1.0)
    network = truth @ c.T                       # the network's rotations sit a fixed C^T off the truth
    assert np.allclose(fit_correction(network, truth), c, atol=1e-9)
    mean = rng.normal(size=(536, 3))
    cal = {"m": {"weights_sha256": file_sha256(weights), "chosen_on_train": "network+correction",
                 "corrections": {"network": c.tolist()}}}
    out = PoseOutput("m", "network", weights, mean, calibrations=cal)
    assert np.allclose(out.rotations(np.zeros((40, 536, 3)), network), truth, atol=1e-9)
    # the training split chose the raw rotation: no correction
    raw = PoseOutput("m", "network", weights, mean, calibrations={"m": {**cal["m"], "chosen_on_train": "network"}})
    assert np.allclose(raw.rotations(np.zeros((40, 536, 3)), network), network)
    # other weights than the correction was fitted on: raw rotation and a warning, never a stale correction
    weights.write_bytes(b"retrained")
    with pytest.warns(UserWarning, match="other weights"):
        stale = PoseOutput("m", "network", weights, mean, calibrations=cal)
    assert stale.correction is None
    with pytest.raises(ValueError):
        PoseOutput("m", "nose", weights, mean, calibrations={})


def test_declared_pose_sources_match_the_training_choice():
    """Each method's MethodInfo.pose_source is the source pose-study chose on aflw_train, and that study ran on
    the weights in weights/ now."""
    from engine.methods.base import registry
    from engine.methods.pose_output import file_sha256, read_calibrations

    cal = read_calibrations()
    if not cal:
        pytest.skip("weights/pose_calibration.json missing (python main.py pose-study --method NAME --write)")
    for name, info in registry().items():
        if name not in cal or not info.available:
            continue
        assert cal[name]["chosen_on_train"].split("+")[0] == info.pose_source, name
        assert cal[name]["weights_sha256"] == file_sha256(info.weights_path), f"{name}: re-run pose-study --write"


@pytest.mark.parametrize("name", ["mtcnn3d", "prnet", "mediapipe"])
def test_a_method_reports_its_declared_source(name, dev_dir):
    """The rotation a method returns is its declared source's (plus the training-fitted correction where chosen),
    computed from the same result's points and its network's own rotation."""
    from engine.evaluation.aflw2000 import load_protocol_crops, load_set
    from engine.methods.base import registry
    from engine.methods.factory import create

    if not registry()[name].available:
        pytest.skip(f"weights/{registry()[name].weights} missing")
    ds = load_set(dev_dir)
    near_frontal = np.nonzero(np.abs(ds.yaw) < 20)[0][:3]   # faces Face Mesh finds too
    ds.names = [ds.names[i] for i in near_frontal]
    ds.roi_box = ds.roi_box[near_frontal]
    crops = load_protocol_crops(ds)
    m = create(name)
    try:
        shipped = [m.align(c) for c in crops]
        out = m.pose_output
        m.pose_output = None
        raw = [m.align(c) for c in crops]
    finally:
        m.close()
    assert out.source == registry()[name].pose_source
    for s, r in zip(shipped, raw):
        pts = np.concatenate([r.mesh, r.landmarks])[None]
        want = out.rotations(pts, r.rotation[None])[0]
        assert np.allclose(s.rotation, want, atol=1e-9)
        assert np.allclose(s.landmarks, r.landmarks)


@pytest.mark.parametrize("k", range(3))
def test_one_rotation_through_stream_and_api(k):
    """The rotation a method reports reaches an OSC receiver (/facealign/pose, degrees) and the library's ``Face``
    unchanged: a known rotation sent through both and rebuilt with this module's helpers."""
    from engine.aligner import faces_of
    from engine.stream import OscStreamer
    from tests.stream.test_stream import Receiver

    rot = random_rotations(3, seed=11)[k]
    frame = _frame_with(rot)
    face = faces_of(frame, "m")[0]
    assert np.allclose(rotation_from_euler(*face.pose), rot, atol=1e-10)
    assert np.allclose(face.result.rotation, rot, atol=1e-10)
    rx = Receiver()
    try:
        streamer = OscStreamer("127.0.0.1", rx.port)
        streamer.send_frame(frame, "m")
        rx.wait_for(4)
        streamer.close()
    finally:
        rx.stop()
    pose = next(args for address, args in rx.messages if address == "/facealign/pose")
    assert pose[:2] == (3, 0)
    # OSC floats are 32-bit: about 1e-5 degrees
    assert np.allclose(rotation_from_euler(*pose[2:5]), rot, atol=1e-6)
