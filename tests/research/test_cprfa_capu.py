"""research/cprfa_capu.py's dense sample (the paper's CAPU sample) measures the same reprojection errors as the
shipped round's sampler when it is given the same vertices."""
from __future__ import annotations

import torch

from engine.geometry import torch_cpr
from research.cprfa_capu import DenseSample


def test_dense_errors_match_the_shipped_sampler_on_the_same_vertices():
    torch.manual_seed(0)
    b, c, m = 3, 40, 5
    points = torch.randn(b, c, 3) * 50
    centre, scale = torch.zeros(3), 0.5
    pose = torch.tensor([[0.1, -0.3, 0.05, 1.0, 0.01, -0.02]]).repeat(b, 1) + 0.01 * torch.randn(b, 6)
    direction = 0.05 * torch.randn(b, 6)
    truth = pose + 1.0 * direction                       # the observations sit at t = 1 along the update
    obs = torch_cpr.project(truth, points, centre, scale)[..., :2]
    found = torch.ones(b, c)
    found[0, 30:] = 0                                    # a face with fewer found vertices
    shipped = torch_cpr.sample_reprojection_errors(pose, direction, points, obs, found, centre, scale, m=m, kappa=1.0)

    dense = DenseSample.__new__(DenseSample)             # the fields __init__ fills from a DAFI, set directly
    dense.points, dense.obs, dense.weight, dense.centre, dense.scale = points, obs, found, centre, scale
    params = torch.cat([torch.zeros(b, 50), pose], 1)
    update = torch.cat([torch.zeros(b, 50), direction], 1)
    mine = dense.errors(params, update, m)
    assert torch.allclose(mine, shipped, atol=1e-4)
    assert mine[:, m - 1].abs().max() < 1e-3             # zero error where the pose meets the observations
    assert (mine[:, 0] > mine[:, m - 1]).all()
