"""The test-time crop ensemble: its boxes, the averaging in image pixels, and the frame processor's use of it."""
from __future__ import annotations

import numpy as np
import pytest

from engine.geometry.projection import image_to_crop
from engine.methods.crop_ensemble import (ENSEMBLE_CROPS, ENSEMBLE_SCALE, ENSEMBLE_SHIFT, MAX_ENSEMBLE_CROPS,
                                          align_ensembles, average_results, ensemble_boxes)
from engine.result import AlignmentResult


def _result(landmarks, pose=(0.0, 0.0, 0.0), visible=None, frame="image", timings=None) -> AlignmentResult:
    lm = np.c_[np.asarray(landmarks, np.float64), np.zeros(len(landmarks))]
    return AlignmentResult(landmarks=lm, visible=np.ones(68, bool) if visible is None else visible,
                           mesh=np.zeros((468, 3)), pose=np.asarray(pose, np.float64), frame=frame,
                           timings=dict(timings or {"network": 1.0, "total": 2.0}))


def test_ensemble_boxes_are_the_box_then_its_scaled_and_moved_variants():
    box = np.array([100.0, 50.0, 300.0, 250.0])
    boxes = ensemble_boxes(box, MAX_ENSEMBLE_CROPS)
    np.testing.assert_allclose(boxes[0], box)
    sides = [b[2] - b[0] for b in boxes]
    centres = np.array([(b[:2] + b[2:]) / 2 for b in boxes])
    assert sides[1] == pytest.approx(200 * (1 - ENSEMBLE_SCALE)) and sides[2] == pytest.approx(200 * (1 + ENSEMBLE_SCALE))
    np.testing.assert_allclose(centres[3] - centres[0], [200 * ENSEMBLE_SHIFT, 0])
    np.testing.assert_allclose(centres[4] - centres[0], [-200 * ENSEMBLE_SHIFT, 0])
    assert all(b[2] - b[0] == pytest.approx(b[3] - b[1]) for b in boxes)  # squares, as the training crops
    assert len({tuple(np.round(b, 6)) for b in boxes}) == MAX_ENSEMBLE_CROPS  # no member repeats another
    assert len(ensemble_boxes(box)) == ENSEMBLE_CROPS
    with pytest.raises(ValueError):
        ensemble_boxes(box, 0)
    with pytest.raises(ValueError):
        ensemble_boxes(box, MAX_ENSEMBLE_CROPS + 1)


def test_average_results_means_points_pose_and_votes_visibility():
    rng = np.random.default_rng(0)
    pts = [rng.uniform(0, 100, (68, 2)) for _ in range(3)]
    hidden = np.ones(68, bool)
    hidden[:5] = False
    members = [_result(pts[0], (10.0, 0.0, 0.0), hidden), _result(pts[1], (20.0, 0.0, 0.0), hidden),
               _result(pts[2], (30.0, 0.0, 0.0))]
    avg = average_results(members)
    np.testing.assert_allclose(avg.landmarks[:, :2], np.mean(pts, axis=0))
    assert avg.pose[0] == pytest.approx(20.0, abs=1e-6) and abs(avg.pose[1]) < 1e-6
    assert not avg.visible[:5].any() and avg.visible[5:].all()  # two of three said hidden
    assert avg.timings["network"] == pytest.approx(3.0) and avg.frame == "image"
    # poses either side of +-180 degrees of roll average across the seam, not to 0
    seam = average_results([_result(pts[0], (0.0, 0.0, 170.0)), _result(pts[0], (0.0, 0.0, -170.0))])
    assert abs(abs(seam.pose[2]) - 180.0) < 1e-6
    with pytest.raises(ValueError):
        average_results([_result(pts[0], frame="crop")])


