"""Flip averaging for any method: align the crop and its mirror image, mirror the second result back, average.

A horizontal mirror of the crop is a mirror of the face: x becomes (W - 1) - x about the crop's centre column
(pixel centres at integers), depth is unchanged, and each point's label moves to its mirror twin (the 68-point
permutation ``FaceModel.lmk_flip``, the mesh's own ``FaceModel.mesh_flip``, a dense surface's where its layout
has one: ``Method.dense_flip``). The pose mirrors as diag(-1, 1, 1) R diag(-1, 1, 1): with this project's
R = Rz(roll) Ry(-yaw) Rx(pitch) that is yaw -> -yaw, roll -> -roll, pitch unchanged.

The averaged result is mirror-equivariant by construction (the flip-averaged result of a mirrored crop is exactly
the mirror of the flip-averaged result), whatever the network's own asymmetry. Visibility is recomputed from the
averaged geometry by the same shared test every method's tail runs, so the hidden landmarks always agree with
the mesh that is drawn.

Both crops go through the wrapped method's ``align_batch`` together (one network call of 2B crops for the ONNX
methods). Cost: the result's ``timings`` keep the plain pass's share under the method's own stage names and add
``flip``: the mirrored pass's share plus mirroring and averaging, so ``total`` is the whole cost per face and the
app's status bar and speed panel show what flip averaging adds.
"""
from __future__ import annotations

import time

import numpy as np

from engine.facemodel import N_MESH, FaceModel, load_face_model
from engine.geometry.rotation import euler_to_matrix, matrix_to_euler, nearest_rotation
from engine.methods.base import Method, MethodInfo, NoFaceError
from engine.result import AlignmentResult

