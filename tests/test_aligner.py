"""engine.FaceAligner: whole images, a folder and a video equal to ``annotate`` (0.01 px); colour order; clear
errors for wrong input, and for a whole image passed to Method.align."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from engine.paths import PROJECT_ROOT
from tests.support.annotated_clip import METHOD, annotated_clip, clip_path, read_annotate_csv

NAMES = ("image00002.jpg", "image00006.jpg", "image00010.jpg")


@pytest.fixture(scope="module")
def aligner():
    from engine import FaceAligner

    fa = FaceAligner(METHOD)
    yield fa
    fa.close()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, dev_dir):
    """Three dev images and a two-face mosaic of two of them (so "every face" is checked too)."""
    d = tmp_path_factory.mktemp("images")
    imgs = [cv2.imread(str(dev_dir / "images" / n)) for n in NAMES]
    for n, img in zip(NAMES, imgs):
        cv2.imwrite(str(d / n.replace(".jpg", ".png")), img)
    cv2.imwrite(str(d / "pair.png"), np.hstack([imgs[0], imgs[1]]))
    return d


@pytest.fixture(scope="module")
def folder_annotation(tmp_path_factory, image_folder):
    out = tmp_path_factory.mktemp("annotate_images")
    r = subprocess.run([sys.executable, "main.py", "annotate", str(image_folder), "--method", METHOD, "--out",
                        str(out), "--formats", "csv"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return read_annotate_csv(out / "annotations.csv")


def test_wrong_input_says_what_is_wrong(aligner):
    img = np.zeros((200, 200, 3), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        aligner(img.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\).*\(200, 200, 2\)"):
        aligner(img[..., :2])
    with pytest.raises(ValueError, match="too small"):
        aligner(img[:8, :8])
    with pytest.raises(TypeError, match="numpy array"):
        aligner([[0, 1]])
    with pytest.raises(ValueError, match="'bgr' or 'rgb'"):
        aligner(img, color="hsv")
    assert aligner(img) == []   # a valid image without a face: no faces, no error


def test_a_whole_image_into_method_align_names_the_fix(aligner, dev_dir):
    img = cv2.imread(str(dev_dir / "images" / NAMES[0]))
    with pytest.raises(ValueError, match=r"120x120.*\(450, 450, 3\).*FaceAligner") as e:
        aligner.method.align(img)
    assert "INVALID_ARGUMENT" not in str(e.value)


def test_every_image_equals_annotate(aligner, image_folder, folder_annotation):
    files = sorted(image_folder.iterdir())
    for index, path in enumerate(files):
        want = [v for (f, _), v in sorted(folder_annotation.items()) if f == index]
        faces = aligner(cv2.imread(str(path)))
        assert len(faces) == len(want) >= 1, path.name
        for face, ref in zip(faces, want):
            np.testing.assert_allclose(face.landmarks[:, :2], ref["xy"], atol=0.01, err_msg=path.name)
            np.testing.assert_array_equal(face.visible, ref["visible"].astype(bool))
            np.testing.assert_allclose(face.pose, ref["pose"], atol=5e-3)  # CSV: 5 decimals of radians
            assert face.landmarks.shape == (68, 3) and face.mesh.shape == (468, 3) and face.box.shape == (4,)
    assert sum(1 for f, _ in folder_annotation if f == files.index(image_folder / "pair.png")) >= 2


def test_a_folder_equals_annotate_face_ids_included(aligner, image_folder, folder_annotation):
    got = {}
    for res in aligner.frames(str(image_folder)):
        for f in res.faces:
            got[(res.index, f.face_id)] = f.results[METHOD].landmarks[:, :2]
    assert set(got) == set(folder_annotation)
    for key, ref in folder_annotation.items():
        np.testing.assert_allclose(got[key], ref["xy"], atol=0.01)


def test_rgb_input_is_read_as_rgb(aligner, image_folder):
    bgr = cv2.imread(str(image_folder / "pair.png"))
    want = aligner(bgr)
    got = aligner(np.ascontiguousarray(bgr[..., ::-1]), color="rgb")
    assert len(got) == len(want) >= 2
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
    assert aligner(str(image_folder / "pair.png"))[0].landmarks.tolist() == want[0].landmarks.tolist()


def test_track_over_the_clip_equals_annotate(aligner, tmp_path_factory):
    ref = annotated_clip(tmp_path_factory.mktemp("ref"))
    cap = cv2.VideoCapture(str(clip_path()))

    def frames():
        while True:
            ok, f = cap.read()
            if not ok:
                return
            yield f

    got = {}
    for i, faces in enumerate(aligner.track(frames())):
        for f in faces:
            got[(i, f.face_id)] = f.landmarks[:, :2]
    cap.release()
    assert set(got) == set(ref)
    for key, want in ref.items():
        np.testing.assert_allclose(got[key], want["xy"], atol=0.01, err_msg=f"frame {key[0]} face {key[1]}")


def test_flip_equals_annotate_flip(image_folder, tmp_path):
    """``FaceAligner(..., flip=True)`` is annotate --flip on the same images, and differs from the plain result."""
    from engine import FaceAligner

    out = tmp_path / "flip"
    r = subprocess.run([sys.executable, "main.py", "annotate", str(image_folder), "--method", METHOD, "--out",
                        str(out), "--formats", "csv", "--flip"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    want = read_annotate_csv(out / "annotations.csv")
    files = sorted(image_folder.iterdir())
    with FaceAligner(METHOD, flip=True) as flipped, FaceAligner(METHOD) as plain:
        path = files[0]
        faces = flipped(cv2.imread(str(path)))
        ref = [v for (f, _), v in sorted(want.items()) if f == 0]
        assert len(faces) == len(ref) >= 1
        np.testing.assert_allclose(faces[0].landmarks[:, :2], ref[0]["xy"], atol=0.01)
        assert np.abs(plain(cv2.imread(str(path)))[0].landmarks[:, :2] - faces[0].landmarks[:, :2]).max() > 0.01
