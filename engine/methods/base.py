"""The method interface and the registry (data only: ``create()`` lives in engine/methods/factory.py). A method
takes a 120x120 BGR crop and returns an AlignmentResult.

Adding a method costs one package under engine/methods/: its ``__init__.py`` defines the ``Method`` subclass and
declares it once as ``METHOD = MethodInfo(...)`` (name, description, weights file, training recipe module, ONNX
output names). A package may also declare ``VARIANTS = (MethodInfo(...), ...)``: other rows of the same method
under their own names and weights (CPRFA's unfused model, ``cprfa-unfused``, beside the CPR-H ``cprfa``), each with
its own ``Method`` subclass (the declaration sets the class's ``info``). ``registry()`` discovers every such
package with pkgutil; the CLI, the app, the trainer (engine/training/recipes.py) and the exporter all read that one
declaration.
"""
from __future__ import annotations

import importlib
import pkgutil
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from engine.facemodel import N_MESH, FaceModel
from engine.geometry.rotation import best_rotation, centred_source, matrix_to_euler, matrix_to_euler_batch
from engine.result import AlignmentResult
from engine.visibility import landmark_visibility, landmark_visibility_batch


# the timing stage of a chained method's first network, whose output feeds its own graph (CPRFA's CPR-H: mtcnn3d's
# landmarks); the result's ``timings`` hold it beside ``network``, and the pipeline and bench count both
LANDMARK_STAGE = "landmark detector"


class NoFaceError(Exception):
    """The method looked at the crop and found no face in it (MediaPipe's detector can say so). Callers treat the
    face as not aligned by this method; every other exception is a real failure and propagates."""


class MethodUnavailable(FileNotFoundError):
    """The method is registered but cannot run here: its weights file is missing."""


def quantized_name(weights: str) -> str:
    """weights/NAME.onnx -> NAME.int8.onnx: the file of a method's INT8 variant."""
    if not weights.endswith(".onnx"):
        raise ValueError(f"not an ONNX weights file: {weights!r}")
    return weights[: -len(".onnx")] + ".int8.onnx"


@dataclass(frozen=True)
class Int8Variant:
    """A method's INT8 ONNX variant, declared by the method (``MethodInfo.int8``): ``python main.py quantize NAME``
    writes it (engine/quantize.py), ``create(name, quantized=True)`` loads it."""
    keep_float: tuple[str, ...] = ()   # graph nodes the quantizer leaves in float (their 8-bit error costs too much)


@dataclass(frozen=True)
class MethodInfo:
    """A method's one declaration, ``METHOD`` in its package's ``__init__.py``."""
    name: str
    description: str
    factory: type[Method]
    weights: str                       # file name under weights/ the method cannot run without
    recipe: str | None = None          # module holding ``RECIPE`` (torch; training and export only)
    outputs: tuple[str, ...] = ()      # ONNX outputs the decode reads (the export writes at least these)
    obtain: str = ""                   # how to make the weights when there is no recipe (a command)
    int8: Int8Variant | None = None    # its INT8 variant, if it has one (ONNX methods)
    # where the reported head rotation comes from (engine/geometry/head_pose.py POSE_SOURCES; chosen on the
    # training split by `python main.py pose-study`, engine/methods/pose_output.py)
    pose_source: str = "network"

    def __post_init__(self) -> None:
        # the class reads its name and weights from here, so they are written nowhere else
        self.factory.info = self

    @property
    def weights_path(self) -> Path:
        from engine.paths import weights_path

        return weights_path(self.weights)

    @property
    def available(self) -> bool:
        return self.weights_path.exists()

    def unavailable_reason(self) -> str | None:
        """Why the method cannot run here, or None when it can."""
        if self.available:
            return None
        how = self.obtain or (f"python main.py train {self.name}" if self.recipe else "")
        how = f"make it with `{how}`" if how else "install it"
        return f"method {self.name!r} has no weights: {self.weights_path} is missing ({how})"


