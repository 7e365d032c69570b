"""The visualization layer's maths (engine/geometry/visualization.py, PIFA's Eq. 9-11) against a direct per-pixel
computation, and its torch twin (engine/geometry/torch_visualization.py) against numpy in value and gradient."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine.facemodel import load_face_model  # noqa: E402
from engine.geometry import visualization as nv  # noqa: E402
from engine.geometry import torch_visualization as tv  # noqa: E402


@pytest.fixture(scope="module")
def fm():
    return load_face_model()


# ---- the visualization maths: numpy reference, direct loop, torch twin ------------------------------------------
def random_scene(rng, n=40, size=16):
    xy = rng.uniform(-1.5, size + 0.5, size=(n, 2))
    xy[:6] = np.round(xy[6:12]) + rng.uniform(-0.4, 0.4, size=(6, 2))  # several vertices share a pixel
    return xy, rng.normal(size=n), rng.normal(size=n), rng.random(n) > 0.2


def direct_rendering(xy, values, depth, keep, size, sigma, eps=1e-2):
    """Eq. 9-11 pixel by pixel, written independently of the renderer: front vertices by pairwise comparison, each
    pixel the weighted average of the front vertices' values, a vertex's weight its bilinear shares of the grid
    points around it, each spread by the Gaussian taps."""
    taps = nv.gaussian_taps(sigma)
    r = (len(taps) - 1) // 2
    front = []
    for q in range(len(xy)):
        if not keep[q]:
            continue
        pq = np.round(xy[q])
        hidden = any(keep[o] and np.array_equal(np.round(xy[o]), pq) and depth[o] > depth[q] for o in range(len(xy)))
        if not hidden:
            front.append(q)
    out = np.zeros((size, size))
    for v in range(size):
        for u in range(size):
            num = den = 0.0
            for q in front:
                x, y = xy[q]
                w = 0.0
                for cx in (np.floor(x), np.floor(x) + 1):
                    for cy in (np.floor(y), np.floor(y) + 1):
                        inside = 0 <= cx < size and 0 <= cy < size
                        if inside and abs(u - cx) <= r and abs(v - cy) <= r:
                            share = (1 - abs(x - cx)) * (1 - abs(y - cy))
                            w += share * taps[int(u - cx) + r] * taps[int(v - cy) + r]
                num += w * values[q]
                den += w
            out[v, u] = num / (den + eps)
    return out


@pytest.mark.parametrize("sigma", [0.7, 1.3])
def test_rendering_matches_a_direct_per_pixel_computation(sigma):
    rng = np.random.default_rng(3)
    xy, values, depth, keep = random_scene(rng)
    want = direct_rendering(xy, values, depth, keep, 16, sigma)
    got = nv.splat(xy, values, depth, keep, 16, sigma)
    assert np.abs(want).max() > 0.1
    assert np.allclose(got, want, atol=1e-12)
    tgot = tv.splat(torch.from_numpy(xy)[None], torch.from_numpy(values)[None], torch.from_numpy(depth)[None],
                    torch.from_numpy(keep)[None], 16, sigma)
    assert np.allclose(tgot[0, 0].numpy(), want, atol=1e-12)


def test_nearest_vertex_wins_its_pixel_and_pruned_vertices_vanish():
    xy = np.array([[5.1, 5.2], [4.9, 4.8], [10.0, 10.0]])
    values = np.array([1.0, -1.0, 2.0])
    one = nv.splat(xy, values, np.array([1.0, 2.0, 0.0]), np.array([True, True, True]), 16, 0.8)
    assert one[5, 5] < 0                                   # vertex 1 is nearer: its -1 shows, vertex 0's +1 does not
    swapped = nv.splat(xy, values, np.array([2.0, 1.0, 0.0]), np.array([True, True, True]), 16, 0.8)
    assert swapped[5, 5] > 0
    pruned = nv.splat(xy, values, np.array([2.0, 1.0, 0.0]), np.array([True, True, False]), 16, 0.8)
    assert pruned[10, 10] == 0.0 and swapped[10, 10] > 1.5


def test_torch_twins_match_numpy_in_value_and_gradient(fm):
    rng = np.random.default_rng(0)
    xy, values, depth, keep = random_scene(rng)
    xy = xy + 0.013                                        # keep away from pixel centres and edges
    weights = rng.normal(size=(16, 16))
    txy = torch.from_numpy(xy)[None].requires_grad_(True)
    tval = torch.from_numpy(values)[None].requires_grad_(True)
    out = tv.splat(txy, tval, torch.from_numpy(depth)[None], torch.from_numpy(keep)[None], 16, 1.1)
    (out[0, 0] * torch.from_numpy(weights)).sum().backward()

    def f(x, v):
        return (nv.splat(x, v, depth, keep, 16, 1.1) * weights).sum()

    h = 1e-6
    for q in range(len(xy)):
        for d in range(2):
            e = np.zeros_like(xy)
            e[q, d] = h
            assert np.isclose(txy.grad[0, q, d].item(), (f(xy + e, values) - f(xy - e, values)) / (2 * h), atol=1e-5)
        e = np.zeros_like(values)
        e[q] = h
        assert np.isclose(tval.grad[0, q].item(), (f(xy, values + e) - f(xy, values - e)) / (2 * h), atol=1e-5)

    # the camera twins: weak-perspective projection and frontability
    from engine.geometry.rotation import euler_to_matrix

    m = np.concatenate([euler_to_matrix(35, -10, 5)[:2] * 70.0, [[3.0], [-2.0]]], axis=1)
    pts = fm.mean[:50].astype(np.float64) / 1e5
    normals = rng.normal(size=(50, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    tm = torch.from_numpy(m)[None].requires_grad_(True)
    tp = tv.weak_perspective(tm, torch.from_numpy(pts)[None])[0]
    tg = tv.frontability(tm, torch.from_numpy(normals))[0]
    assert np.allclose(tp.detach().numpy(), nv.weak_perspective(m, pts))
    assert np.allclose(tg.detach().numpy(), nv.frontability(m, normals))
    r = rng.normal(size=(50, 3))
    ((tp * torch.from_numpy(r)).sum() + tg.sum()).backward()
    for i in range(2):
        for j in range(4):
            e = np.zeros_like(m)
            e[i, j] = h
            num = ((nv.weak_perspective(m + e, pts) * r).sum() + nv.frontability(m + e, normals).sum()
                   - (nv.weak_perspective(m - e, pts) * r).sum() - nv.frontability(m - e, normals).sum()) / (2 * h)
            assert np.isclose(tm.grad[0, i, j].item(), num, rtol=1e-5, atol=1e-5)
