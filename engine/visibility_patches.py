"""The image half of the visibility model: a tiny CNN that reads a patch of the crop around each AFLW point.

AFLW's annotators flag a point hidden when they cannot see it: turned away from the camera, but also under hair,
a hand or glasses, which no normal or z-buffer can see. For each of the 19 AFLW points that sit on the 68-point face
(``SITES``: the 21 less the ears; eye and mouth centres are means of landmarks) a PATCH x PATCH colour patch
spanning +-PATCH_HALF of the face width is sampled around the point and a CNN with one output per site kind
(``SITE_KIND``: the two sides of the face share one, their patches mirrored so "towards the ear" reads the same
way) gives the logit of "visible". It is trained with torch (engine/evaluation/visibility_fit.train_patch_net) on
the teacher's landmarks of training-split crops and exported to ONNX; the app runs it with ONNX Runtime
(``PatchNetRunner``, one thread), ``patch_logits`` is the same network in numpy (the reference the tests hold the
export to).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

PATCH = 16
PATCH_HALF = 0.18
# AFLW point -> the landmarks whose mean is its place on the 68-point face (the ears, 12 and 16, have none)
SITES: dict[int, tuple[int, ...]] = {0: (17,), 1: (19,), 2: (21,), 3: (22,), 4: (24,), 5: (26,),
                                     6: (36,), 7: (37, 38, 40, 41), 8: (39,), 9: (42,), 10: (43, 44, 46, 47),
                                     11: (45,), 13: (31,), 14: (30,), 15: (35,), 17: (48,), 18: (62, 66), 19: (54,),
                                     20: (8,)}
SITE_POINTS = tuple(SITES)
# the site's kind (mirror pairs share one) and whether its patch is mirrored (the image-left half of the face)
_PAIRS = {0: 5, 1: 4, 2: 3, 6: 11, 7: 10, 8: 9, 13: 15, 17: 19}
MIRROR_OF = {**_PAIRS, **{v: k for k, v in _PAIRS.items()}}
SITE_KIND = np.array([sorted({min(p, MIRROR_OF.get(p, p)) for p in SITE_POINTS}).index(
    min(p, MIRROR_OF.get(p, p))) for p in SITE_POINTS])
SITE_MIRRORED = np.array([p in _PAIRS for p in SITE_POINTS])
N_KINDS = int(SITE_KIND.max()) + 1


@lru_cache(maxsize=1)
def _site_matrix() -> np.ndarray:
    """(19, 68) the site positions as averages of the landmarks."""
    m = np.zeros((len(SITES), 68))
    for k, members in enumerate(SITES.values()):
        m[k, list(members)] = 1.0 / len(members)
    return m


@lru_cache(maxsize=1)
def _grid() -> np.ndarray:
    """(19, PATCH*PATCH, 2) each site's sampling offsets in units of PATCH_HALF x the face width, x mirrored on the
    image-left sites."""
    t = (np.arange(PATCH) + 0.5) / PATCH * 2.0 - 1.0
    g = np.stack(np.meshgrid(t, t), -1).reshape(-1, 2)
    sign = np.where(SITE_MIRRORED, -1.0, 1.0)
    return g[None] * np.stack([sign, np.ones(len(sign))], -1)[:, None, :]


def site_positions(landmarks: np.ndarray) -> np.ndarray:
    """(B, 19, 2) the AFLW points' places from (B, 68, 2+) landmarks."""
    return np.einsum("sl,bld->bsd", _site_matrix(), np.asarray(landmarks, np.float64)[:, :, :2])


