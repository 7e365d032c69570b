"""The front end: crops that settle onto the training framing, the profile detector, e2e failure accounting."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.detect.crop_policy import crop_image, detection_for_crop, roi_box_from_landmarks
from engine.detect.front_end import MAX_SCALE_STEP, crop_motion_px, recrop, settle_boxes
from engine.geometry.projection import image_to_crop
from engine.result import AlignmentResult


class _OracleMethod:
    """A perfect network: returns the true landmarks as seen through each crop, so the re-crop's fixed point is
    exactly roi_box_from_landmarks of the truth. It learns each crop's box from the front end's crop call."""

    name = "oracle"

    def __init__(self, landmarks_image: np.ndarray, monkeypatch) -> None:
        import engine.detect.front_end as fe

        self.truth = landmarks_image
        self.boxes: list[np.ndarray] = []
        real_crop = fe.crop_image

        def crop_and_record(image, box, *args):
            self.boxes.append(np.array(box, np.float64))
            return real_crop(image, box, *args)

        monkeypatch.setattr(fe, "crop_image", crop_and_record)

    def align_batch(self, crops):
        out = []
        for box in self.boxes[-len(crops):]:
            lm = image_to_crop(np.c_[self.truth, np.zeros(len(self.truth))], box)
            out.append(AlignmentResult(landmarks=lm, visible=np.ones(68, bool), mesh=np.zeros((468, 3)),
                                       pose=np.zeros(3)))
        return out


def _face_points(cx=300.0, cy=260.0, half=80.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.c_[rng.uniform(cx - half, cx + half, 68), rng.uniform(cy - half, cy + half, 68)]


def _scaled(box: np.ndarray, factor: float) -> np.ndarray:
    c, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * factor
    return np.r_[c - half, c + half]


def test_recrop_clamps_one_step_of_scale():
    box = np.array([0.0, 0.0, 100.0, 100.0])
    pts = _face_points(50, 50, 10)  # landmarks asking for a much smaller box
    new, free = recrop(pts, box), roi_box_from_landmarks(pts)
    assert new[2] - new[0] == pytest.approx(100 / MAX_SCALE_STEP)
    np.testing.assert_allclose((new[:2] + new[2:]) / 2, (free[:2] + free[2:]) / 2)


def test_settle_converges_from_a_shifted_and_scaled_box_with_a_perfect_method(monkeypatch):
    truth = _face_points()
    target = roi_box_from_landmarks(truth)
    side = target[2] - target[0]
    start = _scaled(target + np.array([0.2, -0.15, 0.2, -0.15]) * side, 1.6)  # a fifth of the face off, 1.6x big
    m = _OracleMethod(truth, monkeypatch)
    settled = settle_boxes(m, np.zeros((600, 700, 3), np.uint8), [start], max_steps=6)[0]
    # 1.6x needs three clamped steps (1.25^2 < 1.6 <= 1.25^3), then one that does not move
    assert settled.converged and not settled.lost
    assert settled.steps == 4
    np.testing.assert_allclose(settled.box, target, atol=1e-6)
    moves = [crop_motion_px(a, b) for a, b in zip(m.boxes, m.boxes[1:] + [settled.box])]
    assert moves[0] > 10 and moves[-1] < 0.5


def test_settle_stops_at_the_cap_and_reports_not_converged(monkeypatch):
    truth = _face_points()
    target = roi_box_from_landmarks(truth)
    m = _OracleMethod(truth, monkeypatch)
    one = settle_boxes(m, np.zeros((600, 700, 3), np.uint8), [target + [60.0, 0.0, 60.0, 0.0]], max_steps=1)[0]
    assert one.steps == 1 and not one.converged
    np.testing.assert_allclose(one.box, target, atol=1e-6)  # a perfect method gets there in one step


@pytest.fixture(scope="module")
def mtcnn3d():
    from engine.methods.base import MethodUnavailable
    from engine.methods.factory import create

    try:
        m = create("mtcnn3d")
    except MethodUnavailable as e:
        pytest.skip(str(e))
    yield m
    m.close()


def test_real_method_settles_a_shifted_scaled_box_back_near_the_protocol_crop(dev_dir, mtcnn3d):
    from engine.detect.tracker import iou
    from engine.evaluation.aflw2000 import load_set
    from engine.evaluation.nme import nme_per_image
    from engine.geometry.projection import crop_to_image

    ds = load_set(dev_dir)
    errs = []
    for i in (0, 1, 2):  # near-frontal and mid-pose images
        img = cv2.imread(str(ds.image_path(i)))
        g = ds.roi_box[i]
        side = g[2] - g[0]
        c = (g[:2] + g[2:]) / 2 + np.array([0.12, -0.1]) * side
        start = np.r_[c - 0.65 * side, c + 0.65 * side]  # a tenth of the face off, 1.3x too big
        s = settle_boxes(mtcnn3d, img, [start], max_steps=4)[0]
        assert iou(s.box, g) > max(iou(start, g) + 0.1, 0.8), (i, iou(start, g), iou(s.box, g))
        lm = crop_to_image(mtcnn3d.align(crop_image(img, s.box)).landmarks, s.box)
        lm0 = crop_to_image(mtcnn3d.align(crop_image(img, start)).landmarks, start)
        errs.append((nme_per_image(lm0, ds.pts68[i]), nme_per_image(lm, ds.pts68[i])))
    before, after = np.array(errs).T
    assert after.mean() < before.mean(), errs


# a dev profile (|yaw| >= 60) that BlazeFace (short + full range on the whole image, and its tiles) does not find
# and YuNet does: python -m research.detector_candidates lists the misses of each candidate
PROFILE_BLAZEFACE_MISSES = "image02000.jpg"


def test_yunet_finds_a_profile_blazeface_misses(dev_dir):
    from engine.detect.crop_policy import roi_box_from_detection
    from engine.detect.face_detector import FaceDetector
    from engine.evaluation.aflw2000 import load_set
    from engine.evaluation.protocol import match_subject

    ds = load_set(dev_dir)
    i = ds.names.index(PROFILE_BLAZEFACE_MISSES)
    assert abs(ds.yaw[i]) >= 60
    img = cv2.imread(str(ds.image_path(i)))
    blaze, both = FaceDetector(yunet=False), FaceDetector(yunet=True)
    try:
        miss = [roi_box_from_detection(b) for b in blaze.detect(img)]
        hit = [roi_box_from_detection(b) for b in both.detect(img)]
    finally:
        blaze.close()
        both.close()
    assert match_subject(miss, ds.roi_box[i]) < 0
    assert match_subject(hit, ds.roi_box[i]) >= 0


# a dev profile that no pass of the detector finds on the image itself (YuNet's best box scores 0.34) and YuNet on
# the padded image does (0.69): the retry when nothing was found
PROFILE_FOUND_ONLY_PADDED = "image04337.jpg"


def test_a_profile_nothing_finds_is_found_by_the_padded_retry(dev_dir):
    from engine.detect.crop_policy import roi_box_from_detection
    from engine.detect.face_detector import FaceDetector
    from engine.detect.yunet import available
    from engine.evaluation.aflw2000 import load_set
    from engine.evaluation.protocol import match_subject

    if not available():
        pytest.skip("the yuface wheel is not installed")
    ds = load_set(dev_dir)
    i = ds.names.index(PROFILE_FOUND_ONLY_PADDED)
    assert abs(ds.yaw[i]) >= 60
    img = cv2.imread(str(ds.image_path(i)))
    det = FaceDetector()
    try:
        whole_image_only = det.detect(img, tiles=False)  # the tracker's quick pass: no retry
        full = det.detect(img)
    finally:
        det.close()
    assert len(whole_image_only) == 0
    assert len(full) == 1 and match_subject([roi_box_from_detection(b) for b in full], ds.roi_box[i]) == 0


class _ScriptedDetector:
    """Detections chosen per image: the subject's own crop, nothing, or a face somewhere else."""

    def __init__(self, ds, plan: list[str]) -> None:
        self.ds, self.plan, self.i = ds, plan, 0

    def detect(self, image):
        kind, g = self.plan[self.i], self.ds.roi_box[self.i]
        self.i += 1
        side = g[2] - g[0]
        subject = np.r_[detection_for_crop(g), 0.9]
        # a confident face somewhere else
        other = np.r_[detection_for_crop(np.array([0.0, 0.0, side * 0.3, side * 0.3])), 0.95]
        return {"subject": subject[None], "none": np.zeros((0, 5)), "elsewhere": other[None],
                "both": np.stack([other, subject])}[kind]


