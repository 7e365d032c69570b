"""Live OSC / VMC stream: the address space through a real python-osc receiver, the VMC blend values and head
rotation, a receiver that is absent or killed, and ``main.py stream`` on the test clip against ``annotate``."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer

from engine.facemodel import load_face_model
from engine.geometry.rotation import euler_to_matrix
from engine.paths import PROJECT_ROOT
from engine.pipeline import FaceResult, FrameResult
from engine.result import AlignmentResult
from engine.stream import OscStreamer, parse_target
from engine.stream.messages import face_translation
from engine.stream.vmc import LEFT_EYE, RIGHT_EYE, blend_values, pose_to_vmc_quaternion
from tests.support.annotated_clip import METHOD, annotated_clip, clip_path


class Receiver:
    """A python-osc UDP server on 127.0.0.1 (a free port) recording (address, args) in arrival order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, tuple]] = []
        d = Dispatcher()
        d.set_default_handler(lambda address, *args: self.messages.append((address, args)))
        self.server = BlockingOSCUDPServer(("127.0.0.1", 0), d)
        self.server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def wait_for(self, n: int, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < end:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    """A UDP port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mean_face_result(pose=(0.0, 0.0, 0.0), shift=(0.0, 0.0)) -> AlignmentResult:
    """The face model's mean shape as a result in image pixels (y down), every point visible."""
    fm = load_face_model()
    pts = fm.mean.astype(np.float64) * np.array([1.0, -1.0, 1.0])
    pts = pts / np.ptp(pts[:, 0]) * 200 + np.array([320.0 + shift[0], 240.0 + shift[1], 0.0])
    return AlignmentResult(landmarks=pts[468:].copy(), visible=np.ones(68, bool), mesh=pts[:468].copy(),
                           pose=np.asarray(pose, np.float64), method="synthetic", frame="image")


def synthetic_frame(index: int, n_faces: int = 2) -> FrameResult:
    faces = [FaceResult(k, np.array([0.0, 0.0, 100.0, 100.0]),
                        {"synthetic": mean_face_result((10.0 * k, -5.0, 2.0), (150.0 * k, 0.0))})
             for k in range(n_faces)]
    return FrameResult(index, index / 25.0, np.zeros((480, 640, 3), np.uint8), faces)


def test_parse_target():
    assert parse_target("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_target("[::1]:39539") == ("::1", 39539)
    for bad in ("127.0.0.1", ":9000", "host:0", "host:70000", "host:port"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_target(bad)


def test_address_space_through_a_python_osc_receiver():
    rx = Receiver()
    try:
        st = OscStreamer("127.0.0.1", rx.port)
        res = synthetic_frame(7)
        st.send_frame(res, "synthetic")
        rx.wait_for(1 + 3 * 2)
        st.close()
    finally:
        rx.stop()
    assert [a for a, _ in rx.messages] == ["/facealign/frame"] + ["/facealign/landmarks", "/facealign/visible",
                                                                  "/facealign/pose"] * 2
    assert rx.messages[0][1][0] == 7 and rx.messages[0][1][2] == 2
    for k in range(2):
        r = res.faces[k].results["synthetic"]
        lm_args, vis_args, pose_args = (rx.messages[1 + 3 * k + j][1] for j in range(3))
        assert lm_args[:2] == (7, k) and vis_args[:2] == (7, k) and pose_args[:2] == (7, k)
        assert all(isinstance(v, float) for v in lm_args[2:]) and len(lm_args) == 2 + 136
        np.testing.assert_allclose(np.reshape(lm_args[2:], (68, 2)), r.landmarks[:, :2], atol=1e-3)
        assert vis_args[2:] == tuple([1] * 68)
        np.testing.assert_allclose(pose_args[2:5], r.pose, atol=1e-4)
        h, w = res.image.shape[:2]
        np.testing.assert_allclose(pose_args[5:], face_translation(r, (w, h)), atol=1e-3)
        assert pose_args[7] > 0  # millimetres in front of the camera
    assert st.sent == 7 and st.dropped == 0


def test_mean_face_has_open_eyes_and_a_closed_mouth():
    v = blend_values(mean_face_result())
    assert v == {"Blink_R": 0.0, "Blink_L": 0.0, "A": pytest.approx(0.0, abs=0.01)}


def shut(r: AlignmentResult, eye: tuple[int, ...]) -> AlignmentResult:
    """The same face with one eye's upper lid lowered onto its lower lid."""
    lm = r.landmarks.copy()
    lm[eye[1]], lm[eye[2]] = lm[eye[5]], lm[eye[4]]
    r.landmarks = lm
    return r


def test_a_shut_visible_eye_blinks_and_a_hidden_eye_never_does():
    r = shut(mean_face_result(), RIGHT_EYE)
    assert blend_values(r)["Blink_R"] == 1.0 and blend_values(r)["Blink_L"] == 0.0
    r.visible[list(RIGHT_EYE)] = False   # the same collapsed lids, but the eye is turned away: a guess, not a blink
    assert blend_values(r)["Blink_R"] == 0.0
    both = shut(shut(mean_face_result(), RIGHT_EYE), LEFT_EYE)
    both.visible[list(LEFT_EYE)] = False  # a hidden eye follows the visible one: both blink together
    assert blend_values(both) == pytest.approx({"Blink_R": 1.0, "Blink_L": 1.0, "A": blend_values(both)["A"]})
    both.visible[list(RIGHT_EYE)] = False
    assert blend_values(both)["Blink_R"] == 0.0 and blend_values(both)["Blink_L"] == 0.0


def test_mouth_open_rises_with_the_lip_gap():
    r = mean_face_result()
    lm = r.landmarks.copy()
    width = np.linalg.norm(lm[48] - lm[54])
    lm[[65, 66, 67], 1] += 0.3 * width   # lower inner lip down by 30 % of the mouth width
    r.landmarks = lm
    assert 0.4 < blend_values(r)["A"] < 0.8


@pytest.mark.parametrize("pose", [(0, 0, 0), (30, 0, 0), (0, -20, 0), (0, 0, 15), (-40, 10, -5)])
def test_vmc_quaternion_is_the_pose_rotation_in_unity_axes(pose):
    q = pose_to_vmc_quaternion(np.array(pose, float))
    assert np.linalg.norm(q) == pytest.approx(1.0)
    x, y, z, w = q
    rq = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                   [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                   [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    flip = np.diag([1.0, 1.0, -1.0])
    np.testing.assert_allclose(rq, flip @ euler_to_matrix(*pose) @ flip, atol=1e-9)
    if pose == (30, 0, 0):  # a pure yaw turns about the vertical axis only
        assert abs(x) < 1e-12 and abs(z) < 1e-12 and 2 * np.degrees(np.arccos(abs(w))) == pytest.approx(30)


def test_an_absent_receiver_never_blocks_or_raises():
    st = OscStreamer("127.0.0.1", free_port(), vmc=True)
    frame = synthetic_frame(0, n_faces=4)
    t0 = time.perf_counter()
    for i in range(300):
        frame.index = i
        st.send_frame(frame, "synthetic")
    elapsed = time.perf_counter() - t0
    st.close()
    assert st.frames == 300
    assert st.dropped > 0 and "ConnectionRefused" in st.last_error  # Linux reports the loopback's ICMP refusals
    assert elapsed < 10.0, f"300 frames took {elapsed:.1f} s with nobody listening"


def test_killing_the_receiver_mid_stream_changes_nothing_for_the_sender():
    rx = Receiver()
    st = OscStreamer("127.0.0.1", rx.port, vmc=True)
    for i in range(20):
        st.send_frame(synthetic_frame(i), "synthetic")
    rx.wait_for(20 * 12)
    got = [a[0] for addr, a in rx.messages if addr == "/facealign/frame"]
    rx.stop()
    for i in range(20, 60):   # nobody listens any more
        st.send_frame(synthetic_frame(i), "synthetic")
    st.close()
    assert got == list(range(20))
    assert st.frames == 60 and st.dropped > 0


def test_a_closed_stream_is_not_reopened_by_a_frame_in_flight():
    rx = Receiver()
    try:
        st = OscStreamer("127.0.0.1", rx.port)
        st.send_frame(synthetic_frame(0), "synthetic")
        st.close()   # the app's toggle switched off while the worker still holds this streamer
        st.send_frame(synthetic_frame(1), "synthetic")
        rx.wait_for(7)
        time.sleep(0.2)
    finally:
        rx.stop()
    assert [a[0] for addr, a in rx.messages if addr == "/facealign/frame"] == [0]
    assert st._sock is None and st.dropped == 7 and "closed" in st.last_error


def test_stream_command_sends_every_frame_of_the_clip_equal_to_annotate(tmp_path_factory):
    src = clip_path()
    ref = annotated_clip(tmp_path_factory.mktemp("ref"))
    rx = Receiver()
    try:
        r = subprocess.run([sys.executable, "main.py", "stream", str(src), "--method", METHOD, "--osc",
                            f"127.0.0.1:{rx.port}", "--vmc"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr
        rx.wait_for(len(ref) * 9 + 55)
    finally:
        rx.stop()
    frames = [a[0] for addr, a in rx.messages if addr == "/facealign/frame"]
    assert frames == sorted({f for f, _ in ref}) == list(range(55))
    got = {}
    for addr, a in rx.messages:
        if addr.startswith("/facealign/") and addr != "/facealign/frame":
            got.setdefault((a[0], a[1]), {})[addr.rsplit("/", 1)[1]] = a[2:]
    assert set(got) == set(ref)
    for key, want in ref.items():
        np.testing.assert_allclose(np.reshape(got[key]["landmarks"], (68, 2)), want["xy"], atol=0.01,
                                   err_msg=f"frame {key[0]} face {key[1]}")
        np.testing.assert_array_equal(got[key]["visible"], want["visible"])
        np.testing.assert_allclose(got[key]["pose"][:3], want["pose"], atol=5e-3)  # the CSV: 5 decimals of radians
        np.testing.assert_allclose(got[key]["pose"][3:], want["T"], atol=0.051)  # the CSV writes 0.1 mm
    heads = [a for addr, a in rx.messages if addr == "/VMC/Ext/Bone/Pos"]
    assert len(heads) == 55 and all(h[0] == "Head" and abs(np.linalg.norm(h[4:8]) - 1) < 1e-5 for h in heads)
    blends = [a for addr, a in rx.messages if addr == "/VMC/Ext/Blend/Val"]
    assert {b[0] for b in blends} == {"Blink_L", "Blink_R", "A"} and all(0 <= b[1] <= 1 for b in blends)
    assert sum(addr == "/VMC/Ext/Blend/Apply" for addr, _ in rx.messages) == 55
    assert "55 frames" in r.stdout