def site_patches(crops: np.ndarray, landmarks: np.ndarray, jitter: np.ndarray | None = None,
                 scale: np.ndarray | None = None) -> np.ndarray:
    """(B, 19, 3, PATCH, PATCH) float32: the colour crop around each site (nearest pixel), each channel less the
    crop's mean, over the crop's grey spread (both from a 30 x 18 subsample). ``crops`` (B, 120, 120, 3) uint8
    BGR, ``landmarks`` (B, 68, 2+) crop pixels (the face width is their x extent). ``jitter`` (B, 19, 2) pixels and ``scale`` (B,) only in training (the methods' landmarks are off the
    teacher's by a few pixels)."""
    crops = np.asarray(crops)
    b, h, w = crops.shape[:3]
    lm = np.asarray(landmarks, np.float64)[:, :, :2]
    width = lm[:, :, 0].max(1) - lm[:, :, 0].min(1)
    if scale is not None:
        width = width * scale
    centres = _site_matrix() @ lm                                                    # (B, 19, 2)
    if jitter is not None:
        centres = centres + jitter
    pts = _grid()[None] * (PATCH_HALF * width)[:, None, None, None]
    pts += centres[:, :, None, :] + 0.5
    np.clip(pts, 0.0, (w - 1, h - 1), out=pts)
    ij = pts.astype(np.int64)                                                        # floor(x + 0.5): nearest pixel
    idx = ij[..., 1] * w + ij[..., 0]                                                # (B, 19, P*P)
    values = crops.reshape(b, h * w, 3)[np.arange(b)[:, None, None], idx]           # (B, 19, P*P, 3) uint8
    # the crop's colour statistics from every 4th row and every 7th column (0, 7, ..., 119 on a 120-pixel crop:
    # the same columns in a mirrored crop): a 27th of the cost, the same numbers to a fraction of a grey level
    sample = crops[:, ::4, ::7].reshape(b, -1, 3).astype(np.float32)
    mean = sample.mean(1)                                                            # (B, 3)
    spread = sample.mean(2).std(1) + 1e-3                                            # (B,)
    out = np.empty((b, len(SITES), 3, PATCH * PATCH), np.float32)                    # channels first, contiguous
    np.subtract(values.transpose(0, 1, 3, 2), mean[:, None, :, None], out=out, casting="unsafe")
    out /= spread[:, None, None, None]
    return out.reshape(b, len(SITES), 3, PATCH, PATCH)


def _conv3x3_relu_pool(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A 3x3 'same' convolution, ReLU and 2x2 max pooling of (N, C, H, W) with torch's (O, C, 3, 3) weights."""
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))        # (N, C, H, W, 3, 3)
    cols = cols.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * wd, c * 9)
    y = cols @ w.reshape(len(w), -1).T + bias                                      # (N*H*W, O)
    y = np.maximum(y, 0.0).reshape(n, h // 2, 2, wd // 2, 2, -1).max(axis=(2, 4))   # (N, H/2, W/2, O)
    return y.transpose(0, 3, 1, 2)


def patch_logits(net: dict[str, np.ndarray], patches: np.ndarray) -> np.ndarray:
    """(B, 19) logit of "visible" at each site from ``site_patches``' output, with the trained ``net``'s arrays
    (the torch module's state dict: conv1, conv2, hidden, out)."""
    b, s = patches.shape[:2]
    x = patches.reshape(b * s, *patches.shape[2:]).astype(np.float32)
    x = _conv3x3_relu_pool(x, net["conv1.weight"], net["conv1.bias"])
    x = _conv3x3_relu_pool(x, net["conv2.weight"], net["conv2.bias"])
    x = np.maximum(x.reshape(b * s, -1) @ net["hidden.weight"].T + net["hidden.bias"], 0.0)
    y = x @ net["out.weight"].T + net["out.bias"]                                   # (B*19, N_KINDS)
    kinds = np.tile(SITE_KIND, b)
    return y[np.arange(b * s), kinds].reshape(b, s)


NET_KEYS = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "hidden.weight", "hidden.bias",
            "out.weight", "out.bias")


def session_options():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1   # 19 patches a face: threads cost more than they save
    opts.inter_op_num_threads = 1
    return opts


class PatchNetRunner:
    """The exported CNN (ONNX bytes: input "patches" (N, 3, PATCH, PATCH), output "logits" (N, N_KINDS)) in ONNX
    Runtime; ``logits`` is ``patch_logits`` for the app."""

    def __init__(self, onnx_bytes: bytes) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(onnx_bytes, session_options(), providers=["CPUExecutionProvider"])

    def logits(self, patches: np.ndarray) -> np.ndarray:
        """(B, 19) logit of "visible" at each site from ``site_patches``' (B, 19, 3, PATCH, PATCH) output."""
        b, s = patches.shape[:2]
        y = self.session.run(None, {"patches": np.ascontiguousarray(patches.reshape(b * s, 3, PATCH, PATCH),
                                                                    np.float32)})[0]
        return y[np.arange(b * s), np.tile(SITE_KIND, b)].reshape(b, s)
