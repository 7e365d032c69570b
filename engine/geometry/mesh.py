"""Mesh geometry on crop- or image-pixel points (x right, y down, z toward the camera).

Because y points down, the frame is left-handed; triangles stored counter-clockwise seen from outside in the
model frame (y up) therefore have their outward normal along -cross(b - a, c - a) here. Functions take that
into account so a normal's z > 0 always means "facing the camera".
"""
from __future__ import annotations

import numpy as np


def face_normals(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Unnormalised outward normals (area-weighted) of each triangle, in the pixel frame."""
    a, b, c = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
    return -np.cross(b - a, c - a)


def vertex_normals(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals, outward, pixel frame."""
    fn = face_normals(verts, tris)
    idx = tris.reshape(-1)
    # bincount sums the three corners' shares far faster than np.add.at
    vn = np.stack([np.bincount(idx, weights=np.repeat(fn[:, d], 3), minlength=len(verts)) for d in range(3)], 1)
    n = np.linalg.norm(vn, axis=1, keepdims=True)
    return vn / np.maximum(n, 1e-12)


def occluded_by_mesh(points: np.ndarray, verts: np.ndarray, tris: np.ndarray, eps: float,
                     ignore: np.ndarray | None = None) -> np.ndarray:
    """True where some triangle lies in front of the point (z-buffer test along the viewing ray).

    A triangle covering the point's (x, y) whose interpolated z exceeds the point's z by more than ``eps``
    occludes it. Exact for any number of points; cost O(points x triangles) cheap box tests, then barycentrics
    only for the (point, triangle) pairs whose boxes can occlude. ``ignore`` (points, triangles) bool marks
    pairs that may not occlude (a point's own surface patch).
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(p) == 0:
        return np.zeros(0, bool)
    verts = np.asarray(verts, dtype=np.float64)
    a, b, c = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
    tmin = np.minimum(np.minimum(a, b), c)
    tmax = np.maximum(np.maximum(a, b), c)
    # triangles entirely outside the points' box or behind all of them cannot occlude any
    keep = np.all((tmax[:, :2] >= p[:, :2].min(0)) & (tmin[:, :2] <= p[:, :2].max(0)), axis=1) & \
        (tmax[:, 2] > p[:, 2].min() + eps)
    a, b, c, tmin, tmax = a[keep], b[keep], c[keep], tmin[keep], tmax[keep]
    px, py, pz = p[:, 0:1], p[:, 1:2], p[:, 2:3]
    cand = (px >= tmin[None, :, 0]) & (px <= tmax[None, :, 0]) & (py >= tmin[None, :, 1]) & \
        (py <= tmax[None, :, 1]) & (tmax[None, :, 2] > pz + eps)
    if ignore is not None:
        cand &= ~np.asarray(ignore, bool).reshape(len(p), len(tris))[:, keep]
    out = np.zeros(len(p), bool)
    pi, ti = np.nonzero(cand)
    if len(pi) == 0:
        return out
    q = p[pi]
    lam = _barycentrics(verts, tris[keep], ti, q[:, 0], q[:, 1])  # NaN for edge-on triangles: never inside
    z = lam[:, 0] * a[ti, 2] + lam[:, 1] * b[ti, 2] + lam[:, 2] * c[ti, 2]
    hit = (lam.min(1) >= 0) & (z > q[:, 2] + eps)
    out[pi[hit]] = True
    return out


def point_visibility(points: np.ndarray, normals: np.ndarray, verts: np.ndarray, tris: np.ndarray,
                     eps_fraction: float = 0.02, grazing: float = -0.2) -> np.ndarray:
    """Visible = not turned away (normal z > ``grazing``) and not behind any triangle of the mesh.

    ``eps_fraction`` of the mesh's width is the depth tolerance, so points lying on (or just under) the surface
    they belong to are not hidden by it; ``grazing`` keeps silhouette points (normal across the view) visible.
    """
    eps = eps_fraction * float(np.ptp(verts[:, 0]) + 1e-9)
    visible = normals[:, 2] > grazing
    # points turned away are hidden whatever lies in front of them: z-test only the facing ones
    visible[visible] = ~occluded_by_mesh(np.asarray(points)[visible], verts, tris, eps)
    return visible


def boundary_loops(tris: np.ndarray) -> list[np.ndarray]:
    """Closed loops of boundary edges (edges used by one triangle), each as an ordered vertex array.

    Walks the undirected edge graph, so it works on meshes whose triangles are not all consistently wound.
    Every boundary vertex must have exactly two boundary edges (no pinched vertices).
    """
    e = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
    edges, count = np.unique(e, axis=0, return_counts=True)
    neighbours: dict[int, list[int]] = {}
    for a, b in edges[count == 1].tolist():
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    if any(len(n) != 2 for n in neighbours.values()):
        raise ValueError("mesh boundary is pinched: a vertex has more than two boundary edges")
    seen: set[int] = set()
    loops = []
    for start in sorted(neighbours):
        if start in seen:
            continue
        loop, prev, cur = [start], -1, start
        seen.add(start)
        while True:
            nxt = neighbours[cur][0] if neighbours[cur][0] != prev else neighbours[cur][1]
            if nxt == start:
                break
            loop.append(nxt)
            seen.add(nxt)
            prev, cur = cur, nxt
        loops.append(np.array(loop, np.int64))
    return loops


def stitch_polylines(verts: np.ndarray, rim: np.ndarray, contour: np.ndarray) -> np.ndarray:
    """Triangle strip joining two polylines that run the same way (vertex index arrays into ``verts``).

    Greedy zipper: at each step advance along the polyline whose next vertex gives the shorter diagonal, so
    every vertex of both is used and the strip has len(rim) + len(contour) - 2 triangles. Winding is left to
    the caller.
    """
    v = np.asarray(verts, np.float64)
    tris, i, k = [], 0, 0
    while i < len(rim) - 1 or k < len(contour) - 1:
        advance_rim = k == len(contour) - 1 or (
            i < len(rim) - 1
            and np.linalg.norm(v[rim[i + 1]] - v[contour[k]]) < np.linalg.norm(v[rim[i]] - v[contour[k + 1]]))
        if advance_rim:
            tris.append((rim[i], rim[i + 1], contour[k]))
            i += 1
        else:
            tris.append((rim[i], contour[k + 1], contour[k]))
            k += 1
    return np.array(tris, np.int32).reshape(-1, 3)


def vertex_rings(tris: np.ndarray, n_vertices: int, seeds: np.ndarray, k: int) -> np.ndarray:
    """(len(seeds), n_vertices) bool: the vertices within ``k`` edges of each seed vertex."""
    adj = np.zeros((n_vertices, n_vertices), bool)
    for a, b in ((0, 1), (1, 2), (2, 0)):
        adj[tris[:, a], tris[:, b]] = True
        adj[tris[:, b], tris[:, a]] = True
    reach = np.zeros((len(seeds), n_vertices), bool)
    reach[np.arange(len(seeds)), seeds] = True
    for _ in range(k):
        reach |= (reach.astype(np.int32) @ adj.astype(np.int32)) > 0
    return reach


def rasterize(verts: np.ndarray, tris: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer raster of a mesh: per pixel the front-most triangle index (-1: none) and its barycentrics.

    Pixel centres are integer coordinates. Returns (tri_id (H, W) int32, bary (H, W, 3) float32).
    """
    zbuf = np.full((height, width), -np.inf)
    tri_id = np.full((height, width), -1, np.int32)
    bary = np.zeros((height, width, 3), np.float32)
    for t, (i, j, k) in enumerate(tris):
        a, b, c = verts[i], verts[j], verts[k]
        x0 = max(int(np.ceil(min(a[0], b[0], c[0]))), 0)
        x1 = min(int(np.floor(max(a[0], b[0], c[0]))), width - 1)
        y0 = max(int(np.ceil(min(a[1], b[1], c[1]))), 0)
        y1 = min(int(np.floor(max(a[1], b[1], c[1]))), height - 1)
        if x0 > x1 or y0 > y1:
            continue
        den = (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1])
        if abs(den) < 1e-12:
            continue
        ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1]
        l1 = ((xs - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (ys - a[1])) / den
        l2 = ((b[0] - a[0]) * (ys - a[1]) - (xs - a[0]) * (b[1] - a[1])) / den
        l0 = 1 - l1 - l2
        inside = (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
        z = l0 * a[2] + l1 * b[2] + l2 * c[2]
        win = inside & (z > zbuf[y0:y1 + 1, x0:x1 + 1])
        if not win.any():
            continue
        zbuf[y0:y1 + 1, x0:x1 + 1][win] = z[win]
        tri_id[y0:y1 + 1, x0:x1 + 1][win] = t
        bary[y0:y1 + 1, x0:x1 + 1][win] = np.stack([l0[win], l1[win], l2[win]], axis=1)
    return tri_id, bary


def _barycentrics(v: np.ndarray, tris: np.ndarray, t: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(N, 3) barycentrics of 2D points (xs, ys) in triangles t (unclipped: negative outside; NaN for triangles
    of no 2D area)."""
    a, b, c = v[tris[t, 0]], v[tris[t, 1]], v[tris[t, 2]]
    den = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    den = np.where(np.abs(den) < 1e-9, np.nan, den)
    l1 = ((xs - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (ys - a[:, 1])) / den
    l2 = ((b[:, 0] - a[:, 0]) * (ys - a[:, 1]) - (xs - a[:, 0]) * (b[:, 1] - a[:, 1])) / den
    return np.stack([1 - l1 - l2, l1, l2], 1)


def rasterize_painter(verts: np.ndarray, tris: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Fast approximate ``rasterize`` for per-frame use: triangles filled far to near with OpenCV (painter's
    order by mean depth, exact for meshes without interpenetrating triangles), then barycentrics per pixel.

    Same outputs as ``rasterize``. OpenCV also fills pixels just outside a triangle's edges; such a pixel takes a
    4-neighbour's triangle when that one contains it, else its barycentrics are clipped.
    """
    import cv2

    v = np.asarray(verts, dtype=np.float64)
    order = np.argsort(v[tris, 2].mean(1), kind="stable")
    ids = np.zeros((height, width), np.int32)
    pts = np.round(v[:, :2] * 16).astype(np.int32)  # 4 fractional bits (cv2's `shift`)
    for t in order:
        cv2.fillConvexPoly(ids, pts[tris[t]], int(t) + 1, lineType=cv2.LINE_8, shift=4)
    tri_id = ids - 1
    bary = np.zeros((height, width, 3), np.float32)
    ys, xs = np.nonzero(tri_id >= 0)
    if len(ys) == 0:
        return tri_id, bary
    t = tri_id[ys, xs]
    lam = _barycentrics(v, tris, t, xs, ys)
    padded = np.pad(tri_id, 1, constant_values=-1)
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        out = ~(lam.min(1) >= -1e-6)  # outside, or a degenerate triangle (NaN)
        if not out.any():
            break
        cand = padded[ys[out] + 1 + dy, xs[out] + 1 + dx]
        ok = cand >= 0
        idx = np.nonzero(out)[0][ok]
        lam_c = _barycentrics(v, tris, cand[ok], xs[idx], ys[idx])
        better = lam_c.min(1) >= -1e-6
        t[idx[better]], lam[idx[better]] = cand[ok][better], lam_c[better]
    tri_id[ys, xs] = t
    lam = np.clip(np.nan_to_num(lam, nan=1.0 / 3.0), 0.0, 1.0)
    bary[ys, xs] = lam / np.maximum(lam.sum(1, keepdims=True), 1e-12)
    return tri_id, bary


def occluded_by_mesh_batch(points: np.ndarray, verts: np.ndarray, tris: np.ndarray, eps: np.ndarray,
                           ignore: np.ndarray | None = None) -> np.ndarray:
    """``occluded_by_mesh`` for a batch of faces at once: points (B, P, 3), verts (B, V, 3), one triangle list,
    eps (B,), ignore (P, T) shared by every face. Returns (B, P) bool, the same decisions as the per-face test.

    Runs the compiled loop (``engine.geometry.compiled``); ``occluded_by_mesh_batch_numpy`` is the same test in
    numpy.
    """
    from engine.geometry.compiled import occluded_by_mesh_batch_compiled  # numba: imported on first use only

    return occluded_by_mesh_batch_compiled(points, verts, tris, eps, ignore)


def occluded_by_mesh_batch_numpy(points: np.ndarray, verts: np.ndarray, tris: np.ndarray, eps: np.ndarray,
                                 ignore: np.ndarray | None = None) -> np.ndarray:
    """``occluded_by_mesh`` for a batch of faces at once: points (B, P, 3), verts (B, V, 3), one triangle list,
    eps (B,), ignore (P, T) shared by every face. Returns (B, P) bool, the same decisions as the per-face test.

    Candidate (point, triangle) pairs come from a grid over the points, so only a few pairs per triangle reach
    the box, depth and barycentric tests: the same comparisons as ``occluded_by_mesh``, in float64, hence the
    same decisions.
    """
    p = np.asarray(points, dtype=np.float64)
    v = np.asarray(verts, dtype=np.float64)
    n_faces, n_points = p.shape[:2]
    n_tris = len(tris)
    out = np.zeros((n_faces, n_points), bool)
    if n_points == 0 or n_faces == 0:
        return out
    # corners gathered corner-major, (B, corner, T, xyz): the boxes are then reductions over an outer axis, which
    # numpy runs as element-wise min/max of three slabs (a reduction over a trailing size-3 axis is far slower)
    corners = np.take(v, tris.T.ravel(), axis=1).reshape(n_faces, 3, n_tris, 3)
    lo_xyz, hi_xyz = corners.min(1), corners.max(1)                        # (B, T, xyz)
    xmin, xmax = lo_xyz[..., 0], hi_xyz[..., 0]
    ymin, ymax, zmax = lo_xyz[..., 1].ravel(), hi_xyz[..., 1].ravel(), hi_xyz[..., 2].ravel()
    # Candidate pairs from a grid over the points: rows as tall as the tallest triangle (so a triangle's y-extent
    # meets at most two rows) cut into 1-pixel x bins. With the points sorted by (face, row, x bin), a cumulative
    # count per bin gives each (triangle, row) the run of points whose bins overlap the triangle's box: a
    # superset of the exact box test below, a few pairs per triangle instead of every point.
    px_all, py_all = p[:, :, 0], p[:, :, 1]
    x0 = np.floor(min(px_all.min(), xmin.min()))
    y0 = min(py_all.min(), ymin.min())
    # a little over the tallest triangle, so rounding cannot make a triangle's y-extent span three rows
    inv_h = 1.0 / (max(float((ymax - ymin).max()), 1.0) * (1 + 1e-6) + 1e-6)
    n_x = int(np.floor(max(px_all.max(), xmax.max())) - x0) + 2
    n_rows = int(np.floor((max(py_all.max(), ymax.max()) - y0) * inv_h)) + 2
    cell_base = (np.arange(n_faces) * (n_rows * n_x))[:, None]
    point_cell = (np.floor((py_all - y0) * inv_h).astype(np.int64) * n_x + np.floor(px_all - x0).astype(np.int64)
                  + cell_base).ravel()
    order = np.argsort(point_cell, kind="stable")                         # flat (face * P + point), by cell
    first = np.concatenate([[0], np.cumsum(np.bincount(point_cell, minlength=n_faces * n_rows * n_x))])
    row0 = np.floor((ymin.reshape(n_faces, n_tris) - y0) * inv_h).astype(np.int64)
    row1 = np.floor((ymax.reshape(n_faces, n_tris) - y0) * inv_h).astype(np.int64)
    bx0 = np.floor(xmin - x0).astype(np.int64) + cell_base
    bx1 = np.floor(xmax - x0).astype(np.int64) + cell_base + 1
    lo0, hi0 = first[row0 * n_x + bx0], first[row0 * n_x + bx1]
    lo1, hi1 = first[row1 * n_x + bx0], first[row1 * n_x + bx1]
    hi1 = np.where(row1 > row0, hi1, lo1)                                  # a triangle within one row: one run
    lo = np.concatenate([lo0.ravel(), lo1.ravel()])
    count = np.concatenate([(hi0 - lo0).ravel(), (hi1 - lo1).ravel()])
    n = int(count.sum())
    if n == 0:
        return out
    run = np.repeat(np.arange(count.size), count)                          # which (row, face, triangle) run
    start = np.cumsum(count) - count
    flat_point = order[lo[run] + np.arange(n) - start[run]]                # flat face * P + point of each pair
    pair = run % (n_faces * n_tris)                                        # flat face * T + triangle
    face = pair // n_tris
    point = flat_point - face * n_points
    py = p[:, :, 1].ravel()[flat_point]
    lim = (p[:, :, 2] + eps[:, None]).ravel()[flat_point]                  # the point's z + eps
    px = p[:, :, 0].ravel()[flat_point]
    cand = (px >= xmin.ravel()[pair]) & (px <= xmax.ravel()[pair]) & (py >= ymin[pair]) & (py <= ymax[pair]) & \
        (zmax[pair] > lim)
    if ignore is not None:
        cand &= ~ignore.ravel()[point * n_tris + (pair - face * n_tris)]
    pair, flat_point, px, py, lim = pair[cand], flat_point[cand], px[cand], py[cand], lim[cand]
    if len(pair) == 0:
        return out
    face_of, tri_of = np.divmod(pair, n_tris)
    a, b, c = corners[face_of, 0, tri_of], corners[face_of, 1, tri_of], corners[face_of, 2, tri_of]  # (M, xyz)
    # the barycentrics exactly as _barycentrics computes them (NaN for triangles of no 2D area: never inside)
    den = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    den = np.where(np.abs(den) < 1e-9, np.nan, den)
    l1 = ((px - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (py - a[:, 1])) / den
    l2 = ((b[:, 0] - a[:, 0]) * (py - a[:, 1]) - (px - a[:, 0]) * (b[:, 1] - a[:, 1])) / den
    l0 = 1 - l1 - l2
    z = l0 * a[:, 2] + l1 * b[:, 2] + l2 * c[:, 2]
    hit = (l0 >= 0) & (l1 >= 0) & (l2 >= 0) & (z > lim)
    out.ravel()[flat_point[hit]] = True
    return out
