"""Densely annotated face images (DAFI, CPRFA's dense target): per pixel of a crop, the normalised mean-shape
coordinate of the face-surface point seen there, plus a foreground mask.

Codes (the normalisation, exact rule): take the BFM's no-neck MEAN shape (38,365 vertices, ``bfm['mean']`` at
``bfm['noneck_indices']``) in the model frame (x right, y up, z toward the camera, BFM units); with lo / hi its
per-axis minimum / maximum, a vertex's code is ``(X_mean - lo) / (hi - lo)``, so every code lies in [0, 1]^3 and
each axis spans the full range (3DDFA's PNCC normalisation). A vertex keeps its code whatever shape or pose a label
has: the code names the surface point, the label only decides where it lands in the image.

Rendering a label (``render_dafi``): its dense no-neck mesh (mean + 40 identity + 10 expression bases at the
label's coefficients, posed by its 3x4 camera, in crop pixels: x right, y down, z toward the camera, pixel centres
at integers) is z-buffered at the pixel centres; each covered pixel gets the barycentric mix of its front-most
triangle's three codes. Triangles facing away from the camera are culled: the no-neck mesh is an open surface,
and its inside (seen past the far cheek at extreme yaw) is in a real image covered by the head, not face, so it is
background in the DAFI rather than a wrong code.

The rasteriser is vectorised over triangles (the BFM triangles are far smaller than a pixel, so each covers at
most a few pixel centres): 10.4 ms per 120x120 label in numpy on this project's 2-core VM
(``python -m engine.geometry.dafi --labels 300``), fast enough to render training targets on the fly in the data
loader (19,080 labels: about 3.3 CPU-minutes per epoch) or to cache them once; ``render_dafi_batch`` loops it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.bfm import camera_to_crop, noneck_rows
from engine.geometry.mesh import face_normals
from engine.geometry.uv_dense import N_COEF


@dataclass(frozen=True)
class DafiCodebook:
    """The dense no-neck mesh with its codes, in the order of ``rows``."""
    rows: np.ndarray    # (V,) int64: BFM vertex indices (of all 53,215) of the no-neck vertices
    tris: np.ndarray    # (T, 3) int64: no-neck triangles, indices into ``rows``, wound as mesh.py expects
    codes: np.ndarray   # (V, 3) float32 in [0, 1]: normalised mean-shape coordinates
    lo: np.ndarray      # (3,) float64: per-axis minimum of the no-neck mean shape (model frame)
    hi: np.ndarray      # (3,) float64: per-axis maximum
    mean: np.ndarray    # (V, 3) float32: model-frame mean shape
    basis: np.ndarray   # (V, 3, 50) float32: 40 identity then 10 expression bases

    def normalise(self, model_points: np.ndarray) -> np.ndarray:
        """(..., 3) model-frame points -> codes (the rule of the module docstring)."""
        return ((np.asarray(model_points, np.float64) - self.lo) / (self.hi - self.lo)).astype(np.float32)

    def model_shape(self, coefficients: np.ndarray) -> np.ndarray:
        """(50,) coefficients (40 identity + 10 expression) -> (V, 3) model-frame vertices (float64)."""
        c = np.asarray(coefficients, np.float64)
        if c.shape != (N_COEF,):
            raise ValueError(f"expected {N_COEF} shape coefficients, got shape {c.shape}")
        # float32 product (the bases are float32; a float64 one would copy them on every call, 3x slower); the
        # offsets are summed in float64 with the mean
        return self.mean + (self.basis.reshape(-1, N_COEF) @ c.astype(np.float32)).reshape(-1, 3).astype(np.float64)

    def vertices(self, params: np.ndarray) -> np.ndarray:
        """(62,) teacher parameters -> (V, 3) crop-pixel vertices (x right, y down, z toward the camera)."""
        p = np.asarray(params, np.float64)
        if p.shape != (62,):
            raise ValueError(f"expected 62 parameters (12 camera + 40 + 10), got shape {p.shape}")
        return camera_to_crop(self.model_shape(p[12:62]), p)


def build_codebook(bfm: dict[str, np.ndarray]) -> DafiCodebook:
    """The codebook of the BFM's no-neck mesh (``bfm`` as loaded from shared/data/bfm/bfm_3ddfa.npz)."""
    rows = noneck_rows(bfm)
    mean = bfm["mean"].reshape(-1, 3)[rows].astype(np.float64)
    lo, hi = mean.min(0), mean.max(0)
    basis = np.concatenate([bfm["w_shp"].reshape(-1, 3, 40)[rows], bfm["w_exp"].reshape(-1, 3, 10)[rows]], 2)
    codes = ((mean - lo) / (hi - lo)).astype(np.float32)
    tris = np.asarray(bfm["noneck_tri"], np.int64)
    # Wind the triangles as engine/geometry/mesh.py expects (outward normal = -cross(b - a, c - a) in the y-down
    # pixel frame): the BFM file's winding is checked on the frontal mean face, where most of the surface faces
    # the camera, and flipped if it is the other way round.
    frontal = mean * np.array([1.0, -1.0, 1.0])
    if (face_normals(frontal, tris)[:, 2] > 0).mean() < 0.5:
        tris = tris[:, [0, 2, 1]]
    return DafiCodebook(rows=rows, tris=tris, codes=codes, lo=lo, hi=hi,
                        mean=mean.astype(np.float32), basis=basis.astype(np.float32))