@dataclass
class DecodeResult:
    """What a method's decode makes of one face's network outputs."""
    points: np.ndarray                  # (536, 3) crop pixels: 468 mesh vertices then the 68 landmarks
    pose: np.ndarray                    # (3,) yaw, pitch, roll in degrees
    dense: np.ndarray | None = None     # (M, 3) crop pixels: a denser surface (PRNet's position map), if any
    shape: np.ndarray | None = None     # (536, 3) the pose-free model-frame shape (3DSTN's warp), if the method has one
    # (3, 3) model-frame rotation of the best similarity from the mean shape to ``points`` where the decode took
    # its pose from it (``rotations_from_points_batch``): the visibility test reuses it instead of a second SVD
    rotation: np.ndarray | None = None
    # (68,) z of each landmark's unit anchor normal on ``points``' mesh where the method computes it anyway
    # (MT-CNN 3D's N_c . N_i): the visibility test's facing decision for the inner landmarks reuses it
    normal_z: np.ndarray | None = None


class Method(ABC):
    info: ClassVar[MethodInfo]   # set by the package's METHOD declaration
    backend: str = ""         # "onnxruntime", "mediapipe"
    provider: str = "CPUExecutionProvider"
    flip: bool = False        # True on a flip-averaged method (engine/methods/flip.py)
    # mirror permutation of ``AlignmentResult.dense``'s points where the dense layout has one (flip averaging)
    dense_flip: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def weights(self) -> str:
        return self.info.weights

    @abstractmethod
    def align(self, crop_bgr: np.ndarray) -> AlignmentResult:
        """Align the face in a 120x120 BGR crop framed by the shared crop policy. Raises ``NoFaceError`` when the
        method finds no face in it."""

    def align_batch(self, crops: list[np.ndarray]) -> list[AlignmentResult | None]:
        """Align every face of a frame (None where the method finds no face). One at a time here; the ONNX
        methods run the whole batch through one network call and one vectorised tail."""
        results: list[AlignmentResult | None] = []
        for crop in crops:
            try:
                results.append(self.align(crop))
            except NoFaceError:
                results.append(None)
        return results

    def close(self) -> None:
        pass


def check_crop(crop_bgr: np.ndarray, size: int = 120) -> None:
    """A ValueError that says what to do when ``crop_bgr`` is not a (size, size, 3) uint8 crop: a whole image
    goes through ``engine.FaceAligner`` (detector, tracker, crop policy), not straight into ``align``."""
    shape = getattr(crop_bgr, "shape", None)
    if shape == (size, size, 3) and getattr(crop_bgr, "dtype", None) == np.uint8:
        return
    what = f"shape {shape}, dtype {getattr(crop_bgr, 'dtype', type(crop_bgr).__name__)}"
    raise ValueError(f"align takes a {size}x{size} uint8 BGR crop framed by the crop policy, got {what}; for a "
                     f"whole image use engine.FaceAligner(name)(image), which detects and crops every face")


_REGISTRY: dict[str, MethodInfo] = {}


def _discover() -> dict[str, MethodInfo]:
    """Every subpackage of engine.methods that declares ``METHOD``, by name."""
    import engine.methods as pkg

    found: dict[str, MethodInfo] = {}
    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.ispkg:
            continue
        module = importlib.import_module(f"{pkg.__name__}.{mod.name}")
        info = getattr(module, "METHOD", None)
        if info is None:
            continue
        for what, each in [("METHOD", info)] + [("VARIANTS", v) for v in getattr(module, "VARIANTS", ())]:
            if not isinstance(each, MethodInfo):
                raise TypeError(f"engine.methods.{mod.name}.{what} holds {type(each).__name__}, not MethodInfo")
            if each.name in found:
                raise ValueError(f"method name {each.name!r} is declared twice (engine.methods.{mod.name} and "
                                 f"{found[each.name].factory.__module__})")
            found[each.name] = each
    return found


def registry() -> dict[str, MethodInfo]:
    """Name -> declaration of every method package (available or not: see ``MethodInfo.available``)."""
    if not _REGISTRY:
        _REGISTRY.update(_discover())
    return dict(_REGISTRY)


def available_methods() -> list[str]:
    """Names of the methods whose weights are present, sorted."""
    return [n for n, i in sorted(registry().items()) if i.available]


