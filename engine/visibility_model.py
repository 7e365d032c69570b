"""A method's visibility model: the shared normals + z-buffer test recalibrated on AFLW's human visibility flags.

Per landmark (brows, eyes, nose, mouth and the chin) one logistic regression decides "visible" from
  - the z of the mean face's normal at the landmark turned by the face's rotation (``turned_z``),
  - the z of the landmark's normal on the method's own mesh (``local_z``; MT-CNN 3D's N_c . N_i),
  - the shared test's decision (``geometric``),
  - the image: the logit of "visible" that a small CNN (engine/visibility_patches) reads from a colour patch of the
    crop around the landmark's AFLW site, and around the mirror site on the other side of the face. The
    annotators also hide points under hair, hands or glasses (on aflw_train 24% of the outer brow corners of faces
    within 30 degrees of frontal are flagged hidden), which no normal or z-buffer can see.
Each landmark's model is fitted to the flag of the AFLW point nearest to it in its group (``nearest_flags``: its
twin where it has one, e.g. the eye's centre for the eyelid points, the mouth's centre for the middle of the lips),
per method on its own outputs for training-split crops (``python -m engine.evaluation.visibility_fit --methods
NAME``; the CNN, shared by all methods, on other training-split crops), and ships as weights/visibility_NAME.npz
with the CNN's ONNX export. The jaw contour except the chin has no human flag near it, so it
keeps the geometric test. Without the file a method keeps the geometric test everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from engine.paths import weights_path
from engine.visibility import VisibilityTerms

GEOMETRY = ("bias", "turned_z", "local_z", "geometric", "turned_z^2", "local_z^2", "turned_z*geometric")
# the patch CNN's logit at the landmark's site, at the mirror site (the other side of the face; the site itself on
# the midline), and the site's logit against the geometry
IMAGE = ("site_logit", "mirror_logit", "site_logit*turned_z", "site_logit*geometric")
FEATURES = GEOMETRY + IMAGE
MODEL_GROUPS = ("brows", "eyes", "nose", "mouth", "chin")
_GROUP_LANDMARKS = {"brows": range(17, 27), "eyes": range(36, 48), "nose": range(27, 36), "mouth": range(48, 68),
                    "chin": (8,)}


def model_file(method: str) -> Path:
    return weights_path(f"visibility_{method}.npz")


# where each of AFLW's 21 points sits among the 68 (a landmark, or the mean of several: eye and mouth centres), by
# group; the ears have no place on the 68-point face
_FLAG_SITES = {"brows": {0: (17,), 1: (19,), 2: (21,), 3: (22,), 4: (24,), 5: (26,)},
               "eyes": {6: (36,), 7: (37, 38, 40, 41), 8: (39,), 9: (42,), 10: (43, 44, 46, 47), 11: (45,)},
               "nose": {13: (31,), 14: (30,), 15: (35,)},
               "mouth": {17: (48,), 18: (62, 66), 19: (54,)},
               "chin": {20: (8,)}}


def nearest_flags(mean_landmarks: np.ndarray) -> np.ndarray:
    """(68,) the AFLW point whose flag each landmark learns from: the nearest site of its group on the frontal
    mean face (x, y of ``mean_landmarks`` (68, 3)); -1 for the jaw contour."""
    out = np.full(68, -1, np.int64)
    xy = np.asarray(mean_landmarks)[:, :2]
    for group, sites in _FLAG_SITES.items():
        flags = np.array(list(sites))
        centres = np.stack([xy[list(members)].mean(0) for members in sites.values()])
        for i in _GROUP_LANDMARKS[group]:
            out[i] = flags[np.argmin(np.linalg.norm(centres - xy[i], axis=1))]
    return out


def landmark_groups() -> np.ndarray:
    """(68,) index into MODEL_GROUPS of each landmark's group, -1 for the jaw contour the geometric test keeps."""
    g = np.full(68, -1, np.int64)
    for k, name in enumerate(MODEL_GROUPS):
        g[list(_GROUP_LANDMARKS[name])] = k
    return g


_SIDES: list[np.ndarray] = []


def landmark_sides() -> np.ndarray:
    """(68,) -1 for the landmarks on the image-left half of the mean face, +1 for the rest (midline included)."""
    if not _SIDES:
        from engine.facemodel import N_MESH, load_face_model

        _SIDES.append(np.where(load_face_model().mean[N_MESH:N_MESH + 68, 0] < -1e-6, -1.0, 1.0))
    return _SIDES[0]


