"""Compiled (numba) twin of ``mesh.occluded_by_mesh_batch``: the per-face tail's z-buffer test as one loop.

Why compiled: at one face the numpy version is some forty small array operations of 1-10 µs each (sort, cumulative
counts, gathers), so its fixed cost, not its arithmetic, is most of the visibility test. The loop below does the
same comparisons in the same float64 expressions (box, depth, then the barycentrics exactly as
``mesh._barycentrics`` writes them), so it makes the same decisions; tests/geometry/test_fast_tail.py holds it to the numpy
version and to the per-face reference.

Candidate pairs come from a uniform grid over each face's points: a triangle visits only the cells its 2D box
covers and tests the points filed there. A point inside the box lies in one of those cells because the cell index
floor((x - x0) * scale) is monotonic in x, in floating point as in exact arithmetic.
"""
from __future__ import annotations

import numpy as np
from numba import njit

GRID = 16  # cells per side over a face's points: 68 points, ~1000 triangles → a few point tests per triangle


@njit(cache=True, nogil=True)
def _occluded_kernel(p: np.ndarray, v: np.ndarray, tris: np.ndarray, eps: np.ndarray, ignore: np.ndarray,
                     use_ignore: bool, out: np.ndarray) -> None:
    n_faces, n_points = p.shape[0], p.shape[1]
    n_tris = tris.shape[0]
    cell_start = np.empty(GRID * GRID + 1, np.int64)
    cell_points = np.empty(n_points, np.int64)
    point_cell = np.empty(n_points, np.int64)
    for f in range(n_faces):
        x0, x1, y0, y1 = p[f, 0, 0], p[f, 0, 0], p[f, 0, 1], p[f, 0, 1]
        min_lim = p[f, 0, 2] + eps[f]
        for i in range(n_points):
            x, y = p[f, i, 0], p[f, i, 1]
            x0, x1, y0, y1 = min(x0, x), max(x1, x), min(y0, y), max(y1, y)
            min_lim = min(min_lim, p[f, i, 2] + eps[f])
        sx = GRID / (x1 - x0 + 1e-6)
        sy = GRID / (y1 - y0 + 1e-6)
        # file the points by cell (counting sort)
        cell_start[:] = 0
        for i in range(n_points):
            cx = min(int(np.floor((p[f, i, 0] - x0) * sx)), GRID - 1)
            cy = min(int(np.floor((p[f, i, 1] - y0) * sy)), GRID - 1)
            point_cell[i] = cy * GRID + cx
            cell_start[point_cell[i] + 1] += 1
        for c in range(GRID * GRID):
            cell_start[c + 1] += cell_start[c]
        fill = cell_start[:-1].copy()
        for i in range(n_points):
            cell_points[fill[point_cell[i]]] = i
            fill[point_cell[i]] += 1
        for t in range(n_tris):
            ia, ib, ic = tris[t, 0], tris[t, 1], tris[t, 2]
            ax, ay, az = v[f, ia, 0], v[f, ia, 1], v[f, ia, 2]
            bx, by, bz = v[f, ib, 0], v[f, ib, 1], v[f, ib, 2]
            cx_, cy_, cz = v[f, ic, 0], v[f, ic, 1], v[f, ic, 2]
            zmax = max(az, max(bz, cz))
            if zmax <= min_lim:          # behind every point: cannot occlude any of them
                continue
            xmin, xmax = min(ax, min(bx, cx_)), max(ax, max(bx, cx_))
            ymin, ymax = min(ay, min(by, cy_)), max(ay, max(by, cy_))
            if xmax < x0 or xmin > x1 or ymax < y0 or ymin > y1:
                continue
            gx0 = max(int(np.floor((max(xmin, x0) - x0) * sx)), 0)
            gx1 = min(int(np.floor((min(xmax, x1) - x0) * sx)), GRID - 1)
            gy0 = max(int(np.floor((max(ymin, y0) - y0) * sy)), 0)
            gy1 = min(int(np.floor((min(ymax, y1) - y0) * sy)), GRID - 1)
            den = (bx - ax) * (cy_ - ay) - (cx_ - ax) * (by - ay)
            if abs(den) < 1e-9:          # no 2D area: never inside (the numpy version's NaN)
                continue
            for gy in range(gy0, gy1 + 1):
                for gx in range(gx0, gx1 + 1):
                    c = gy * GRID + gx
                    for k in range(cell_start[c], cell_start[c + 1]):
                        i = cell_points[k]
                        if out[f, i]:
                            continue
                        px, py = p[f, i, 0], p[f, i, 1]
                        lim = p[f, i, 2] + eps[f]
                        if px < xmin or px > xmax or py < ymin or py > ymax or not zmax > lim:
                            continue
                        if use_ignore and ignore[i, t]:
                            continue
                        l1 = ((px - ax) * (cy_ - ay) - (cx_ - ax) * (py - ay)) / den
                        l2 = ((bx - ax) * (py - ay) - (px - ax) * (by - ay)) / den
                        l0 = 1 - l1 - l2
                        z = l0 * az + l1 * bz + l2 * cz
                        if l0 >= 0 and l1 >= 0 and l2 >= 0 and z > lim:
                            out[f, i] = True


