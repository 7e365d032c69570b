"""HS-U-Net: the hierarchically supervised U-Net of CPRFA (Wu et al.) that turns a 120x120 crop into a densely
annotated face image (DAFI): per pixel the normalised mean-shape coordinate (x, y, z) in [0, 1]^3 of the visible
face-surface point (engine/geometry/dafi.py defines the normalisation) and a foreground mask.

Encoder: four levels (120, 60, 30, 15 px), two 3x3 convolutions each (BatchNorm + ReLU; the first of levels 2-4
with stride 2). Decoder: bilinear x2 upsampling, concatenation with the encoder's skip, two 3x3 convolutions, at 30,
60 and 120 px. Each decoder level has a 1x1 head with 4 channels: 3 DAFI channels (sigmoid) and 1 mask logit. The
three heads are the hierarchical supervision (the paper supervises the decoder at three scales); at inference only
the 120 px head is used (``forward(..., all_scales=False)``, and the export).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DAFI_CHANNELS = 3
HEAD_CHANNELS = DAFI_CHANNELS + 1          # DAFI + mask logit
DEFAULT_WIDTHS = (16, 32, 64, 96)          # channels at 120, 60, 30, 15 px (see the note below)
SCALES = (30, 60, 120)                     # supervised decoder resolutions, coarse to fine
# Width: measured side by side (a one-off script alternating the two widths, not kept; `python main.py train
# cprfa-dafi --benchmark` measures the same training images/s; "new" data path, batch 32, 2 threads, two rounds): (16, 24, 48, 64) 78.5 / 74.9 training images/s, (16, 32, 64, 96) 58.0 / 56.2;
# one ORT thread 4.9 vs 5.8 ms per face for the U-Net alone. The wider one is the default: every later stage
# depends on the DAFI's accuracy (the retrieval threshold is 0.01 in code space), and the whole method stays at
# about half the 30 ms budget.


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DecoderLevel(nn.Module):
    """x2 bilinear upsampling of the coarser features, concatenated with the skip, two convolutions, a 1x1 head."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(cin + cskip, cout), conv_bn_relu(cout, cout))
        self.head = nn.Conv2d(cout, HEAD_CHANNELS, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.body(torch.cat([x, skip], 1))
        return x, self.head(x)


class HSUNet(nn.Module):
    """(B, 3, 120, 120) image in [-1, 1] -> DAFI heads. ``forward`` returns a list of (B, 4, s, s) raw heads, one per
    scale in ``SCALES`` order (channels 0-2: DAFI logits, 3: mask logit); ``dafi`` gives the finest one decoded."""

    def __init__(self, widths: tuple[int, int, int, int] = DEFAULT_WIDTHS) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.enc1 = nn.Sequential(conv_bn_relu(3, w1), conv_bn_relu(w1, w1))                # 120
        self.enc2 = nn.Sequential(conv_bn_relu(w1, w2, 2), conv_bn_relu(w2, w2))            # 60
        self.enc3 = nn.Sequential(conv_bn_relu(w2, w3, 2), conv_bn_relu(w3, w3))            # 30
        self.enc4 = nn.Sequential(conv_bn_relu(w3, w4, 2), conv_bn_relu(w4, w4))            # 15
        self.dec3 = DecoderLevel(w4, w3, w3)                                                # 30
        self.dec2 = DecoderLevel(w3, w2, w2)                                                # 60
        self.dec1 = DecoderLevel(w2, w1, w1)                                                # 120
        self.widths = tuple(widths)

    def forward(self, x: torch.Tensor, all_scales: bool = True) -> list[torch.Tensor]:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        d3, h3 = self.dec3(e4, e3)
        d2, h2 = self.dec2(d3, e2)
        _, h1 = self.dec1(d2, e1)
        return [h3, h2, h1] if all_scales else [h1]

    def dafi(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) DAFI in [0, 1] and (B, H, W) foreground probability of the finest head."""
        head = self(x, all_scales=False)[-1]
        return decode_head(head)


def decode_head(head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw (B, 4, H, W) head -> DAFI (B, 3, H, W) in [0, 1] (sigmoid) and foreground probability (B, H, W)."""
    return torch.sigmoid(head[:, :DAFI_CHANNELS]), torch.sigmoid(head[:, DAFI_CHANNELS])


def scale_targets(dafi: torch.Tensor, mask: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of a coarser head: (B, 3, H, W) DAFI and (B, H, W) float mask area-averaged to ``size``.

    The DAFI is averaged over the foreground pixels of each block only (background is not a coordinate) and the
    mask becomes the foreground fraction of the block (a soft target for the cross-entropy)."""
    if dafi.shape[-1] == size:
        return dafi, mask
    m = mask[:, None].float()
    num = F.adaptive_avg_pool2d(dafi * m, size)
    frac = F.adaptive_avg_pool2d(m, size)
    return num / frac.clamp_min(1e-6), frac[:, 0]


def hierarchical_loss(heads: list[torch.Tensor], dafi: torch.Tensor, mask: torch.Tensor,
                      mask_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The HS-U-Net loss summed over the supervised scales: L1 of the DAFI on foreground pixels (mean over the
    foreground) + ``mask_weight`` x binary cross-entropy of the mask (mean over all pixels).

    ``heads``: raw heads, coarse to fine; ``dafi`` (B, 3, 120, 120) in [0, 1], ``mask`` (B, 120, 120) bool/float at
    full resolution."""
    total = dafi.new_zeros(())
    parts: dict[str, float] = {}
    for head in heads:
        size = head.shape[-1]
        t_dafi, t_mask = scale_targets(dafi, mask, size)
        pred = torch.sigmoid(head[:, :DAFI_CHANNELS])
        fg = (t_mask > 0.5).to(pred.dtype)[:, None]
        l1 = ((pred - t_dafi).abs() * fg).sum() / (fg.sum() * DAFI_CHANNELS).clamp_min(1.0)
        ce = F.binary_cross_entropy_with_logits(head[:, DAFI_CHANNELS], t_mask.to(head.dtype))
        total = total + l1 + mask_weight * ce
        parts[f"l1_{size}"] = float(l1.detach())
        parts[f"ce_{size}"] = float(ce.detach())
    return total, parts