# diag(-1, 1, 1) R diag(-1, 1, 1) as an element-wise sign pattern: a mirror of x on both sides of a rotation
_MIRROR_X_BOTH_SIDES = np.array([[1.0, -1.0, -1.0], [-1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])


def mirror_crop(crop_bgr: np.ndarray) -> np.ndarray:
    """The crop mirrored left-right (a contiguous copy: the runtimes read it as a plain array)."""
    return np.ascontiguousarray(crop_bgr[:, ::-1])


def mirror_points(points: np.ndarray, permutation: np.ndarray | None, width: int) -> np.ndarray:
    """(N, 3) crop-pixel points of a mirrored crop, seen in the original crop: x -> (width - 1) - x, each point
    relabelled as its mirror twin (``permutation[i]`` is point i's twin; None keeps the order)."""
    out = np.array(points, np.float64, copy=True)
    if permutation is not None:
        out = out[permutation]
    out[:, 0] = (width - 1) - out[:, 0]
    return out


def mirror_pose(pose: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) degrees of the mirrored face: yaw and roll change sign."""
    yaw, pitch, roll = np.asarray(pose, np.float64)
    return np.array([-yaw, pitch, -roll])


def mirror_rotation(r: np.ndarray) -> np.ndarray:
    """diag(-1, 1, 1) R diag(-1, 1, 1): the rotation of the mirrored face (model frame)."""
    return np.asarray(r, np.float64) * _MIRROR_X_BOTH_SIDES


def average_pose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The mean of two (yaw, pitch, roll) poses as rotations (the chordal mean: the rotation nearest the mean of
    the two matrices), so it is right across +-180 degrees and near the +-90 degree yaw lock where averaging the
    angles one by one is not."""
    return matrix_to_euler(nearest_rotation(euler_to_matrix(*a) + euler_to_matrix(*b)))


def texel_mirror_permutation(valid: np.ndarray) -> np.ndarray:
    """Mirror permutation of a UV map's valid texels (row-major order) for a UV layout that is mirror-symmetric in
    u (texel column c <-> S - 1 - c): index k's twin is the valid texel in the same row, mirrored column.
    ValueError when ``valid`` itself is not mirror-symmetric (the layout has no such permutation)."""
    valid = np.asarray(valid, bool)
    if not np.array_equal(valid, valid[:, ::-1]):
        raise ValueError("the UV map's valid texels are not mirror-symmetric: no texel mirror permutation")
    position = np.full(valid.size, -1, np.int64)
    flat = np.flatnonzero(valid.ravel())
    position[flat] = np.arange(len(flat))
    rows, cols = np.divmod(flat, valid.shape[1])
    return position[rows * valid.shape[1] + (valid.shape[1] - 1 - cols)]


def unmirror_result(r: AlignmentResult, fm: FaceModel, width: int,
                    dense_flip: np.ndarray | None = None) -> AlignmentResult:
    """A result computed on the mirrored crop, expressed for the original crop: points mirrored and relabelled,
    visibility relabelled, pose mirrored. A dense surface without a mirror permutation is dropped (its points
    cannot be matched to the original's)."""
    if r.frame != "crop":
        raise ValueError("unmirror_result needs a result in crop pixels (before to_image)")
    frontal = None
    if r.shape_frontal is not None:  # pose-free, centred: mirror about x = 0
        frontal = np.array(r.shape_frontal, np.float64)[fm.mesh_flip] * np.array([-1.0, 1.0, 1.0])
    return AlignmentResult(
        landmarks=mirror_points(r.landmarks, fm.lmk_flip, width), visible=np.asarray(r.visible)[fm.lmk_flip],
        mesh=mirror_points(r.mesh, fm.mesh_flip, width), pose=mirror_pose(r.pose), confidence=r.confidence,
        timings=dict(r.timings),
        dense=None if r.dense is None or dense_flip is None else mirror_points(r.dense, dense_flip, width),
        dense_faces=r.dense_faces if dense_flip is not None else None, method=r.method, frame=r.frame,
        shape_frontal=frontal,
        normal_visibility=None if r.normal_visibility is None else np.asarray(r.normal_visibility)[fm.lmk_flip])


def _mean(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None or b is None:
        return a if b is None else b
    return (np.asarray(a, np.float64) + np.asarray(b, np.float64)) / 2.0


class FlipAveraged(Method):
    """Any method with flip averaging: ``create(name, flip=True)`` or ``with_flip(method, True)``."""
    flip = True

    def __init__(self, inner: Method) -> None:
        if isinstance(inner, FlipAveraged):
            raise ValueError("the method is already flip-averaged")
        self.inner = inner
        self.fm = load_face_model()
        self.backend = inner.backend
        self.provider = inner.provider

    # the wrapped method's declaration: the same name, weights and registry entry
    @property
    def info(self) -> MethodInfo:  # type: ignore[override]
        return self.inner.info

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def weights(self) -> str:
        return self.inner.weights

    def __getattr__(self, attr: str) -> object:
        # only reached for attributes the wrapper lacks (the inner method's model, quantized flag, layout...)
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def align(self, crop_bgr: np.ndarray) -> AlignmentResult:
        r = self.align_batch([crop_bgr])[0]
        if r is None:
            raise NoFaceError("the method found no face in the crop or its mirror")
        return r

    def align_batch(self, crops: list[np.ndarray]) -> list[AlignmentResult | None]:
        """Each crop and its mirror in one batch of the wrapped method, then mirrored back and averaged. Where
        the method finds a face in only one of the two, that one's result is returned (mirrored back if need be)
        and its timings carry no ``flip`` averaging."""
        if len(crops) == 0:
            return []
        n = len(crops)
        t0 = time.perf_counter()
        both = self.inner.align_batch(list(crops) + [mirror_crop(c) for c in crops])
        t1 = time.perf_counter()
        plain, mirrored = both[:n], both[n:]
        dense_flip = getattr(self.inner, "dense_flip", None)
        out: list[AlignmentResult | None] = []
        pairs: list[tuple[int, AlignmentResult, AlignmentResult]] = []
        for k, (crop, a, b) in enumerate(zip(crops, plain, mirrored)):
            back = None if b is None else unmirror_result(b, self.fm, crop.shape[1], dense_flip)
            if a is None or back is None:
                out.append(a if back is None else back)
                continue
            out.append(None)
            pairs.append((k, a, back))
        if pairs:
            merged = self._average([a for _, a, _ in pairs], [b for _, _, b in pairs],
                                   np.stack([crops[k] for k, _, _ in pairs]))
            for (k, _, _), r in zip(pairs, merged):
                out[k] = r
        t2 = time.perf_counter()
        merge_ms = (t2 - t1) * 1e3 / n
        for k, r in enumerate(out):
            if r is None:
                continue
            plain_t = plain[k].timings if plain[k] is not None else {}
            mirror_t = mirrored[k].timings if mirrored[k] is not None else {}
            timings = dict(plain_t) if plain[k] is not None else {s: 0.0 for s in mirror_t if s != "total"}
            # the extra cost per face: the mirrored pass's share of the batch, then mirroring and averaging
            timings["flip"] = mirror_t.get("total", 0.0) + merge_ms
            timings["total"] = plain_t.get("total", 0.0) + timings["flip"]
            r.timings = timings
        return out

    def _average(self, a: list[AlignmentResult], b: list[AlignmentResult],
                 crops: np.ndarray | None = None) -> list[AlignmentResult]:
        """Mean landmarks, mesh, pose (as rotations), dense surface, frontal shape and normal visibility of
        paired results (b already mirrored back); visibility recomputed from the averaged points in one batch,
        through the wrapped method's visibility model (engine/visibility_model.py) on the (B, 120, 120, 3)
        ``crops`` when it has one and they are given, as the method's own tail does."""
        from engine.visibility import landmark_visibility_batch

        landmarks = (np.stack([r.landmarks for r in a]) + np.stack([r.landmarks for r in b])) / 2.0
        mesh = (np.stack([r.mesh for r in a]) + np.stack([r.mesh for r in b])) / 2.0
        points = np.concatenate([mesh, landmarks], axis=1)
        normal_z = None
        if all(r.normal_visibility is not None for r in a + b):
            normal_z = (np.stack([r.normal_visibility for r in a]) + np.stack([r.normal_visibility for r in b])) / 2
        visible = landmark_visibility_batch(self.fm, points, normal_z=normal_z,
                                            model=getattr(self.inner, "visibility_model", None), crops=crops)
        merged = []
        for i, (ra, rb) in enumerate(zip(a, b)):
            dense = _mean(ra.dense, rb.dense)
            merged.append(AlignmentResult(
                landmarks=points[i, N_MESH:], visible=visible[i], mesh=points[i, :N_MESH],
                pose=average_pose(ra.pose, rb.pose), confidence=(ra.confidence + rb.confidence) / 2.0,
                dense=dense, dense_faces=ra.dense_faces if dense is not None else None, method=ra.method,
                frame=ra.frame, shape_frontal=_mean(ra.shape_frontal, rb.shape_frontal),
                normal_visibility=_mean(ra.normal_visibility, rb.normal_visibility)))
        return merged

    def close(self) -> None:
        self.inner.close()


def with_flip(method: Method, on: bool) -> Method:
    """``method`` with flip averaging on or off, reusing its loaded model (no reload): wraps a plain method,
    unwraps a flip-averaged one, returns it unchanged when it already is as asked."""
    if on:
        return method if isinstance(method, FlipAveraged) else FlipAveraged(method)
    return method.inner if isinstance(method, FlipAveraged) else method
