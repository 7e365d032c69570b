import cv2
import numpy as np
import pytest

from engine.facemodel import load_face_model
from engine.training.augment import AugmentConfig, augment, flip_points, warp_points, geometric_matrix


def test_teacher_points_rebuilt_within_half_a_pixel(train_dir):
    from engine.training.targets import all_points

    lab = np.load(train_dir / "labels.npz")
    idx = np.random.default_rng(0).choice(len(lab["names"]), 500, replace=False)
    pts = all_points(load_face_model(), lab["teacher_params"][idx])
    err = np.abs(pts[:, 468:, :] - lab["teacher_lm68"][idx]).max()
    assert err < 0.5


def test_flip_twice_is_identity():
    fm = load_face_model()
    perm = np.concatenate([fm.mesh_flip, fm.lmk_flip + 468])
    pts = np.random.default_rng(0).uniform(0, 120, size=(536, 3)).astype(np.float32)
    assert np.allclose(flip_points(flip_points(pts, perm), perm), pts, atol=1e-4)
    assert not np.allclose(flip_points(pts, perm), pts)


def test_flip_augmentation_twice_restores_image_and_points():
    img = np.random.default_rng(1).integers(0, 255, (120, 120, 3), dtype=np.uint8)
    pts = np.array([[30.0, 40.0, 1.0], [90.0, 80.0, 2.0]])
    perm = np.array([1, 0])
    m = geometric_matrix(np.random.default_rng(0), AugmentConfig(rotate=0, scale=(1, 1), shift=0), flip=True)
    once = cv2.warpAffine(img, m, (120, 120))
    twice = cv2.warpAffine(once, m, (120, 120))
    assert np.array_equal(twice, img)
    assert np.allclose(warp_points(warp_points(pts, m)[perm], m)[perm], pts)


@pytest.mark.parametrize("seed", range(5))
def test_rotation_augmentation_moves_points_with_the_image(seed):
    """A bright dot drawn at a point ends up where the augmented point says."""
    img = np.zeros((120, 120, 3), np.uint8)
    p = np.array([[45.0, 70.0, 0.0]])
    cv2.circle(img, (45, 70), 2, (255, 255, 255), -1)
    cfg = AugmentConfig(flip=0.5, rotate=45, colour=(1, 1), brightness=0, occlude=0, blur=0)
    out, (q,) = augment(img, [p], [np.array([0])], np.random.default_rng(seed), cfg)
    ys, xs = np.nonzero(out[..., 0] > 128)
    assert len(xs) > 0
    assert np.hypot(xs.mean() - q[0, 0], ys.mean() - q[0, 1]) < 1.0


def test_augmentation_is_seeded():
    img = np.random.default_rng(2).integers(0, 255, (120, 120, 3), dtype=np.uint8)
    pts = np.random.default_rng(3).uniform(0, 120, (10, 3))
    a = augment(img, [pts], [np.arange(10)], np.random.default_rng(7), AugmentConfig())
    b = augment(img, [pts], [np.arange(10)], np.random.default_rng(7), AugmentConfig())
    assert np.array_equal(a[0], b[0]) and np.allclose(a[1][0], b[1][0])


def test_visibility_of_training_labels_follows_yaw(train_dir):
    """Turned to one side, the far jaw line hides; frontal, every landmark shows."""
    from engine.training.targets import all_points, sample_visibility

    lab = np.load(train_dir / "labels.npz")
    yaw = lab["teacher_pose"][:, 0]
    fm = load_face_model()
    front = np.argmin(np.abs(yaw))
    right = np.argmin(np.abs(yaw - 60))
    left = np.argmin(np.abs(yaw + 60))
    pts = all_points(fm, lab["teacher_params"][[front, right, left]])
    v = [sample_visibility(p, fm) for p in pts]
    assert v[0].mean() > 0.9 and v[0][17:].all()  # frontal: all inner points, nearly all the jaw
    assert not v[1][:4].any() and v[1][13:17].all()
    assert not v[2][13:17].any() and v[2][:4].all()
