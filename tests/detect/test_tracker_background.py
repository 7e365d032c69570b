"""The live view's background re-detection: periodic detections of tracked faces run on another thread and are
merged into the first frame after they finish; detections a frame needs now stay in that frame."""
import threading

import numpy as np

from engine.detect.tracker import FaceTracker


class _GatedDetector:
    """One face; each detection waits for ``gate`` and records the thread it ran on."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.threads: list[str] = []
        self.boxes = np.array([[100.0, 50.0, 180.0, 130.0, 0.9]])

    def detect(self, image, tiles: bool = True):
        self.threads.append(threading.current_thread().name)
        assert self.gate.wait(10)
        return self.boxes.copy()


def _follow(tracker: FaceTracker, image) -> list:
    """One frame: the tracks, each fed back the same landmarks on the still face (as a method would)."""
    tracks = tracker.boxes_for(image)
    ring = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    for t in tracks:
        tracker.update(t, np.c_[140 + 30 * np.cos(ring), 95 + 35 * np.sin(ring)])
    return tracks


def test_periodic_detection_runs_in_the_background_and_is_merged_later():
    det = _GatedDetector()
    t = FaceTracker(detector=det, redetect_every=3, background=True)
    img = np.zeros((240, 320, 3), np.uint8)
    me = threading.current_thread().name
    assert len(_follow(t, img)) == 1 and det.threads == [me]  # nothing tracked: detected in this frame
    _follow(t, img)
    _follow(t, img)
    det.gate.clear()  # the next periodic detection will not finish until the gate opens
    t.tracks[0].unconfirmed = 2
    tracks = _follow(t, img)  # frame 3: due, handed to the background thread; this frame does not wait
    assert len(tracks) == 1 and len(det.threads) == 2 and det.threads[1] != me
    assert t.tracks[0].unconfirmed == 2  # not merged yet
    det.gate.set()
    t._pending.result(5)
    _follow(t, img)  # the first frame after it finished merges it: the track is confirmed
    assert t.tracks[0].unconfirmed == 0 and t._pending is None
    t.close()


def test_stale_frames_and_resets_detect_in_the_frame():
    det = _GatedDetector()
    t = FaceTracker(detector=det, redetect_every=2, background=True)
    img = np.zeros((240, 320, 3), np.uint8)
    me = threading.current_thread().name
    _follow(t, img)
    det.gate.clear()
    _follow(t, img)
    _follow(t, img)  # due: in the background, held at the gate
    assert det.threads[-1] != me
    threading.Timer(0.2, det.gate.set).start()
    t.boxes_for(img, stale=True)  # waits for the running one (the detector is not shared), then its own
    assert det.threads[-1] == me and t._pending is None
    t.reset()
    _follow(t, img)
    assert det.threads[-1] == me  # after a reset nothing is tracked: detected in the frame
    t.close()


def test_without_background_every_detection_is_in_its_frame():
    det = _GatedDetector()
    t = FaceTracker(detector=det, redetect_every=2)
    img = np.zeros((240, 320, 3), np.uint8)
    for _ in range(5):
        _follow(t, img)
    assert set(det.threads) == {threading.current_thread().name} and len(det.threads) == 3
