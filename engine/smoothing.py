"""One-Euro filter (Casiez et al. 2012) for landmark jitter: smooth when still, responsive when moving."""
from __future__ import annotations

import math

import numpy as np


class OneEuroFilter:
    """Driven by the frames' own timestamps (so dropped frames only lengthen the step); restarts from the new
    value when time goes back (a seek back, a loop) or jumps ahead by more than ``max_gap`` seconds (a seek ahead,
    a stall): nothing on the far side of a jump says anything about the face now."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0,
                 max_gap: float = 0.5) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.max_gap = max_gap
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    @staticmethod
    def _alpha(cutoff: float | np.ndarray, dt: float):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if (self.x is None or self.t is None or t <= self.t or t - self.t > self.max_gap
                or x.shape != self.x.shape):
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), t
            return x
        dt = t - self.t
        dx = (x - self.x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        cutoff = self.min_cutoff + self.beta * np.abs(self.dx)
        a = self._alpha(cutoff, dt)
        self.x = a * x + (1 - a) * self.x
        self.t = t
        return self.x.copy()