def rasterize_vectorized(verts: np.ndarray, tris: np.ndarray, width: int, height: int, cull_back: bool = True
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer raster at integer pixel centres, vectorised over triangles (for meshes of small triangles).

    verts (V, 3) pixel-frame (x right, y down, z toward the camera); tris (T, 3). A pixel centre on a shared edge
    belongs to both triangles and the z-test picks one. ``cull_back`` drops triangles whose outward normal (the
    y-down frame's -cross(b - a, c - a), engine/geometry/mesh.py) points away from the camera.
    Returns (tri_id (H, W) int64, -1 = background; bary (H, W, 3) float32; depth (H, W) float32, -inf = background),
    the same decisions as ``mesh.rasterize`` (which loops over triangles) on the triangles it keeps.
    """
    v = np.asarray(verts, np.float64)
    tris = np.asarray(tris, np.int64)
    a, b, c = v[tris[:, 0]], v[tris[:, 1]], v[tris[:, 2]]
    den = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    keep = np.abs(den) >= 1e-12
    if cull_back:
        # outward normal z = -(den) in the y-down frame: facing the camera <=> den < 0
        keep &= den < 0
    lo = np.minimum(np.minimum(a, b), c)
    hi = np.maximum(np.maximum(a, b), c)
    x0 = np.maximum(np.ceil(lo[:, 0]), 0).astype(np.int64)
    x1 = np.minimum(np.floor(hi[:, 0]), width - 1).astype(np.int64)
    y0 = np.maximum(np.ceil(lo[:, 1]), 0).astype(np.int64)
    y1 = np.minimum(np.floor(hi[:, 1]), height - 1).astype(np.int64)
    nx, ny = np.maximum(x1 - x0 + 1, 0), np.maximum(y1 - y0 + 1, 0)
    count = np.where(keep, nx * ny, 0)
    tri_id = np.full((height, width), -1, np.int64)
    bary = np.zeros((height, width, 3), np.float32)
    depth = np.full((height, width), -np.inf, np.float32)
    n = int(count.sum())
    if n == 0:
        return tri_id, bary, depth
    t = np.repeat(np.arange(len(tris)), count)                  # one row per (triangle, pixel in its box)
    k = np.arange(n) - np.repeat(np.cumsum(count) - count, count)
    px = x0[t] + k % nx[t]
    py = y0[t] + k // nx[t]
    at, bt, ct, dt = a[t], b[t], c[t], den[t]
    l1 = ((px - at[:, 0]) * (ct[:, 1] - at[:, 1]) - (ct[:, 0] - at[:, 0]) * (py - at[:, 1])) / dt
    l2 = ((bt[:, 0] - at[:, 0]) * (py - at[:, 1]) - (px - at[:, 0]) * (bt[:, 1] - at[:, 1])) / dt
    l0 = 1.0 - l1 - l2
    inside = (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
    t, px, py, l0, l1, l2 = t[inside], px[inside], py[inside], l0[inside], l1[inside], l2[inside]
    if len(t) == 0:
        return tri_id, bary, depth
    z = l0 * a[t, 2] + l1 * b[t, 2] + l2 * c[t, 2]
    pix = py * width + px
    order = np.lexsort((-z, pix))                                 # per pixel, the front-most first
    first = order[np.concatenate([[True], pix[order][1:] != pix[order][:-1]])]
    flat = pix[first]
    tri_id.ravel()[flat] = t[first]
    bary.reshape(-1, 3)[flat] = np.stack([l0[first], l1[first], l2[first]], 1)
    depth.ravel()[flat] = z[first]
    return tri_id, bary, depth


def dafi_from_vertices(codebook: DafiCodebook, verts: np.ndarray, size: int = 120
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) pixel-frame no-neck vertices (in ``codebook.rows`` order; any pose, e.g. an augmented one) ->
    (dafi (size, size, 3) float32, 0 on background; mask (size, size) bool)."""
    verts = np.asarray(verts)
    if verts.shape != codebook.codes.shape:
        raise ValueError(f"expected {codebook.codes.shape} no-neck vertices, got {verts.shape}")
    tri_id, bary, _ = rasterize_vectorized(verts, codebook.tris, size, size)
    mask = tri_id >= 0
    corner_codes = codebook.codes[codebook.tris[tri_id[mask]]]     # (F, 3 corners, 3 xyz)
    dafi = np.zeros((size, size, 3), np.float32)
    dafi[mask] = (bary[mask][:, :, None] * corner_codes).sum(1)
    return dafi, mask


def render_dafi(codebook: DafiCodebook, bfm: dict[str, np.ndarray] | None, params: np.ndarray, size: int = 120
                ) -> tuple[np.ndarray, np.ndarray]:
    """One label's DAFI: (62,) teacher parameters -> (dafi (size, size, 3) float32, mask (size, size) bool).

    The parameters place the face in a 120x120 crop; another ``size`` renders the same crop at size/120 pixels
    per crop pixel (pixel centres stay at integers: x_size = (x_120 + 0.5) size / 120 - 0.5). ``bfm`` is unused
    (the codebook holds the no-neck bases) and may be None; it stays in the signature the plan names.
    """
    verts = codebook.vertices(params)
    if size != 120:
        verts = verts.copy()
        f = size / 120.0
        verts[:, :2] = (verts[:, :2] + 0.5) * f - 0.5
        verts[:, 2] *= f
    return dafi_from_vertices(codebook, verts, size)


def render_dafi_batch(codebook: DafiCodebook, params: np.ndarray, size: int = 120
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(B, 62) -> (dafi (B, size, size, 3) float32, mask (B, size, size) bool)."""
    params = np.asarray(params)
    if params.ndim != 2 or params.shape[1] != 62:
        raise ValueError(f"expected (B, 62) parameters, got shape {params.shape}")
    dafi = np.zeros((len(params), size, size, 3), np.float32)
    mask = np.zeros((len(params), size, size), bool)
    for i, p in enumerate(params):
        dafi[i], mask[i] = render_dafi(codebook, None, p, size)
    return dafi, mask


# ------------------------------------------------------------------------------------------------ vertex retrieval
# Which vertices are searched. A KD-tree over all 38,365 no-neck codes is the literal reading, but at 120 px it
# detects few of them: the vertices lie about 0.006 apart in code space and the pixel centres about 0.0125
# (a face is about 80 px across), so most vertices are the nearest vertex of no pixel: on ground-truth DAFIs of 50
# training labels it finds 26% of the visible vertices, a sparse set 87-88% (python
# research/cprfa_retrieval_sets.py: all vertices 0.264, candidates 0.025 apart 0.876, 0.07 apart 0.870, errors
# 0.24-0.28 px). The search set is therefore a SPARSE
# set of vertices at least 2 x threshold apart in code space (the candidates when selecting, the C selected
# vertices at run time): then at most one searched vertex lies within the threshold of any pixel, the nearest one
# is that one, and a vertex's pixels are all the pixels whose code falls within the threshold of its code (about
# two pixel centres on a frontal surface at 0.01). In-graph this is a (pixels x C) distance test, cheap enough
# for ONNX (1.4 ms for C = 128 on one thread), and equal to the KD-tree (tested).

def pixel_centres(height: int, width: int) -> np.ndarray:
    """(H*W, 2) float64 (x, y) of the pixel centres, row-major (the order of ``dafi.reshape(-1, 3)``)."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)


def retrieve_kdtree(dafi: np.ndarray, mask: np.ndarray, vertex_codes: np.ndarray, threshold: float = 0.01
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference vertex retrieval (scipy cKDTree).

    dafi (H, W, 3) codes, mask (H, W) bool foreground, vertex_codes (K, 3) the searched vertices' codes. Each
    foreground pixel goes to its nearest searched vertex if that lies strictly within ``threshold`` (Euclidean, code
    space); a vertex's observed position is the mean (x, y) of its pixels' centres (pixel units of the DAFI).
    Returns (positions (K, 2) float64, 0 where not found; found (K,) bool; counts (K,) int64 pixels per vertex).
    """
    from scipy.spatial import cKDTree

    dafi = np.asarray(dafi)
    mask = np.asarray(mask, bool)
    codes = np.asarray(vertex_codes, np.float64)
    if dafi.ndim != 3 or dafi.shape[2] != 3 or mask.shape != dafi.shape[:2]:
        raise ValueError(f"expected dafi (H, W, 3) and mask (H, W), got {dafi.shape} and {mask.shape}")
    if codes.ndim != 2 or codes.shape[1] != 3 or len(codes) == 0:
        raise ValueError(f"expected vertex codes (K, 3), got {codes.shape}")
    xy = pixel_centres(*mask.shape)[mask.ravel()]
    dist, nearest = cKDTree(codes).query(dafi[mask].astype(np.float64), distance_upper_bound=threshold)
    hit = dist < threshold                                   # a miss comes back as inf with index K
    counts = np.bincount(nearest[hit], minlength=len(codes))
    sums = np.stack([np.bincount(nearest[hit], weights=xy[hit, d], minlength=len(codes)) for d in range(2)], 1)
    found = counts > 0
    positions = np.where(found[:, None], sums / np.maximum(counts, 1)[:, None], 0.0)
    return positions, found, counts


def candidate_vertices(codebook: DafiCodebook, min_separation: float = 0.025, seed: int = 0) -> np.ndarray:
    """A sparse, even subset of the no-neck vertices: indices into ``codebook.rows`` of vertices at least
    ``min_separation`` apart in code space (greedy Poisson-disk in a seeded random order). With a separation above
    2 x the retrieval threshold, the selection statistics measured on these candidates are exactly what the
    selected subset will see at run time (each vertex's pixels depend on no other searched vertex)."""
    from scipy.spatial import cKDTree

    codes = codebook.codes.astype(np.float64)
    tree = cKDTree(codes)
    blocked = np.zeros(len(codes), bool)
    chosen = []
    for i in np.random.default_rng(seed).permutation(len(codes)):
        if blocked[i]:
            continue
        chosen.append(i)
        blocked[tree.query_ball_point(codes[i], min_separation)] = True
    return np.sort(np.array(chosen, np.int64))


def check_sparse(vertex_codes: np.ndarray, threshold: float = 0.01) -> None:
    """Raise ValueError unless the searched vertices are more than 2 x threshold apart in code space (the
    in-graph retrieval's contract, torch_dafi.retrieve_dense)."""
    from scipy.spatial import cKDTree

    codes = np.asarray(vertex_codes, np.float64)
    if len(codes) < 2:
        return
    gap = float(cKDTree(codes).query(codes, k=2)[0][:, 1].min())
    if gap <= 2 * threshold:
        raise ValueError(f"searched vertices only {gap:.4f} apart in code space; the in-graph retrieval needs "
                         f"more than 2 x threshold = {2 * threshold:.4f}")


def _bench(argv: list[str] | None = None) -> None:
    """python -m engine.geometry.dafi --labels 200: ms per label of render_dafi on aflw_train labels."""
    import argparse
    import time

    from engine.bfm import load_bfm
    from engine.paths import data_path

    ap = argparse.ArgumentParser(description="time render_dafi on training labels")
    ap.add_argument("--labels", type=int, default=200)
    ap.add_argument("--size", type=int, default=120)
    args = ap.parse_args(argv)
    codebook = build_codebook(load_bfm())
    params = np.load(data_path("aflw_train", "labels.npz"))["teacher_params"][:args.labels].astype(np.float64)
    render_dafi(codebook, None, params[0], args.size)
    start = time.perf_counter()
    for p in params:
        render_dafi(codebook, None, p, args.size)
    ms = (time.perf_counter() - start) / len(params) * 1000
    print(f"render_dafi: {ms:.2f} ms per label at {args.size}x{args.size} ({len(params)} labels, one process)")


if __name__ == "__main__":
    _bench()
