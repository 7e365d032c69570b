"""The stability benchmark (issue 10, point 13): jitter against known motion, One-Euro and its lag."""
import numpy as np
import pytest

from engine.evaluation.stability import (SHIFT_PX, jitter_percent, lag_frames, make_clips, motion_matrix, smooth,
                                         stability)


def _truth(n: int = 30, speed: float = 0.5) -> np.ndarray:
    base = np.random.default_rng(0).uniform(100, 200, (68, 2))
    return np.stack([base + [speed * t, 0.0] for t in range(n)])


def test_jitter_ignores_the_known_motion_and_a_constant_error():
    truth = _truth()
    valid = np.ones(len(truth), bool)
    assert jitter_percent(truth + [3.0, -2.0], truth, valid, 100.0)[0] == pytest.approx(0.0, abs=1e-12)


def test_jitter_is_the_rms_of_the_error_change_over_face_size():
    truth = _truth(21)
    sign = np.where(np.arange(21) % 2 == 0, 1.0, -1.0)[:, None, None]
    pred = truth + sign * np.array([0.3, 0.4])  # error flips by 2 * 0.5 px every frame
    valid = np.ones(21, bool)
    j, pairs = jitter_percent(pred, truth, valid, 50.0)
    assert pairs == 20 and j == pytest.approx(2 * 0.5 / 50.0 * 100)
    valid[10] = False  # a frame without a face breaks two pairs
    assert jitter_percent(pred, truth, valid, 50.0)[1] == 18


def test_lag_recovers_a_known_delay():
    truth = _truth(40, speed=0.4)
    valid = np.ones(40, bool)
    delayed = np.concatenate([truth[:2], truth[:-2]])  # two frames behind
    num, den = lag_frames(truth, delayed, truth, valid)
    assert num / den == pytest.approx(2.0, rel=1e-6)


def test_one_euro_steadies_a_still_noisy_sequence_and_restarts_after_a_gap():
    rng = np.random.default_rng(1)
    truth = np.repeat(_truth(1), 60, 0)
    pred = truth + rng.normal(0, 1.0, truth.shape)
    valid = np.ones(60, bool)
    sm = smooth(pred, valid)
    assert jitter_percent(sm, truth, valid, 100.0)[0] < 0.5 * jitter_percent(pred, truth, valid, 100.0)[0]
    valid[30] = False
    assert np.array_equal(smooth(pred, valid)[31], pred[31])  # a new track starts at its first measurement


def test_moving_clip_frames_show_the_known_motion(dev_dir):
    import cv2

    clips = make_clips(dev_dir, 1, 12)
    still, moving = clips
    assert (still.kind, moving.kind) == ("still", "moving")
    assert np.allclose(still.truth, still.truth[0]) and not np.array_equal(still.frames[0], still.frames[1])
    h, w = moving.frames[0].shape[:2]
    m = motion_matrix(11, ((w - 1) / 2.0, (h - 1) / 2.0))
    assert np.allclose(moving.truth[11], moving.truth[0] @ m[:, :2].T + m[:, 2])
    assert np.allclose(moving.truth[1] - moving.truth[0], SHIFT_PX, atol=0.5)  # sub-pixel per frame
    # frame 0 moved by the known map matches frame 11 far better than frame 0 left where it was
    f0, f11 = (f.astype(np.float32) for f in (moving.frames[0], moving.frames[11]))
    warped = cv2.warpAffine(f0, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    inner = np.s_[40:-40, 40:-40]
    assert np.abs(warped - f11)[inner].mean() < 0.6 * np.abs(f0 - f11)[inner].mean()


def test_stability_of_a_method_end_to_end(dev_dir):
    from engine.methods.base import available_methods

    name = "baseline" if "baseline" in available_methods() else available_methods()[0]
    r = stability([name], dev_dir, n_images=1, n_frames=15)["methods"][name]
    assert r["frames"] == 30 and r["frames_tracked"] >= 28
    assert 0 < r["still_smoothed"] < r["still_raw"] < 10 and 0 < r["moving_raw"] < 10
    assert 0 < r["lag_frames"] < 6
    assert 0 < r["pose_still_deg"] < 10 and 0 < r["pose_moving_deg"] < 10


def test_pose_jitter_removes_the_known_motion():
    from engine.evaluation.stability import motion_rotation, pose_jitter_degrees
    from engine.geometry.head_pose import rotation_from_euler

    # the clip's image motion, in head_pose's y-up axes, is motion_rotation's in-plane turn
    m = motion_matrix(9, (100.0, 80.0))
    flip = np.diag([1.0, -1.0])
    assert np.allclose(flip @ m[:, :2] @ flip, motion_rotation(9)[:2, :2], atol=1e-12)
    r0 = rotation_from_euler(20, -5, 3)
    t = 12
    moving = np.stack([motion_rotation(i) @ r0 for i in range(t)])
    valid = np.ones(t, bool)
    assert pose_jitter_degrees(moving, valid, moving=True)[0] < 1e-6
    assert pose_jitter_degrees(moving, valid, moving=False)[0] > 0.05          # the motion itself is not jitter
    wobble = np.stack([rotation_from_euler(0, 0.5 * (-1) ** i, 0) @ r0 for i in range(t)])  # +-0.5 deg pitch
    j, n = pose_jitter_degrees(wobble, valid, moving=False)
    assert n == t - 1 and np.isclose(j, 1.0, atol=1e-6)
    valid[5] = False
    assert pose_jitter_degrees(wobble, valid, moving=False)[1] == t - 3