def occluded_by_mesh_batch_compiled(points: np.ndarray, verts: np.ndarray, tris: np.ndarray, eps: np.ndarray,
                                    ignore: np.ndarray | None = None) -> np.ndarray:
    """``mesh.occluded_by_mesh_batch`` (same arguments, same decisions) as one compiled loop: (B, P) bool."""
    p = np.ascontiguousarray(points, dtype=np.float64)
    v = np.ascontiguousarray(verts, dtype=np.float64)
    out = np.zeros(p.shape[:2], bool)
    if out.size == 0:
        return out
    use_ignore = ignore is not None
    ign = np.ascontiguousarray(ignore, dtype=np.bool_) if use_ignore else np.zeros((1, 1), np.bool_)
    _occluded_kernel(p, v, np.ascontiguousarray(tris), np.ascontiguousarray(eps, np.float64)
                     .reshape(-1), ign, use_ignore, out)
    return out


@njit(cache=True, nogil=True)
def _summed_normal_z_kernel(verts: np.ndarray, corners: np.ndarray, ptr: np.ndarray, members: np.ndarray,
                            out: np.ndarray) -> None:
    n_faces, n_tris, n_groups = verts.shape[0], corners.shape[0], ptr.shape[0] - 1
    fn = np.empty((n_tris, 3))
    for f in range(n_faces):
        for k in range(n_tris):
            a, b, c = corners[k, 0], corners[k, 1], corners[k, 2]
            e1x, e1y, e1z = (verts[f, b, 0] - verts[f, a, 0], verts[f, b, 1] - verts[f, a, 1],
                             verts[f, b, 2] - verts[f, a, 2])
            e2x, e2y, e2z = (verts[f, c, 0] - verts[f, a, 0], verts[f, c, 1] - verts[f, a, 1],
                             verts[f, c, 2] - verts[f, a, 2])
            # face_normals' -cross(e1, e2) (the pixel frame is left-handed: see engine.geometry.mesh)
            fn[k, 0] = e1z * e2y - e1y * e2z
            fn[k, 1] = e1x * e2z - e1z * e2x
            fn[k, 2] = e1y * e2x - e1x * e2y
        for g in range(n_groups):
            nx = ny = nz = 0.0
            for m in range(ptr[g], ptr[g + 1]):
                k = members[m]
                nx += fn[k, 0]
                ny += fn[k, 1]
                nz += fn[k, 2]
            out[f, g] = nz / max(np.sqrt(nx * nx + ny * ny + nz * nz), 1e-12)


def summed_normal_z(verts: np.ndarray, corners: np.ndarray, ptr: np.ndarray, members: np.ndarray) -> np.ndarray:
    """(B, G) z of the unit sum of area-weighted normals of each group's triangles, on (B, V, 3) pixel-frame verts.
    ``corners``: (K, 3) the triangles; group g sums triangles ``members[ptr[g]:ptr[g + 1]]`` (a 0/1 incidence
    matrix in CSR form). A vertex's normal is its group of incident triangles; only z and the length are kept."""
    v = np.ascontiguousarray(verts, dtype=np.float64)
    out = np.empty((v.shape[0], len(ptr) - 1))
    _summed_normal_z_kernel(v, corners, ptr, members, out)
    return out


@njit(cache=True, nogil=True)
def _best_rotations_kernel(src_c: np.ndarray, src_sum: np.ndarray, dst: np.ndarray, out: np.ndarray) -> None:
    n_faces, n_points = dst.shape[0], dst.shape[1]
    cov = np.empty((3, 3))
    for f in range(n_faces):
        mean = np.zeros(3)
        cov[:] = 0.0
        for i in range(n_points):
            for r in range(3):
                d = dst[f, i, r]
                mean[r] += d
                for c in range(3):
                    cov[r, c] += d * src_c[i, c]
        for r in range(3):
            for c in range(3):
                cov[r, c] -= mean[r] / n_points * src_sum[c]
        u, _, vt = np.linalg.svd(cov)
        if np.linalg.det(u @ vt) < 0:   # exclude reflections: diag(1, 1, -1) between u and vt
            vt[2] *= -1.0
        out[f] = u @ vt


def best_rotations_compiled(centred: tuple[np.ndarray, np.ndarray], dst: np.ndarray) -> np.ndarray:
    """``rotation.best_rotations`` (orthogonal Procrustes of a fixed, centred source onto each of (B, N, 3)
    ``dst``, reflection excluded) as one compiled loop; ``centred`` is ``rotation.centred_source(src)``, src with
    the same N points as ``dst``."""
    src_c, src_sum = centred
    d = np.ascontiguousarray(dst, dtype=np.float64)
    out = np.empty((d.shape[0], 3, 3))
    _best_rotations_kernel(src_c, src_sum, d, out)
    return out
