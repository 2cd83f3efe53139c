"""Models defined in a test module, built through ``source: python`` as a user's own code would be."""

from __future__ import annotations

from torch import nn


class TinyConvNet(nn.Module):
    """Two conv blocks and a linear head; ``width`` channels per block."""

    def __init__(self, width: int = 8, classes: int = 10):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes))

    def forward(self, x):
        return self.head(self.block2(self.block1(x)))


def tiny_conv_net(width: int = 8) -> TinyConvNet:
    return TinyConvNet(width=width)


def not_a_module(**_):
    return "a string"


def broken(**_):
    raise RuntimeError("checkpoint layout unknown")


NOT_CALLABLE = 42
