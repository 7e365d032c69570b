"""Cumulative error distribution plots."""
from __future__ import annotations

import numpy as np


def ced_plot(per_method: dict[str, np.ndarray], path: str, max_nme: float = 15.0) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    xs = np.linspace(0, max_nme, 300)
    for name, nme in per_method.items():
        nme = np.sort(np.asarray(nme))
        ax.plot(xs, np.searchsorted(nme, xs, side="right") / len(nme) * 100, label=name)
    ax.set_xlabel("NME (%)")
    ax.set_ylabel("images (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
