"""Flip averaging (engine/methods/flip.py): the mirror maps, the pose mirror, and every shipped method's
mirrored crop giving its mirrored result."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from engine.facemodel import N_MESH, load_face_model
from engine.geometry.rotation import euler_to_matrix
from engine.methods.base import Method, NoFaceError, registry
from engine.methods.factory import create
from engine.methods.flip import (FlipAveraged, average_pose, mirror_crop, mirror_points, mirror_pose, mirror_rotation,
                                 texel_mirror_permutation, unmirror_result, with_flip)
from engine.paths import PROJECT_ROOT, weights_path
from engine.result import AlignmentResult

SHIPPED = [n for n, info in registry().items() if weights_path(info.weights).exists()]
MIRROR_X = np.diag([-1.0, 1.0, 1.0])


def test_permutations_are_involutions_that_mirror_the_mean_face():
    fm = load_face_model()
    for perm in (fm.lmk_flip, fm.mesh_flip):
        assert np.array_equal(perm[perm], np.arange(len(perm)))
    # the mean shape is a symmetric face: mirrored and relabelled, it lands on itself (model frame: x -> -x)
    mean = fm.mean.astype(np.float64)
    for pts, perm in ((mean[N_MESH:], fm.lmk_flip), (mean[:N_MESH], fm.mesh_flip)):
        centred = pts - pts.mean(0)
        mirrored = centred[perm] * np.array([-1.0, 1.0, 1.0])
        size = np.ptp(centred[:, 0])
        assert np.linalg.norm(mirrored - centred, axis=1).mean() < 0.03 * size
        # the identity would not do: the left eye is not the right eye
        assert np.linalg.norm(centred * np.array([-1.0, 1.0, 1.0]) - centred, axis=1).mean() > 0.1 * size


def test_mirror_points_about_the_centre_column():
    pts = np.array([[0.0, 5.0, 1.0], [119.0, 7.0, -2.0], [59.5, 0.0, 3.0]])
    out = mirror_points(pts, np.array([1, 0, 2]), 120)
    assert np.allclose(out, [[0.0, 7.0, -2.0], [119.0, 5.0, 1.0], [59.5, 0.0, 3.0]])
    # a pixel's column in the mirrored image is 119 - its column: the crop's mirror and the points' agree
    img = np.zeros((120, 120, 3), np.uint8)
    img[40, 10] = 255
    assert mirror_crop(img)[40, 119 - 10].max() == 255


@pytest.mark.parametrize("pose", [(30.0, 10.0, -5.0), (-70.0, -20.0, 15.0), (5.0, 40.0, 60.0), (89.0, 3.0, 2.0)])
def test_mirror_pose_is_the_mirrored_rotation(pose):
    r = euler_to_matrix(*pose)
    assert np.allclose(mirror_rotation(r), MIRROR_X @ r @ MIRROR_X)
    assert np.allclose(euler_to_matrix(*mirror_pose(np.array(pose))), MIRROR_X @ r @ MIRROR_X, atol=1e-9)


def test_average_pose():
    a, b = np.array([20.0, 5.0, -3.0]), np.array([24.0, 7.0, -1.0])
    assert np.allclose(average_pose(a, a), a)
    assert np.allclose(average_pose(a, b), (a + b) / 2, atol=0.05)   # near each other: the angles' mean
    # across the +-180 degree roll seam the rotation mean is the right one, the angles' mean is not
    c = average_pose(np.array([0.0, 0.0, 179.0]), np.array([0.0, 0.0, -179.0]))
    assert abs(abs(c[2]) - 180.0) < 1e-6
    # a pose and its mirror average to a face looking straight (yaw, roll 0), pitch about kept (the chordal mean
    # of two rotations 40 degrees apart tilts it a little: 4.47 here)
    m = average_pose(a, mirror_pose(a))
    assert abs(m[0]) < 1e-6 and abs(m[2]) < 1e-6 and abs(m[1] - a[1]) < 1.0


def test_texel_mirror_permutation():
    valid = np.zeros((4, 6), bool)
    valid[1, [0, 5]] = True
    valid[2, [1, 2, 3, 4]] = True
    perm = texel_mirror_permutation(valid)
    assert np.array_equal(perm, [1, 0, 5, 4, 3, 2])
    assert np.array_equal(perm[perm], np.arange(len(perm)))
    valid[3, 0] = True
    with pytest.raises(ValueError):
        texel_mirror_permutation(valid)


class _Asymmetric(Method):
    """A stand-in method with a fixed, asymmetric answer (its left side lower), and no face in mirrored crops
    when told so (MediaPipe's detector can miss one of the two)."""
    backend = "test"

    def __init__(self, miss_mirrored: bool = False) -> None:
        fm = load_face_model()
        self.points = fm.points(np.load(weights_path("param_stats.npz"))["mean"]).astype(np.float64)
        self.points[:, 1] += np.where(self.points[:, 0] < 60, 4.0, 0.0)
        self.miss_mirrored = miss_mirrored

    @property
    def name(self) -> str:
        return "asymmetric"

    def align(self, crop_bgr: np.ndarray) -> AlignmentResult:
        mirrored = crop_bgr[0, 0, 0] == 1
        if mirrored and self.miss_mirrored:
            raise NoFaceError("no face")
        return AlignmentResult(landmarks=self.points[N_MESH:].copy(), visible=np.ones(68, bool),
                               mesh=self.points[:N_MESH].copy(), pose=np.array([10.0, 0.0, 4.0]),
                               timings={"network": 1.0, "total": 1.0}, method=self.name)


def _marked_crop() -> np.ndarray:
    crop = np.zeros((120, 120, 3), np.uint8)
    crop[0, -1] = 1   # the mirror moves this to [0, 0]: the stand-in tells a mirrored crop by it
    return crop


def test_wrapper_averages_the_plain_and_the_mirrored_back_result():
    fm = load_face_model()
    inner = _Asymmetric()
    r = FlipAveraged(inner).align(_marked_crop())
    expect = (inner.points + mirror_points(inner.points, np.concatenate([fm.mesh_flip, fm.lmk_flip + N_MESH]),
                                           120)) / 2
    assert np.allclose(r.mesh, expect[:N_MESH]) and np.allclose(r.landmarks, expect[N_MESH:])
    # the answer and its mirror: straight on (the rotations' mean has no yaw or roll; pitch 0.35 from their order)
    assert abs(r.pose[0]) < 1e-9 and abs(r.pose[2]) < 1e-9 and abs(r.pose[1]) < 1.0
    assert r.timings["flip"] > 0 and r.timings["total"] == pytest.approx(1.0 + r.timings["flip"])
    assert r.method == "asymmetric" and r.frame == "crop"


def test_wrapper_keeps_the_one_side_that_found_a_face():
    fm = load_face_model()
    inner = _Asymmetric(miss_mirrored=True)
    r = FlipAveraged(inner).align(_marked_crop())
    assert np.allclose(r.landmarks, inner.points[N_MESH:])   # the plain pass alone, unaveraged
    # and only the mirrored one: its result mirrored back
    crop = mirror_crop(_marked_crop())
    r = FlipAveraged(inner).align(crop)
    assert np.allclose(r.landmarks, mirror_points(inner.points[N_MESH:], fm.lmk_flip, 120))
    assert FlipAveraged(inner).align_batch([]) == []


def test_with_flip_wraps_once_and_unwraps():
    inner = _Asymmetric()
    f = with_flip(inner, True)
    assert f.flip and not inner.flip and with_flip(f, True) is f and with_flip(f, False) is inner
    assert with_flip(inner, False) is inner
    with pytest.raises(ValueError):
        FlipAveraged(f)


@pytest.fixture(scope="module")
def dev_crops(dev_dir):
    from engine.evaluation.aflw2000 import crop_image, load_set

    ds = load_set(dev_dir)
    idx = [int(np.argmin(np.abs(ds.yaw - y))) for y in (0, 40, -40)]
    return ds, idx, [crop_image(cv2.imread(str(ds.image_path(i))), ds.roi_box[i]) for i in idx]


@pytest.mark.parametrize("name", SHIPPED)
def test_mirrored_crop_gives_the_mirrored_result(name, dev_crops):
    """The plain method on the mirrored crop, mapped back by the permutations, lands on its own result on the
    crop within a tolerance (the networks are not exactly symmetric); without the permutation it would not."""
    ds, idx, crops = dev_crops
    m = create(name)
    fm = load_face_model()
    checked = 0
    for i, crop in zip(idx, crops):
        try:
            a, b = m.align(crop), m.align(mirror_crop(crop))
        except NoFaceError:   # MediaPipe may miss one of the two; the other faces still test it
            continue
        checked += 1
        back = unmirror_result(b, fm, crop.shape[1], m.dense_flip)
        size = np.sqrt(np.prod(np.ptp(a.landmarks[:, :2], axis=0)))
        err = np.linalg.norm(back.landmarks[:, :2] - a.landmarks[:, :2], axis=1).mean() / size
        unpermuted = mirror_points(b.landmarks, None, crop.shape[1])
        err_identity = np.linalg.norm(unpermuted[:, :2] - a.landmarks[:, :2], axis=1).mean() / size
        assert err < 0.05, f"{name}: mirrored-back landmarks {err:.3f} of the face size from the plain ones"
        assert err < 0.5 * err_identity
        mesh_err = np.linalg.norm(back.mesh[:, :2] - a.mesh[:, :2], axis=1).mean() / size
        assert mesh_err < 0.05, f"{name}: mirrored-back mesh {mesh_err:.3f} of the face size"
        # pose: the mirrored face's yaw and roll have the other sign; mapped back they agree with the plain ones
        assert abs(back.pose[0] - a.pose[0]) < 10 and abs(back.pose[2] - a.pose[2]) < 10, (a.pose, back.pose)
        if abs(ds.yaw[i]) > 30:
            assert np.sign(b.pose[0]) == -np.sign(ds.yaw[i]) and np.sign(back.pose[0]) == np.sign(ds.yaw[i])
        # visibility relabelled: the same side hidden
        assert (back.visible == a.visible).mean() >= 0.85
        if a.dense is not None and m.dense_flip is not None:
            scale = np.ptp(a.dense[:, 0])
            assert np.linalg.norm(back.dense - a.dense, axis=1).mean() < 0.05 * scale
    assert checked >= 2, f"{name} aligned fewer than 2 of the 3 faces and their mirrors"
    m.close()


@pytest.mark.parametrize("name", SHIPPED)
def test_flip_averaged_method_is_mirror_equivariant(name, dev_crops):
    """Flip-averaged, a mirrored crop gives exactly the mirror of the crop's result: landmarks, mesh, pose,
    visibility and dense surface."""
    _, _, crops = dev_crops
    f = create(name, flip=True)
    assert f.flip and f.name == name and f.weights == registry()[name].weights
    fm = load_face_model()
    for crop in crops:
        try:
            r = f.align(crop)
            back = unmirror_result(f.align(mirror_crop(crop)), fm, crop.shape[1], f.dense_flip)
        except NoFaceError:
            continue
        assert np.allclose(back.landmarks, r.landmarks, atol=1e-4)
        assert np.allclose(back.mesh, r.mesh, atol=1e-4)
        assert np.allclose(back.pose, r.pose, atol=1e-4)
        assert (back.visible == r.visible).mean() >= 0.97   # z-test ties may fall either way
        if r.dense is not None and f.dense_flip is not None:
            assert np.allclose(back.dense, r.dense, atol=1e-4)
        assert {"network", "visibility", "flip", "total"} <= set(r.timings)
        assert r.timings["total"] >= r.timings["flip"] > 0
    # a batch: every face and its mirror through one call, the same answers as one at a time
    batch = f.align_batch(crops)
    for crop, rb in zip(crops, batch):
        if rb is not None:
            assert np.allclose(rb.landmarks, f.align(crop).landmarks, atol=1e-3)
    f.close()


def test_eval_command_flip(dev_dir):
    if "baseline" not in SHIPPED:
        pytest.skip("baseline has no weights")
    out = subprocess.run([sys.executable, "main.py", "eval", "--method", "baseline", "--data", str(dev_dir),
                          "--json", "--limit", "4", "--flip"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["flip"] is True and res["n"]["overall"] == 4 and res["failures"] == 0


def test_frame_processor_flip_stage_and_live_switch(dev_dir):
    """The pipeline reports flip averaging's cost as its own stage, and switches it on and off keeping the
    loaded model."""
    from engine.pipeline import FrameProcessor
    from engine.sources import Frame

    if "baseline" not in SHIPPED:
        pytest.skip("baseline has no weights")
    img = cv2.imread(str(sorted((dev_dir / "images").glob("*.jpg"))[0]))
    proc = FrameProcessor(["baseline"], flip=True)
    res = proc.process(Frame(0, 0.0, img))
    assert res.faces and res.timings["flip"] > 0 and proc.methods["baseline"].flip
    inner = proc.methods["baseline"].inner
    proc.set_flip(False)
    assert proc.methods["baseline"] is inner
    proc.tracker.reset()
    res = proc.process(Frame(1, 0.04, img))
    assert res.faces and "flip" not in res.timings
    proc.close()


def test_annotate_flip_records_it_and_keeps_prnet_dense_surface(dev_dir, tmp_path):
    """`annotate --flip`: the JSON says which methods were flip-averaged; PRNet's dense surface (averaged through
    its texel mirror) still goes to the .obj."""
    import shutil

    from engine.export.annotate import annotate

    if "prnet" not in SHIPPED:
        pytest.skip("prnet has no weights")
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(sorted((dev_dir / "images").glob("*.jpg"))[0], folder)
    annotate(str(folder), ["prnet"], tmp_path / "out", ["json", "obj"], flip=True)
    meta = json.loads((tmp_path / "out" / "annotations.json").read_text())["metadata"]
    assert meta["flip_averaged"] == {"prnet": True}
    obj = next((tmp_path / "out" / "obj" / "prnet").glob("*.obj")).read_text()
    prnet = create("prnet")
    if prnet.dense_flip is None:
        pytest.skip("this prnet's UV layout has no texel mirror (the first 64x64 face-model layout)")
    n_dense = len(prnet.dense_flip)
    assert sum(line.startswith("v ") for line in obj.splitlines()) == n_dense


class _HidesEverything:
    """A stand-in visibility model (engine/visibility_model.VisibilityModel's interface) that calls every landmark
    hidden and records the crops it was given."""

    def __init__(self) -> None:
        self.crops: list[np.ndarray] = []

    def predict(self, terms, crops, points):
        self.crops.append(np.asarray(crops))
        return np.zeros(terms.geometric.shape, bool)


def test_averaged_visibility_goes_through_the_methods_visibility_model():
    """Flip averaging recomputes visibility from the averaged points with the wrapped method's fitted visibility
    model and the original crop, not the bare geometric test (the overlay and exports read it)."""
    inner = _Asymmetric()
    inner.visibility_model = _HidesEverything()
    crop = _marked_crop()
    r = FlipAveraged(inner).align(crop)
    assert not r.visible.any()
    assert len(inner.visibility_model.crops) == 1 and np.array_equal(inner.visibility_model.crops[0][0], crop)