class _OracleMethod:
    """Returns the true landmarks as seen through each crop: learns each crop's box from the ensemble's crop call,
    so a member mapped back through the wrong box would not land on the truth."""

    def __init__(self, truth: np.ndarray, monkeypatch, fail_on: set[int] = frozenset()) -> None:
        import engine.methods.crop_ensemble as ce

        self.truth, self.boxes, self.fail_on, self.calls = truth, [], set(fail_on), []
        real_crop = ce.crop_image

        def crop_and_record(image, box, *args):
            self.boxes.append(np.array(box, np.float64))
            return real_crop(image, box, *args)

        monkeypatch.setattr(ce, "crop_image", crop_and_record)

    def align_batch(self, crops):
        self.calls.append(len(crops))
        out = []
        for k, box in enumerate(self.boxes[-len(crops):]):
            if k in self.fail_on:
                out.append(None)
                continue
            lm = image_to_crop(np.c_[self.truth, np.zeros(len(self.truth))], box)
            out.append(_result(lm[:, :2], frame="crop"))
        return out


def test_a_perfect_method_s_ensemble_lands_on_the_truth_in_one_batch(monkeypatch):
    rng = np.random.default_rng(1)
    truth_a = rng.uniform(200, 360, (68, 2))
    m = _OracleMethod(truth_a, monkeypatch)
    box = np.array([180.0, 180.0, 380.0, 380.0])
    got = align_ensembles(m, np.zeros((500, 500, 3), np.uint8), [box, box / 3], k=5)
    assert m.calls == [10]  # both faces' five crops in one call
    assert len({tuple(np.round(b, 6)) for b in m.boxes}) == 10
    np.testing.assert_allclose(got[0].landmarks[:, :2], truth_a, atol=1e-6)
    np.testing.assert_allclose(got[1].landmarks[:, :2], truth_a, atol=1e-6)  # each member through its own box


def test_the_ensemble_averages_the_members_the_method_found_and_none_when_it_found_none(monkeypatch):
    truth = np.random.default_rng(2).uniform(200, 360, (68, 2))
    box = np.array([180.0, 180.0, 380.0, 380.0])
    some = _OracleMethod(truth, monkeypatch, fail_on={0, 2})
    got = align_ensembles(some, np.zeros((500, 500, 3), np.uint8), [box], k=3)[0]
    np.testing.assert_allclose(got.landmarks[:, :2], truth, atol=1e-6)
    assert got.timings["network"] == pytest.approx(1.0)  # one member counted
    none = _OracleMethod(truth, monkeypatch, fail_on={0, 1, 2})
    assert align_ensembles(none, np.zeros((500, 500, 3), np.uint8), [box], k=3) == [None]


class _CountingMethod:
    """A method stand-in that records how many crops each call holds and returns the mean face in every crop."""

    name = "counting"

    def __init__(self) -> None:
        self.calls: list[int] = []
        rng = np.random.default_rng(3)
        self.lm = np.c_[rng.uniform(30, 90, (68, 2)), np.zeros(68)]

    def align_batch(self, crops):
        self.calls.append(len(crops))
        return [_result(self.lm[:, :2], frame="crop") for _ in crops]

    def close(self):
        pass


class _OneFaceDetector:
    def detect(self, image, tiles=True):
        return np.array([[100.0, 100.0, 200.0, 200.0, 0.9]])

    def close(self):
        pass


def test_the_frame_processor_ensembles_a_new_face_and_aligns_a_tracked_one_once():
    from engine.detect.tracker import FaceTracker
    from engine.pipeline import FrameProcessor
    from engine.sources import Frame

    m = _CountingMethod()
    proc = FrameProcessor([m], tracker=FaceTracker(detector=_OneFaceDetector(), redetect_every=10), crop_ensemble=3)
    image = np.full((400, 400, 3), 128, np.uint8)
    first = proc.process(Frame(index=0, timestamp=0.0, image=image))
    # the settling alignment (1 crop), then the new face's ensemble (3 crops)
    assert m.calls == [1, 3] and len(first.faces) == 1
    proc.process(Frame(index=1, timestamp=0.04, image=image))
    assert m.calls == [1, 3, 1]  # tracked: one crop
    with pytest.raises(ValueError):
        FrameProcessor([_CountingMethod()], tracker=FaceTracker(detector=_OneFaceDetector()), crop_ensemble=0)
