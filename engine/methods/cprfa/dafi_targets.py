"""Ground-truth DAFIs of the training set, for the HS-U-Net and for the CPR networks' corrupted inputs.

Each training label's DAFI is rendered once from its dense 3DMM face (engine/geometry/dafi.py: the teacher's 62
parameters on the BFM no-neck mesh, z-buffered, barycentric codes) and kept in a validated uint8 cache in
runs/cache/ (engine/training/cache.py): channels 0-2 the code x 255 (rounded: at most 0.002 off, a fifth of the
retrieval threshold), channel 3 the mask x 255. Rendering costs about 10 ms per label (engine/geometry/dafi.py's
measurement), so the 19,080 labels take about 3-4 minutes once on one core (in parallel processes on a machine with
more cores: ``render_workers``), against as much per epoch if rendered on the fly. The cache is keyed by the labels,
the BFM file and the renderer's source file, so a change to any of them rebuilds it.

Augmentation: the image is warped by the harness (AlignmentDataset, cv2.warpAffine with a 2x3 affine in crop
pixels); ``warp_dafi`` moves the cached DAFI with the same affine in torch, batched: the foreground-weighted
bilinear resample of the codes (sum w m c / sum w m, so background never leaks into a code) and the bilinear mask
> 0.5. Inside the surface this is the render of the warped mesh to within the cache's rounding; it differs only
within a pixel of self-occlusion edges (nose side at large yaw). No mirror: the paper's augmentation is rotation,
translation and scale, and a mirrored face's codes would need the BFM's mirror twins.

Reference split: every 20th training crop is kept out of the HS-U-Net's training, so the U-Net's
predictions on it are held-out predictions: used to measure its DAFI error (the CPR networks' input corruption is
matched to it, engine/methods/cprfa/corruption.py) and for the vertex selection's localisation accuracy p2
(engine/geometry/dafi.py).
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.paths import data_path
from engine.training.cache import cached_uint8, files_fingerprint
from engine.training.targets import CACHE_DIR

CACHE_FORMAT = "dafi-u8-v1"


def reference_rows(n: int) -> np.ndarray:
    """Rows of a training set of ``n`` crops in the reference split (held out from the HS-U-Net): every 20th, the
    split the vertex selection measures p2 on (engine/methods/cprfa/vertex_selection.reference_rows, one definition)."""
    from engine.methods.cprfa.vertex_selection import reference_rows as selection_reference_rows

    return selection_reference_rows(n)


def training_rows(n: int) -> np.ndarray:
    """Rows the HS-U-Net trains on: all but the reference split."""
    return np.setdiff1d(np.arange(n), reference_rows(n))


@lru_cache(maxsize=1)
def load_codebook():
    from engine.geometry.dafi import build_codebook

    path = data_path("bfm", "bfm_3ddfa.npz")
    if not path.exists():
        raise FileNotFoundError(f"BFM not found at {path} (set FACEALIGN_DATA): CPRFA's DAFI targets need it")
    return build_codebook({k: v for k, v in np.load(path).items()})


def render_rows(params: np.ndarray, out: np.ndarray) -> None:
    """Render (n, 62) labels' ground-truth DAFIs into (n, 120, 120, 4) uint8 rows (codes x 255, mask x 255)."""
    from engine.geometry.dafi import dafi_from_vertices

    cb = load_codebook()
    for i, p in enumerate(params):
        dafi, mask = dafi_from_vertices(cb, cb.vertices(np.asarray(p, np.float64)))
        out[i, :, :, :3] = np.rint(np.clip(dafi, 0.0, 1.0) * 255.0).astype(np.uint8)
        out[i, :, :, 3] = mask.astype(np.uint8) * 255


def _render_chunk(filename: str, offset: int, shape: tuple[int, ...], start: int, params: np.ndarray) -> None:
    """Worker process: render rows start.. of the cache file being built (opened again by its path)."""
    out = np.memmap(filename, np.uint8, "r+", offset=offset, shape=shape)
    render_rows(params, out[start:start + len(params)])
    out.flush()


def render_workers(n_labels: int) -> int:
    """Processes for the one-off render: all cores but one on a big machine (the device's 16 cores: about 25 s
    instead of 6 min), one on this project's 2-core VM (the other core trains) or for small sets."""
    cores = os.cpu_count() or 1
    return 1 if cores <= 2 or n_labels < 512 else min(cores - 1, 16)


