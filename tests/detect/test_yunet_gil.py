"""YuNet through ctypes (the GIL let go while it runs) finds exactly what the wheel's own call finds."""
import cv2
import numpy as np
import pytest

from engine.detect import yunet


@pytest.fixture(scope="module")
def calls():
    if not yunet.available():
        pytest.skip("the yuface wheel is not installed")
    gil_free = yunet.gil_free_detect()
    assert gil_free is not None, "libfacedetection.so or facedetect_cnn not found in the yuface wheel"
    return gil_free, yunet._wheel_detect()


def frames(dev_dir, n: int = 12) -> list[np.ndarray]:
    """aflw2000_dev images (faces, profiles among them) and the test clip's frames at two sizes."""
    out = [cv2.imread(str(p)) for p in sorted((dev_dir / "images").glob("*.jpg"))[:n]]
    cap = cv2.VideoCapture(str(dev_dir.parent / "video" / "obama.mp4"))
    for k in range(0, 50, 10):
        cap.set(cv2.CAP_PROP_POS_FRAMES, k)
        ok, f = cap.read()
        if ok:
            out += [f, cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA)]
    return out


def test_ctypes_call_gives_the_wheels_detections(calls, dev_dir):
    gil_free, wheel = calls
    found = 0
    for img in frames(dev_dir):
        a = np.asarray(wheel(np.ascontiguousarray(img))).reshape(-1, 16)[:, :15]  # 16th: uninitialised
        b = gil_free(img)[:, :15]
        assert a.shape == b.shape and np.array_equal(a.astype(np.int64), b.astype(np.int64))
        found += len(b)
    assert found >= 10  # faces were found: the comparison compared detections, not two empty lists


def test_runner_uses_the_gil_free_call_and_a_view_gives_the_same_boxes(calls, dev_dir):
    gil_free, _ = calls
    runner = yunet.YuNetRunner()
    assert runner._detect is gil_free
    img = frames(dev_dir, 1)[0]
    padded = np.zeros((img.shape[0], img.shape[1] + 8, 3), np.uint8)
    padded[:, :img.shape[1]] = img
    view = padded[:, :img.shape[1]]  # not contiguous: the runner copies it
    assert np.array_equal(runner(img), runner(view)) and len(runner(img))
