"""PRNet's dense layout (the full BFM face in its own UV, engine/geometry/uv_dense.py) on the training and
export side: the layout built from the shared data, batched torch targets, and the metadata that tells a decoder
which layout an ONNX file was trained on.

ONNX metadata of a dense-layout file: ``uv_layout`` = ``bfm-noneck``, ``map_size``, ``valid_mask`` (base64 of the
bit-packed (S, S) valid-texel mask, for the dense mesh). Its graph has a second output, ``points`` (B, 536, 3), read
from the map inside the graph. Files without ``uv_layout`` are the first 64x64 face-model layout
(engine/geometry/uvmap.py).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from engine.bfm import load_bfm
from engine.geometry.uv_dense import (DENSE_LAYOUT, LAYOUT_KEY, DenseUVLayout, TexelBasis,  # noqa: F401
                                      build_dense_layout, layout_metadata, texel_basis, valid_mask_from_metadata)
FIT_LABELS = 1000   # training labels the read-out weights are fitted on (a seeded sample; deterministic)


def readout_fit_params(n: int = FIT_LABELS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rows, (n, 62) params): the seeded sample of aflw_train labels the read-out is fitted on."""
    from engine.paths import data_path

    params = np.load(data_path("aflw_train", "labels.npz"))["teacher_params"].astype(np.float64)
    rows = np.sort(np.random.default_rng(seed).permutation(len(params))[:n])
    return rows, params[rows]


@lru_cache(maxsize=2)
def dense_layout(size: int) -> DenseUVLayout:
    """The dense layout at ``size`` x ``size`` (about 2 s: texel location + read-out fit)."""
    from engine.facemodel import load_face_model

    return build_dense_layout(load_bfm(), load_face_model().bfm_index, size, readout_fit_params()[1])


@lru_cache(maxsize=2)
def dense_basis(size: int) -> TexelBasis:
    return texel_basis(dense_layout(size), load_bfm())


class DenseTargets(nn.Module):
    """Batched ground-truth maps: (B, 62) teacher parameters + the augmentation (B, 2, 3) affine and mirror flag ->
    (B, 3, S, S) maps in crop pixels / 120, depth centred on the mean over the valid texels (absolute depth is not
    observable), 0 at invalid texels.

    The same maths as ``uv_dense.render_maps`` followed by the image's transform: x, y by the affine, z by its
    scale (sqrt |det|); a mirrored crop shows the mirror twin of every surface point, so its map is the
    transformed map with its columns reversed (the BFM's UVs are mirror-symmetric; the valid mask is too).
    """

    def __init__(self, layout: DenseUVLayout, basis: TexelBasis) -> None:
        super().__init__()
        self.size = layout.size
        self.register_buffer("mean", torch.from_numpy(basis.mean).float())                          # (T, 3)
        self.register_buffer("bases", torch.from_numpy(basis.bases.reshape(-1, basis.bases.shape[-1])).float())
        self.register_buffer("flat_valid", torch.from_numpy(layout.flat_valid).long())

    def forward(self, params: torch.Tensor, affine: torch.Tensor | None = None,
                flipped: torch.Tensor | None = None) -> torch.Tensor:
        params = params.float()
        b = len(params)
        shape = self.mean + (params[:, 12:62] @ self.bases.T).reshape(b, -1, 3)                       # (B, T, 3)
        cam = params[:, :12].reshape(b, 3, 4)
        v = shape @ cam[:, :, :3].transpose(1, 2) + cam[:, None, :, 3]
        x, y, z = v[..., 0] - 1.0, 120.0 - v[..., 1], v[..., 2]
        if affine is not None:
            a = affine.float()
            x, y = (a[:, None, 0, 0] * x + a[:, None, 0, 1] * y + a[:, None, 0, 2],
                    a[:, None, 1, 0] * x + a[:, None, 1, 1] * y + a[:, None, 1, 2])
            z = z * torch.sqrt(torch.abs(a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]))[:, None]
        z = z - z.mean(1, keepdim=True)
        vals = torch.stack([x, y, z], 1) / 120.0                                                      # (B, 3, T)
        out = vals.new_zeros(b, 3, self.size * self.size)
        out[:, :, self.flat_valid] = vals
        out = out.reshape(b, 3, self.size, self.size)
        if flipped is not None and bool(flipped.any()):
            out = torch.where(flipped.bool()[:, None, None, None], out.flip(-1), out)
        return out