def test_e2e_counts_misses_per_bucket_and_scores_them_as_the_mean_shape(dev_dir, mtcnn3d):
    from engine.evaluation.aflw2000 import load_set
    from engine.evaluation.nme import nme_per_image
    from engine.evaluation.protocol import evaluate_e2e, mean_shape_landmarks

    ds = load_set(dev_dir)
    plan = ["subject", "none", "elsewhere", "both", "subject", "none"]
    n = len(plan)
    res = evaluate_e2e(mtcnn3d, dev_dir, limit=n, detector=_ScriptedDetector(ds, plan))
    missed = np.array([p in ("none", "elsewhere") for p in plan])
    assert res["misses"] == missed.sum() == res["failures"]
    ay = np.abs(ds.yaw[:n])
    expected = {}
    for lo, hi, name in ((0, 30, "0-30"), (30, 60, "30-60"), (60, 1e9, "60-90")):
        expected[name] = int((missed & (ay >= lo) & (ay < hi)).sum())
    assert res["misses_by_bucket"] == expected
    per = res["_per_image"]
    for i in np.nonzero(missed)[0]:  # a miss scores the mean shape in the protocol box, never skipped
        assert per[i] == pytest.approx(nme_per_image(mean_shape_landmarks(ds.roi_box[i])[:, :2], ds.pts68[i]))
    assert res["n_detected"]["overall"] == n - missed.sum()
    assert np.all(per[~missed] < per[missed].min())  # aligned faces beat the mean shape
    assert res["nme_detected"]["overall"] == pytest.approx(per[~missed].mean())
    assert sum(res["elsewhere_by_bucket"].values()) == 2  # "elsewhere" and "both"
    assert sum(res["duplicates_by_bucket"].values()) == 0
    assert res["cpu_ms_per_image"]["network"] > 0 and res["recrop_steps_mean"] >= 1