def _rotation_from_mean(fm: FaceModel, pts: np.ndarray) -> np.ndarray:
    """Rotation of the best similarity taking the mean shape onto (N, 3) right-handed, y-up ``pts``."""
    n = min(len(pts), fm.n_points)
    return best_rotation(fm.mean[:n], pts[:n])


def frontal_shape(fm: FaceModel, shape: np.ndarray) -> np.ndarray:
    """(468, 3) a model-frame shape with its residual rotation from the mean removed, in the pixel frame's axes
    (y down): the subject's own face seen from the front."""
    mesh = np.asarray(shape[:N_MESH], np.float64)
    mesh = (mesh - mesh.mean(0)) @ _rotation_from_mean(fm, mesh)
    return mesh * np.array([1.0, -1.0, 1.0])


_CENTRED_MEAN: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _centred_mean(fm: FaceModel, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``centred_source`` of the mean shape's first n points, computed once per face model."""
    key = (id(fm.mean), n)
    if key not in _CENTRED_MEAN:
        _CENTRED_MEAN[key] = centred_source(fm.mean[:n])
    return _CENTRED_MEAN[key]


def frontal_shape_batch(fm: FaceModel, shapes: np.ndarray) -> np.ndarray:
    """(B, 468, 3) ``frontal_shape`` of (B, 536 or 468, 3) model-frame shapes: one batched SVD."""
    from engine.geometry.compiled import best_rotations_compiled  # numba: imported on first use only

    mesh = np.asarray(shapes, np.float64)[:, :N_MESH]
    rot = best_rotations_compiled(_centred_mean(fm, N_MESH), mesh)
    mesh = mesh - (np.ones(N_MESH) / N_MESH) @ mesh[:, None, :, :]
    return (mesh @ rot) * np.array([1.0, -1.0, 1.0])


def pose_from_points(fm: FaceModel, points: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) of (536 or 468, 3) pixel-frame points: rotation of the best similarity from the mean.

    Used by methods that predict points rather than a camera (and by MediaPipe).
    """
    # back to a right-handed, y-up frame
    return matrix_to_euler(_rotation_from_mean(fm, np.asarray(points, np.float64) * np.array([1.0, -1.0, 1.0])))


def rotations_from_points_batch(fm: FaceModel, points: np.ndarray) -> np.ndarray:
    """(B, 3, 3) model-frame rotations of the best similarities from the mean to (B, N, 3) pixel-frame points:
    what ``pose_from_points_batch`` turns into angles."""
    from engine.geometry.compiled import best_rotations_compiled  # numba: imported on first use only

    pts = np.asarray(points, np.float64) * np.array([1.0, -1.0, 1.0])
    n = min(pts.shape[1], fm.n_points)
    return best_rotations_compiled(_centred_mean(fm, n), pts[:, :n])


def pose_from_points_batch(fm: FaceModel, points: np.ndarray) -> np.ndarray:
    """(B, 3) ``pose_from_points`` of (B, N, 3) points: one batched SVD."""
    return matrix_to_euler_batch(rotations_from_points_batch(fm, points))


def finish_from_points(fm: FaceModel, points: np.ndarray, pose: np.ndarray, t0: float, timings: dict,
                       name: str, confidence: float = 1.0, dense: np.ndarray | None = None,
                       visibility_model=None, crop: np.ndarray | None = None) -> AlignmentResult:
    """Shared tail of every method: landmark visibility from its own mesh (through the method's
    ``visibility_model`` and its ``crop`` where it has one, engine/visibility_model.py), timings, the result."""
    t1 = time.perf_counter()
    if visibility_model is not None and crop is not None:
        vis = landmark_visibility_batch(fm, points[None], model=visibility_model, crops=crop[None])[0]
    else:
        vis = landmark_visibility(fm, points)
    timings["visibility"] = (time.perf_counter() - t1) * 1e3
    timings["total"] = (time.perf_counter() - t0) * 1e3
    return AlignmentResult(landmarks=points[N_MESH:].copy(), visible=vis, mesh=points[:N_MESH].copy(),
                           pose=np.asarray(pose, np.float64), confidence=confidence, timings=timings,
                           dense=dense, method=name)
