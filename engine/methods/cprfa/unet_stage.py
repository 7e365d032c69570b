"""CPRFA's first stage as both of its recipes use it: the shipped HS-U-Net (``cprfa-dafi``, trained by
engine/methods/cprfa/train_dafi.py and frozen by engine/methods/cprfa/train.py) and the DAFI's own 68 landmarks
(the first recipe validates with them, the second reports them as a stage of its validation)."""
from __future__ import annotations

import numpy as np
import torch

from engine.bfm import keypoint_rows, load_bfm
from engine.methods.cprfa.dafi_targets import load_codebook
from engine.methods.cprfa.hsunet import DEFAULT_WIDTHS, HSUNet

DAFI_WEIGHTS = "cprfa-dafi.pt"


def load_unet(widths: tuple[int, int, int, int] = DEFAULT_WIDTHS) -> tuple[HSUNet, bool]:
    """The HS-U-Net from weights/cprfa-dafi.pt, and whether it was trained (False: freshly initialised).

    A checkpoint that still carries its optimizer state is an unfinished run handed over to the next session
    (``main.py train cprfa-dafi --resume`` continues it): it does not count as trained, so the CPR rounds never
    train on, or ship with, a half-trained U-Net."""
    from engine.paths import weights_path  # looked up per call: tests point it at a private folder

    net = HSUNet(widths)
    path = weights_path(DAFI_WEIGHTS)
    if not path.exists():
        return net, False
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if ck.get("optimizer") is not None:
        return net, False
    net.load_state_dict(ck["model"])
    return net, True


def landmark_codes() -> np.ndarray:
    """(68, 3) codes of the BFM's 68 landmark vertices (the mean shape normalised as the DAFI is)."""
    bfm = load_bfm()
    cb = load_codebook()
    kp = keypoint_rows(bfm)
    return cb.normalise(bfm["mean"].reshape(-1, 3)[kp].astype(np.float64))


def dafi_landmarks(dafi: torch.Tensor, fg: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The DAFI's own 68 landmarks: for each landmark code (68, 3), the centre of the foreground pixel whose DAFI
    value is nearest to it. ``dafi`` (B, 3, H, W) in [0, 1], ``fg`` (B, H, W) foreground probability. -> (B, 68, 2)
    crop pixels (x, y), pixel centres at integers. Hidden landmarks land on the visible surface point nearest in
    code space (a silhouette point): this is the DAFI's own accuracy, before any model fitting."""
    b, _, h, w = dafi.shape
    idx = []
    for s in range(0, b, 8):  # 8 faces at a time: a (8, HW, 68) distance table is 31 MB
        flat = dafi[s:s + 8].flatten(2).transpose(1, 2)                           # (b, HW, 3)
        d2 = ((flat[:, :, None, :] - codes[None, None]) ** 2).sum(-1)             # (b, HW, 68)
        d2 = d2 + (fg[s:s + 8].flatten(1) <= 0.5).to(d2.dtype)[:, :, None] * 1e3   # background never wins
        idx.append(d2.argmin(1))                                                  # (b, 68)
    idx = torch.cat(idx)
    return torch.stack([(idx % w).to(dafi.dtype), torch.div(idx, w, rounding_mode="floor").to(dafi.dtype)], -1)
