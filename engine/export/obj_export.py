"""Textured Wavefront .obj of one face: vertices, UVs, a material file and a PNG texture cut from the frame.

The texture is projective: the PNG is the frame's region under the face (its vertices' image bounding box plus a
margin), and each vertex's UV is its own image position inside that region. So every visible part of the surface
shows exactly the pixels it was aligned on; a part hidden in the frame (the far cheek of a profile) shows what
hides it, as any single-view texture does.

Triangles are written with one winding (counter-clockwise seen from outside the face): the face model's triangle
list has 50 edges that its two triangles traverse in the same direction, so ``orient_triangles`` makes the list
consistent (breadth-first over shared edges) and then turns the whole surface to face outward.
"""
from __future__ import annotations

from collections import deque

import cv2
import numpy as np

TEXTURE_MARGIN = 0.05   # of the face's size, around its vertices' bounding box


def _edge_map(tris: np.ndarray) -> dict[tuple[int, int], list[int]]:
    edges: dict[tuple[int, int], list[int]] = {}
    for t, (a, b, c) in enumerate(tris):
        for u, v in ((a, b), (b, c), (c, a)):
            edges.setdefault((min(u, v), max(u, v)), []).append(t)
    return edges


def _directed(tri: np.ndarray, u: int, v: int) -> bool:
    """Whether triangle ``tri`` traverses its edge u-v from u to v."""
    a, b, c = (int(x) for x in tri)
    return (a, b) == (u, v) or (b, c) == (u, v) or (c, a) == (u, v)


def inconsistent_edges(tris: np.ndarray) -> int:
    """Edges that their two triangles traverse in the same direction (0 for a consistently wound surface)."""
    tris = np.asarray(tris)
    bad = 0
    for (u, v), ts in _edge_map(tris).items():
        if len(ts) == 2 and _directed(tris[ts[0]], u, v) == _directed(tris[ts[1]], u, v):
            bad += 1
    return bad


_CONSISTENT: dict[bytes, tuple[np.ndarray, list[np.ndarray]]] = {}   # topology -> (wound triangles, patches)


def consistent_winding(tris: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """``tris`` with one winding per connected patch (breadth-first over shared edges: a neighbour must traverse
    a shared edge the other way), and each patch's triangle indices. Depends on the topology alone, so it is
    computed once per triangle list (the face model's, PRNet's grid) and reused for every face."""
    tris = np.ascontiguousarray(tris, dtype=np.int64)
    key = tris.tobytes()
    if key in _CONSISTENT:
        return _CONSISTENT[key]
    tris = tris.copy()
    edges = _edge_map(tris)
    seen = np.zeros(len(tris), bool)
    patches = []
    for seed in range(len(tris)):
        if seen[seed]:
            continue
        seen[seed] = True
        patch, queue = [seed], deque([seed])
        while queue:
            t = queue.popleft()
            a, b, c = (int(x) for x in tris[t])
            for u, v in ((a, b), (b, c), (c, a)):
                for n in edges[(min(u, v), max(u, v))]:
                    if n == t or seen[n]:
                        continue
                    if _directed(tris[n], u, v):
                        tris[n] = tris[n][[0, 2, 1]]
                    seen[n] = True
                    patch.append(n)
                    queue.append(n)
        patches.append(np.array(patch))
    if len(_CONSISTENT) > 8:   # a handful of topologies exist; never grow without bound
        _CONSISTENT.clear()
    _CONSISTENT[key] = (tris, patches)
    return tris, patches


def orient_triangles(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """``tris`` with one consistent winding, each connected patch turned so its normals point away from the
    surface's centroid (outward: toward the camera for a face)."""
    wound, patches = consistent_winding(tris)
    out = wound.copy()
    verts = np.asarray(verts, np.float64)
    centre = verts[np.unique(wound)].mean(0)
    for patch in patches:
        p = wound[patch]
        normals = np.cross(verts[p[:, 1]] - verts[p[:, 0]], verts[p[:, 2]] - verts[p[:, 0]])
        if ((verts[p].mean(1) - centre) * normals).sum() < 0:
            out[patch] = p[:, [0, 2, 1]]
    return out


def texture_region(verts_img: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) integer pixel region of the frame the texture is cut from, inside the image."""
    h, w = shape[:2]
    lo, hi = verts_img[:, :2].min(0), verts_img[:, :2].max(0)
    m = TEXTURE_MARGIN * float((hi - lo).max())
    x0, y0 = (int(np.clip(np.floor(v - m), 0, n - 1)) for v, n in zip(lo, (w, h)))
    x1, y1 = (int(np.clip(np.ceil(v + m), 0, n - 1)) + 1 for v, n in zip(hi, (w, h)))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def textured_obj(verts_img: np.ndarray, tris: np.ndarray, image: np.ndarray, stem: str
                 ) -> tuple[str, str, bytes]:
    """(.obj text, .mtl text, PNG bytes) of a mesh in image pixels (x right, y down, z toward the camera); the .obj
    refers to ``stem``.mtl and the .mtl to ``stem``.png. OBJ is y-up: y is written negated, a right-handed frame."""
    verts_img = np.asarray(verts_img, np.float64)
    x0, y0, x1, y1 = texture_region(verts_img, image.shape)
    tex = np.ascontiguousarray(image[y0:y1, x0:x1])
    if tex.ndim == 2:
        tex = cv2.cvtColor(tex, cv2.COLOR_GRAY2BGR)
    ok, png = cv2.imencode(".png", tex)
    if not ok:
        raise OSError("cannot encode the texture PNG")
    tw, th = x1 - x0, y1 - y0
    # UV (0, 0) is the texture's bottom-left corner; the pixel centre (i, j) sits at ((i + 0.5) / w, ...)
    u = (verts_img[:, 0] - x0 + 0.5) / tw
    v = 1.0 - (verts_img[:, 1] - y0 + 0.5) / th
    faces = orient_triangles(verts_img * np.array([1.0, -1.0, 1.0]), tris) + 1
    out = [f"mtllib {stem}.mtl", "o face", f"usemtl {stem}"]
    out += [f"v {x:.3f} {-y:.3f} {z:.3f}" for x, y, z in verts_img]
    out += [f"vt {a:.6f} {b:.6f}" for a, b in zip(u, v)]
    out += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in faces]
    mtl = "\n".join([f"newmtl {stem}", "Ka 1.000 1.000 1.000", "Kd 1.000 1.000 1.000", "Ks 0.000 0.000 0.000",
                     "d 1.0", "illum 1", f"map_Kd {stem}.png"]) + "\n"
    return "\n".join(out) + "\n", mtl, png.tobytes()
