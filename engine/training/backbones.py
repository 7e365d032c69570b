"""The convolutional backbones more than one method's network is built on (torch: training and export only), so
no method's package imports another's. MobileNetV1 at width 0.5 is 3DDFA's backbone (baseline, 3DSTN)."""
from __future__ import annotations

import torch
from torch import nn


def conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def dw_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


MOBILENET_PLAN = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


class MobileNetBackbone(nn.Module):
    def __init__(self, width: float = 0.5) -> None:
        super().__init__()
        c = int(32 * width)
        layers = [conv_bn(3, c, 2)]
        for cout, s in MOBILENET_PLAN:
            layers.append(dw_block(c, int(cout * width), s))
            c = int(cout * width)
        self.features = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
