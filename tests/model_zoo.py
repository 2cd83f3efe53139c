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


class _NaturalAndSilent(nn.Module):
    """ReLU on the natural channels; a softplus on the last, so that a visualisation starting from
    grey has a gradient to follow into it while natural images leave it near zero."""

    def forward(self, x):
        import torch

        return torch.cat([x[:, :-1].relu(), nn.functional.softplus(x[:, -1:])], 1)


class SilentPathNet(nn.Module):
    """A planted "silent" unit (Geirhos et al., ICML 2024): unit 0 of ``units`` reads the natural
    channels of ``lower`` plus, with a large weight, a checkerboard detector whose negative bias keeps
    it near zero on natural images; unit 1 reads the natural channels only.

    On photographs the two units agree; a visualisation of unit 0 rides the checkerboard path.
    """

    def __init__(self, silent_weight: float = 50.0, bias: float = -6.0):
        import torch

        super().__init__()
        self.lower = nn.Conv2d(3, 4, 3, padding=1)
        self.lower_act = _NaturalAndSilent()
        self.units = nn.Conv2d(4, 2, 1, bias=False)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
        with torch.no_grad():
            w = torch.zeros(4, 3, 3, 3)
            w[0] = 1 / 27  # brightness
            w[1, 0], w[1, 1] = 1 / 9, -1 / 9  # red against green
            w[2, 2], w[2, 0] = 1 / 9, -1 / 9  # blue against red
            checker = torch.tensor([[1.0, -1, 1], [-1, 1, -1], [1, -1, 1]])
            w[3] = (checker - checker.mean()).expand(3, 3, 3)
            self.lower.weight.copy_(w)
            self.lower.bias.copy_(torch.tensor([3.0, 1.0, 1.0, bias]))  # the natural channels stay above zero
            self.units.weight.copy_(torch.tensor([[1.0, 1, 1, silent_weight], [1.0, 1, 1, 0]])[:, :, None, None])

    def forward(self, x):
        return self.head(self.units(self.lower_act(self.lower(x))))


def silent_path_net(**kwargs) -> SilentPathNet:
    return SilentPathNet(**kwargs)
