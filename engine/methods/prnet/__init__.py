"""`prnet`: UV position-map regression (Feng et al., ECCV 2018) in the face model's UV layout.

The network outputs an S x S map of x, y, z (crop pixels / 120); the 468 mesh vertices and 68 landmarks are read
from it at their UVs, and the whole map is offered as the densest surface (``AlignmentResult.dense``, triangulated
over the UV grid in ``dense_faces``).

The map's layout is a property of the weights: an ONNX file whose metadata says ``uv_layout = bfm-noneck`` holds
the full BFM face in its own UV (engine/methods/prnet/dense.py; the points come from the graph's ``points`` output,
the dense surface is every valid texel of the declared mask); a file without it holds the first 64x64 face-model
layout (engine/geometry/uvmap.py), read here by bilinear sampling.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from engine.geometry.rotation import matrix_to_euler_batch
from engine.methods.base import DecodeResult, Int8Variant, MethodInfo, pose_from_points, rotations_from_points_batch
from engine.methods.onnx_method import OnnxMethod

MAP_SIZE = 64


@lru_cache(maxsize=1)
def layout():
    from engine.facemodel import load_face_model
    from engine.geometry.uvmap import build_layout

    return build_layout(load_face_model(), MAP_SIZE)


def bilinear_taps(texel_uv: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """UVLayout.sample's bilinear read at fixed texel coordinates as (N, 4) flat texel indices into an (S * S)
    map and their (N, 4) weights: the same corners and weights, computed once instead of per batch."""
    x, y = texel_uv[:, 0], texel_uv[:, 1]
    x0 = np.clip(np.floor(x).astype(int), 0, size - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, size - 2)
    fx, fy = x - x0, y - y0
    taps = np.stack([y0 * size + x0, y0 * size + x0 + 1, (y0 + 1) * size + x0, (y0 + 1) * size + x0 + 1], 1)
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
    return taps, weights


class PRNetMethod(OnnxMethod):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        meta = self.model.session.get_modelmeta().custom_metadata_map
        self.uv_layout = meta.get("uv_layout", "facemodel-536")
        if self.uv_layout == "bfm-noneck":
            from engine.geometry.uv_dense import grid_faces, valid_mask_from_metadata  # numpy only, no torch

            if "points" not in self.model.output_names:
                raise ValueError(f"{self.model.path}: a dense-layout PRNet must have a 'points' output; re-export it")
            from engine.methods.flip import texel_mirror_permutation

            self.valid = valid_mask_from_metadata(meta)
            self.layout = None
            self.dense_faces = grid_faces(self.valid)
            # the BFM's UVs are mirror-symmetric in u and the mask is made so: a mirrored face's map is the map
            # with its columns reversed (flip averaging pairs the texels by this)
            self.dense_flip = texel_mirror_permutation(self.valid)
        elif self.uv_layout == "facemodel-536":
            self.layout = layout()
            self.valid = self.layout.face_mask
            self.dense_faces = self.layout.grid_faces()
            self._taps, self._tap_weights = bilinear_taps(self.layout.texel_uv, self.layout.size)
        else:
            raise ValueError(f"{self.model.path}: unknown PRNet UV layout {self.uv_layout!r}")
        self._valid_flat = np.flatnonzero(self.valid.ravel())   # the dense surface's texels, row-major

    def decode(self, outputs: dict[str, np.ndarray]) -> DecodeResult:
        pmap = outputs["position_map"][0].transpose(1, 2, 0).astype(np.float64) * 120.0
        if pmap.shape[:2] != self.valid.shape:
            raise ValueError(f"PRNet map is {pmap.shape[:2]}, its layout {self.uv_layout} is {self.valid.shape}")
        if self.layout is None:
            points = outputs["points"][0].astype(np.float64) * 120.0
        else:
            points = self.layout.sample(pmap)
        return DecodeResult(points, pose_from_points(self.fm, points), dense=pmap[self.valid])

    def decode_batch(self, outputs: dict[str, np.ndarray]) -> list[DecodeResult]:
        """``decode`` for every face at once: one bilinear read of all maps (faces side by side in the channel
        axis) and one batched pose."""
        pmap = outputs["position_map"].transpose(0, 2, 3, 1).astype(np.float64) * 120.0   # (B, S, S, 3)
        n, size = len(pmap), pmap.shape[1:3]
        if size != self.valid.shape:
            raise ValueError(f"PRNet map is {size}, its layout {self.uv_layout} is {self.valid.shape}")
        if self.layout is None:
            points = outputs["points"].astype(np.float64) * 120.0
        else:
            # layout.sample's bilinear read as its fixed taps: four texels and four weights per point
            taps = pmap.reshape(n, size[0] * size[1], 3)[:, self._taps]                  # (B, 536, 4, 3)
            points = np.einsum("bpkc,pk->bpc", taps, self._tap_weights)
        # pmap[:, valid] as a gather of the valid texels' flat indices (a boolean index is slower)
        dense = np.take(pmap.reshape(n, size[0] * size[1], 3), self._valid_flat, axis=1)
        rotations = rotations_from_points_batch(self.fm, points)
        poses = matrix_to_euler_batch(rotations)
        return [DecodeResult(p, pose, dense=d, rotation=r) for p, pose, d, r in zip(points, poses, dense, rotations)]


# the recipe trains the dense layout, which the shipped weights hold; first-layout files still decode (see above)
# pose_source: chosen on aflw_train by `python main.py pose-study` (docs/head-pose.md)
METHOD = MethodInfo("prnet", "PRNet: UV position-map regression (64x64 map)", PRNetMethod, weights="prnet.onnx",
                    recipe="engine.methods.prnet.train_dense", outputs=("position_map",),
                    int8=Int8Variant(), pose_source="landmarks")