class _NoFaceDetector:
    def detect(self, image, tiles=True):
        return np.zeros((0, 5))

    def close(self):
        pass


def test_frame_result_says_the_detector_found_nothing(mtcnn3d):
    """The status bar tells "the detector found no face" from "the method found none in the crop" by this count."""
    from engine.detect.tracker import FaceTracker
    from engine.pipeline import FrameProcessor
    from engine.sources import Frame

    proc = FrameProcessor([mtcnn3d], tracker=FaceTracker(detector=_NoFaceDetector()))
    res = proc.process(Frame(index=0, timestamp=0.0, image=np.full((300, 300, 3), 128, np.uint8)))
    assert res.faces == [] and res.faces_tracked == 0
    assert "settle crop" in res.timings


def test_the_card_e2e_row_follows_the_eval_json(tmp_path, monkeypatch):
    """update_card_e2e swaps the card's e2e row and its description for the latest `eval --mode e2e --json` object,
    leaving the rest of the card as it was."""
    import json

    import engine.training.model_card as mc

    monkeypatch.setattr(mc, "weights_path", lambda name: tmp_path / name)
    card = ("| mode | 0-30 | 30-60 | 60-90 | balanced | overall | failures |\n"
            "| protocol | 1.00 | 2.00 | 3.00 | **2.00** | 1.50 | 0 |\n"
            "| e2e | 9.00 | 9.00 | 9.00 | **9.00** | 9.00 | 3 |\n"
            "e2e mode crops with the app's BlazeFace detector and crop policy; a detection failure scores the mean "
            "shape's NME.\n")
    (tmp_path / "m.md").write_text(card)
    nme = {"0-30": 1.5, "30-60": 2.5, "60-90": 3.5, "balanced": 2.5, "overall": 2.0}
    (tmp_path / "m_e2e.json").write_text(json.dumps({"mode": "e2e", "nme": nme, "failures": 2}))
    assert mc.update_card_e2e("m", tmp_path) and not mc.update_card_e2e("absent", tmp_path)
    text = (tmp_path / "m.md").read_text()
    assert "| e2e | 1.50 | 2.50 | 3.50 | **2.50** | 2.00 | 2 |" in text and "| protocol | 1.00 |" in text
    assert "9.00" not in text and "YuNet" in text and "BlazeFace detector and crop policy" not in text
    # a card written with the previous front end's sentence gets the current one
    (tmp_path / "m.md").write_text(card.replace(card.split("\n")[3], mc._OLD_E2E_SENTENCES[1]))
    assert mc.update_card_e2e("m", tmp_path)
    text = (tmp_path / "m.md").read_text()
    assert mc.E2E_SENTENCE in text and mc._OLD_E2E_SENTENCES[1] not in text and "retry" in text