def landmark_sites() -> tuple[np.ndarray, np.ndarray]:
    """(68,) index into engine/visibility_patches.SITE_POINTS of the site each landmark reads (that of the AFLW
    point whose flag it learns from; 0 for the jaw contour, unused) and of its mirror site."""
    from engine.facemodel import N_MESH, load_face_model
    from engine.visibility_patches import MIRROR_OF, SITE_POINTS

    flags = nearest_flags(load_face_model().mean[N_MESH:N_MESH + 68])
    site = np.array([SITE_POINTS.index(int(f)) if f >= 0 else 0 for f in flags])
    mirror = np.array([SITE_POINTS.index(MIRROR_OF.get(SITE_POINTS[k], SITE_POINTS[k])) for k in site])
    return site, mirror


def design(terms: VisibilityTerms, site_logits: np.ndarray,
           sites: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(B, 68, len(FEATURES)) the features of every landmark from the shared test's ``terms`` and the patch CNN's
    (B, 19) ``site_logits`` (engine/visibility_patches)."""
    site, mirror = sites if sites is not None else landmark_sites()
    b = terms.geometric.shape[0]
    g = terms.geometric.astype(np.float64)
    own = site_logits[:, site]
    return np.stack([np.ones((b, 68)), terms.turned_z, terms.local_z, g, terms.turned_z ** 2, terms.local_z ** 2,
                     terms.turned_z * g, own, site_logits[:, mirror], own * terms.turned_z, own * g], -1)


@dataclass(frozen=True)
class VisibilityModel:
    method: str
    coef: np.ndarray       # (68, len(FEATURES)) logistic coefficients of "visible" of each landmark
    groups: np.ndarray     # (68,) landmark -> group, -1: the geometric test
    net: dict              # the patch CNN's arrays (engine/visibility_patches.NET_KEYS), the numpy reference
    net_onnx: bytes        # the same CNN exported to ONNX, what inference runs
    _runner: list = field(default_factory=list, repr=False, compare=False)

    def site_logits(self, crops: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(B, 19) the patch CNN's logit of "visible" at each AFLW site, on (B, 120, 120, 3) ``crops`` around the
        landmarks of (B, 536, 3) crop-pixel ``points``."""
        from engine.visibility_patches import PatchNetRunner, site_patches

        if not self._runner:
            self._runner.append(PatchNetRunner(self.net_onnx))
        return self._runner[0].logits(site_patches(crops, np.asarray(points)[:, 468:]))

    def probability(self, terms: VisibilityTerms, crops: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(B, 68) P(visible) under the model (the jaw contour: 1 or 0 from the geometric test)."""
        x = design(terms, self.site_logits(crops, points), _sites())
        z = np.einsum("blf,lf->bl", x, self.coef)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))
        return np.where(self.groups >= 0, p, terms.geometric.astype(np.float64))

    def predict(self, terms: VisibilityTerms, crops: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(B, 68) bool visible for the faces whose terms these are, from their (B, 120, 120, 3) crops and
        (B, 536, 3) crop-pixel points."""
        return self.probability(terms, crops, points) > 0.5

    def save(self, path: Path, **info) -> None:
        """Write the model (and ``info``: how it was fitted) to ``path``, renamed into place when complete."""
        tmp = path.with_name(f".{path.name}.part")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, method=self.method, coef=self.coef, groups=self.groups,
                                features=np.array(FEATURES), model_groups=np.array(MODEL_GROUPS),
                                **{f"net.{k}": v for k, v in self.net.items()},
                                net_onnx=np.frombuffer(self.net_onnx, np.uint8),
                                **{k: np.asarray(v) for k, v in info.items()})
        tmp.replace(path)


def load_visibility_model(method: str) -> VisibilityModel | None:
    """The method's shipped visibility model, or None (no file): the geometric test."""
    path = model_file(method)
    if not path.exists():
        return None
    z = np.load(path)
    if tuple(z["features"]) != FEATURES or tuple(z["model_groups"]) != MODEL_GROUPS:
        raise ValueError(f"{path} was fitted with other features; re-fit it "
                         f"(python -m engine.evaluation.visibility_fit --methods {method})")
    from engine.visibility_patches import NET_KEYS

    return VisibilityModel(method, z["coef"], z["groups"], {k: z[f"net.{k}"] for k in NET_KEYS},
                           z["net_onnx"].tobytes())


@lru_cache(maxsize=1)
def _sites() -> tuple[np.ndarray, np.ndarray]:
    return landmark_sites()