def cached_dafis(params: np.ndarray, log=None, cache_dir: Path | None = None) -> np.ndarray:
    """(N, 120, 120, 4) uint8 ground-truth DAFIs (codes x 255, mask x 255) of (N, 62) teacher parameters, memory-mapped
    from a validated cache keyed by the parameters' bytes and the BFM file (rebuilt when either changes)."""
    import hashlib

    params = np.ascontiguousarray(params, np.float32)
    bfm = data_path("bfm", "bfm_3ddfa.npz")
    digest = hashlib.sha256(params.tobytes()).hexdigest()
    import engine.geometry.dafi as renderer

    # the renderer's source is part of the key: a change to it (e.g. its arithmetic) rebuilds the targets
    fp = files_fingerprint([bfm, Path(renderer.__file__)], {"format": CACHE_FORMAT, "params": digest})
    path = (cache_dir or CACHE_DIR) / f"cprfa_dafi_{len(params)}_{digest[:12]}.u8"
    workers = render_workers(len(params))

    def fill(out: np.ndarray) -> None:
        if workers == 1:
            render_rows(params, out)
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        step = -(-len(params) // (4 * workers))
        # spawn, not fork: the parent may hold torch's thread pools
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            jobs = [pool.submit(_render_chunk, out.filename, out.offset, out.shape, s, params[s:s + step])
                    for s in range(0, len(params), step)]
            for j in jobs:
                j.result()

    if log is not None and not path.exists():
        log(f"[cprfa] rendering {len(params)} DAFI targets into {path} ({workers} process(es), about 10 ms each)")
    return cached_uint8(path, fp, (len(params), 120, 120, 4), fill, log=log)


def dafi_tensor(u8: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 120, 120, 4) uint8 cache rows -> DAFI (B, 3, 120, 120) float in [0, 1] and mask (B, 120, 120) bool."""
    t = torch.from_numpy(np.array(u8)).permute(0, 3, 1, 2).float() / 255.0
    return t[:, :3] * (t[:, 3:] > 0.5), t[:, 3] > 0.5


def inverse_affine_grid(affine: torch.Tensor, size: int = 120) -> torch.Tensor:
    """(B, 2, 3) source-crop -> augmented-crop affines (pixel centres at integers) -> (B, size, size, 2) sampling
    grid (grid_sample's align_corners=False convention) that reads, at each output pixel, its source point."""
    a = affine.double()
    lin, t = a[:, :, :2], a[:, :, 2]
    inv = torch.linalg.inv(lin)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64, device=a.device),
                            torch.arange(size, dtype=torch.float64, device=a.device), indexing="ij")
    out = torch.stack([xs, ys], -1).reshape(1, -1, 2) - t[:, None, :]          # (B, HW, 2)
    src = out @ inv.transpose(1, 2)
    grid = (src + 0.5) / size * 2.0 - 1.0
    return grid.reshape(-1, size, size, 2).float()


def warp_dafi(dafi: torch.Tensor, mask: torch.Tensor, affine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move (B, 3, H, W) DAFIs and (B, H, W) masks of the source crops by the augmentation's (B, 2, 3) affines.

    Codes are resampled bilinearly over foreground pixels only (sum w m c / sum w m); an output pixel is foreground
    when the bilinear mask is above 0.5. Outside the source crop everything is background."""
    grid = inverse_affine_grid(affine, dafi.shape[-1]).to(dafi.device)
    m = mask[:, None].to(dafi.dtype)
    both = F.grid_sample(torch.cat([dafi * m, m], 1), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)
    wm = both[:, 3:]
    out_mask = wm[:, 0] > 0.5
    codes = both[:, :3] / wm.clamp_min(1e-6) * out_mask[:, None]
    return codes, out_mask


def augmented_dafi(dafi_u8: np.ndarray, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The cached ground-truth DAFIs of ``batch['index']``, moved with each crop's augmentation affine (when the
    batch carries one) so they match the augmented image: (dafi (B, 3, H, W), mask (B, H, W))."""
    idx = batch["index"].cpu().numpy()
    order = np.argsort(idx)                 # memory-map reads in file order
    rows = np.empty((len(idx), 120, 120, 4), np.uint8)
    rows[order] = dafi_u8[idx[order]]
    dafi, mask = dafi_tensor(rows)
    affine = batch.get("affine")
    if affine is not None:
        dafi, mask = warp_dafi(dafi, mask, affine.cpu())
    return dafi, mask
