import numpy as np

from engine.evaluation.nme import bucket_summary, nme_per_image


def test_ground_truth_scores_zero():
    gt = np.random.default_rng(0).uniform(0, 100, size=(5, 68, 2))
    assert np.allclose(nme_per_image(gt, gt), 0)


def test_known_shift_gives_known_nme():
    gt = np.random.default_rng(1).uniform(0, 1, size=(68, 2)) * np.array([80.0, 45.0])
    gt[0] = [0, 0]
    gt[1] = [80, 45]  # box exactly 80 x 45: sqrt(w h) = 60
    pred = gt + np.array([3.0, 4.0])  # every point off by 5 px
    assert np.isclose(nme_per_image(pred, gt), 5 / 60 * 100)


def test_buckets_and_balance():
    nme = np.array([1.0, 1.0, 2.0, 4.0, 4.0])
    yaw = np.array([10, -29, 45, -70, 90])
    out, n = bucket_summary(nme, yaw)
    assert out["0-30"] == 1.0 and out["30-60"] == 2.0 and out["60-90"] == 4.0
    assert np.isclose(out["balanced"], 7 / 3) and np.isclose(out["overall"], 12 / 5)
    assert n == {"0-30": 2, "30-60": 1, "60-90": 2, "overall": 5}
