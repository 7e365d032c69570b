"""PRNet (Feng et al. 2018) at this project's scale: encoder of one convolution + 10 residual blocks down to 8x8,
decoder of 17 transposed convolutions back up to the UV position map; kernel size 4; ReLU (BatchNorm as in the
authors' code).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

MAP_SIZE = 64
INPUT_SIZE = 128  # the 120x120 crop is resized to 128 so four stride-2 stages land exactly on 8x8


class SameConv(nn.Module):
    """Kernel-4 convolution with TensorFlow-style 'same' padding (one more pixel after than before)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, k: int = 4) -> None:
        super().__init__()
        self.stride = stride
        self.k = k
        self.conv = nn.Conv2d(cin, cout, k, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.k - self.stride if x.shape[-1] % self.stride == 0 else self.k - 1
        a = total // 2
        return self.conv(F.pad(x, (a, total - a, a, total - a)))


class ResBlock(nn.Module):
    """PRNet's residual block: 1x1 (C/2) -> 4x4 stride s (C/2) -> 1x1 (C), projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = cout // 2
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            SameConv(mid, mid, stride), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False),
        )
        self.short = nn.Identity() if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.body(x) + self.short(x)))


class UpConv(nn.Module):
    """Kernel-4 transposed convolution: stride 2 doubles the size; stride 1 keeps it ('same', cropping one pixel)."""

    def __init__(self, cin: int, cout: int, stride: int, act: bool = True) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.ConvTranspose2d(cin, cout, 4, stride, 1, bias=not act)
        self.post = nn.Sequential(nn.BatchNorm2d(cout), nn.ReLU(inplace=True)) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.stride == 1:
            y = y[:, :, :-1, :-1]
        return self.post(y)


ENCODER = [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (128, 1), (128, 1), (128, 1)]
# 17 transposed convolutions: 8 -> 16 -> 32 -> 64
DECODER = [(128, 1), (64, 2), (64, 1), (32, 2), (32, 1), (32, 1), (16, 2), (16, 1), (8, 1), (8, 1), (8, 1),
           (8, 1), (8, 1), (3, 1), (3, 1), (3, 1), (3, 1)]
# the 128x128 map (the paper's rule: map resolution = input resolution): one more stride-2 stage, still 17 layers
DECODER_128 = [(128, 1), (64, 2), (64, 1), (32, 2), (32, 1), (32, 1), (16, 2), (16, 1), (16, 1), (8, 2), (8, 1),
               (8, 1), (8, 1), (3, 1), (3, 1), (3, 1), (3, 1)]
DECODERS = {64: DECODER, 128: DECODER_128}


class PRNet(nn.Module):
    """120x120 crop in [-1, 1] -> (B, 3, S, S) position map in crop pixels / 120 (x, y, centred z); S = 64 or 128."""

    def __init__(self, width: int = 16, mean_map: torch.Tensor | None = None, map_size: int = MAP_SIZE) -> None:
        super().__init__()
        if map_size not in DECODERS:
            raise ValueError(f"map size {map_size} not supported (one of {sorted(DECODERS)})")
        self.map_size = map_size
        # stride-2 stem: the 128x128 stage costs most and the 64x64 map does not need it
        self.stem = nn.Sequential(SameConv(3, width, 2), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        # the network predicts the offset from the training set's mean map (faster, steadier start)
        self.register_buffer("mean_map", mean_map if mean_map is not None else torch.zeros(1, 3, map_size, map_size))
        blocks, c = [], width
        for cout, s in ENCODER:
            blocks.append(ResBlock(c, cout, s))
            c = cout
        self.encoder = nn.Sequential(*blocks)
        ups = []
        for cout, s in DECODERS[map_size]:
            # the 3-channel layers stay linear: a ReLU there would cut the map's negative offsets from the mean
            ups.append(UpConv(c, cout, s, act=cout > 3))
            c = cout
        self.decoder = nn.Sequential(*ups)
        # start exactly at the mean map: a randomly initialised last layer adds ~50 px of noise to every texel
        nn.init.zeros_(ups[-1].conv.weight)
        nn.init.zeros_(ups[-1].conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return self.decoder(self.encoder(self.stem(x))) + self.mean_map


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


class FusedUpConv(nn.Module):
    """An eval-mode UpConv with its BatchNorm folded in. The stride-1 'same' transposed convolution becomes the
    equivalent plain convolution (flipped kernel, in/out swapped, padding 2 before and 1 after), which ONNX Runtime
    runs several times faster and which needs no output crop."""

    def __init__(self, up: UpConv) -> None:
        super().__init__()
        w = up.conv.weight.detach().clone()                       # (cin, cout, 4, 4)
        b = up.conv.bias.detach().clone() if up.conv.bias is not None else torch.zeros(w.shape[1])
        self.act = not isinstance(up.post, nn.Identity)
        if self.act:
            scale, shift = _bn_scale_shift(up.post[0])
            w, b = w * scale.detach()[None, :, None, None], b * scale.detach() + shift.detach()
        self.stride = up.stride
        if up.stride == 1:
            self.conv: nn.Module = nn.Conv2d(w.shape[0], w.shape[1], 4, 1, 0, bias=True)
            self.conv.weight.data = w.flip(2, 3).transpose(0, 1).contiguous()
        else:
            self.conv = nn.ConvTranspose2d(w.shape[0], w.shape[1], 4, up.stride, 1, bias=True)
            self.conv.weight.data = w
        self.conv.bias.data = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.pad(x, (2, 1, 2, 1)) if self.stride == 1 else x)
        return F.relu(y) if self.act else y


def fused_for_export(net: PRNet) -> PRNet:
    """What ships to ONNX: a copy of the trained PRNet with its decoder fused (same outputs, eval mode)."""
    fused = copy.deepcopy(net).eval()
    fused.decoder = nn.Sequential(*[FusedUpConv(u) for u in net.decoder])
    return fused


class MapWithReadout(nn.Module):
    """The exported graph of a dense-layout PRNet: the position map and the points read from it in the graph
    (each a fixed weighted sum of a few texels: the layout's ``readout_index`` / ``readout_weight``), so the ONNX
    file carries its own readout and decoders need no layout data for the points."""

    def __init__(self, net: nn.Module, readout_index: torch.Tensor, readout_weight: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("readout_index", readout_index.long())
        self.register_buffer("readout_weight", readout_weight.float())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pmap = self.net(x)
        return pmap, read_points(pmap, self.readout_index, self.readout_weight)


def read_points(pmap: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) maps, (P, K) flat texel indices and weights -> (B, P, 3) read-out points (map units)."""
    flat = pmap.flatten(2)                                   # (B, 3, S*S)
    vals = flat[:, :, index.reshape(-1)].reshape(pmap.shape[0], 3, *index.shape)
    return (vals * weight).sum(-1).transpose(1, 2)
