"""The frontal view through the precomputed sampling map: the same pixels as the former per-frame implementation,
and the far cheek taken from the mirrored side once it turns away (issue 27)."""
import numpy as np
import pytest

from engine.facemodel import load_face_model
from engine.geometry.frontalize import (MIN_FACING, FrontalSampler, frontal_raster, frontalize,
                                        frontalize_per_pixel)
from engine.geometry.mesh import face_normals


@pytest.fixture(scope="module")
def model():
    fm = load_face_model()
    raster = frontal_raster(fm.mean[:468] * np.array([1.0, -1.0, 1.0]), fm.triangles)
    return fm, raster, FrontalSampler(raster, fm.triangles, 468)


def posed_mesh(fm, yaw_deg: float, size: int = 480) -> np.ndarray:
    """The mean shape turned by ``yaw_deg`` about the vertical axis, in the pixel frame of a size x size image."""
    v = fm.mean[:468] * np.array([1.0, -1.0, 1.0])
    v = v - v.mean(0)
    a = np.deg2rad(yaw_deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    v = v @ rot.T
    v = v * (0.5 * size / np.ptp(v[:, :2], axis=0).max())
    v[:, :2] += size / 2
    return v


def textured_image(size: int = 480, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    import cv2

    return cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize("yaw", [0.0, 25.0, 40.0, -55.0])
def test_sampler_equals_the_per_pixel_implementation(model, yaw):
    fm, raster, sampler = model
    img, mesh = textured_image(), posed_mesh(fm, yaw)
    old = frontalize_per_pixel(img, mesh, fm.triangles, raster)
    new = sampler(img, mesh, min_facing=0.0)
    assert new.shape == old.shape == (raster.size, raster.size, 3)
    diff = np.abs(new.astype(int) - old.astype(int))
    # float32 source positions both ways; a sum in another order may land a bilinear weight one level apart
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert np.array_equal(frontalize(img, mesh, fm.triangles, raster), new)


def pixel_facing(fm, raster, mesh):
    """Per frontal pixel: the cosine between its triangle's normal (in the posed mesh) and the view; -1 outside."""
    n = face_normals(mesh, fm.triangles)
    cos = n[:, 2] / np.linalg.norm(n, axis=1)
    tri = raster.tri_id
    return np.where(tri >= 0, cos[np.where(tri >= 0, tri, 0)], -1.0)


def test_far_cheek_filled_from_the_mirrored_side_at_40_degrees(model):
    fm, raster, sampler = model
    img, mesh = textured_image(seed=1), posed_mesh(fm, 40.0)
    plain = sampler(img, mesh, min_facing=0.0)
    filled = sampler(img, mesh)
    facing = pixel_facing(fm, raster, mesh)
    mirror = facing[:, raster.mirror_x]
    face = raster.tri_id >= 0
    # squarely seen pixels are the face's own, as before
    square = face & (facing >= MIN_FACING)
    assert np.array_equal(filled[square], plain[square])
    # turned-away pixels whose mirror is seen are the mirrored pixel
    away = face & (facing <= 0) & (mirror > 0)
    assert np.array_equal(filled[away], plain[:, raster.mirror_x][away])
    # the oblique band of the far cheek (a real part of the face, not a few pixels) is blended with the mirror
    band = face & (facing > 0) & (facing < MIN_FACING) & (mirror > facing)
    assert band.sum() > 0.03 * face.sum()
    changed = np.abs(filled[band].astype(int) - plain[band].astype(int)).sum(-1) > 0
    assert changed.mean() > 0.5
    # more weight where the face turns further away: the most oblique pixels are nearest the mirrored ones
    most = band & (facing < 0.25 * MIN_FACING)
    least = band & (facing > 0.75 * MIN_FACING)
    to_mirror = np.abs(filled.astype(int) - plain[:, raster.mirror_x].astype(int)).sum(-1)
    to_own = np.abs(filled.astype(int) - plain.astype(int)).sum(-1)
    share = to_own / np.maximum(to_own + to_mirror, 1)
    assert share[most].mean() > share[least].mean()


def test_frontal_view_barely_changes_without_yaw(model):
    """Facing the camera, both halves are seen alike: the blend leaves the view almost as it was."""
    fm, raster, sampler = model
    img, mesh = textured_image(seed=2), posed_mesh(fm, 0.0)
    diff = np.abs(sampler(img, mesh).astype(int) - sampler(img, mesh, min_facing=0.0).astype(int)).sum(-1)
    assert (diff > 0).mean() < 0.05
