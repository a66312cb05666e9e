"""An independent reference for ESRGAN's RRDBNet, written from BasicSR's
basicsr/archs/rrdbnet_arch.py (torch.cat, optional kept-input lists), and helpers shared by the
RRDBNet and foreign-checkpoint tests."""

import math

import torch
import torch.nn.functional as F
from torch import nn

DENSE = [[], [1], [1, 2], [1, 2, 3], [1, 2, 3, 4]]


class RefRDB(nn.Module):
    def __init__(self, nf, gc, kept=None):
        super().__init__()
        self.kept = DENSE if kept is None else kept
        self.conv1 = nn.Conv2d(nf + gc * len(self.kept[0]), gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc * len(self.kept[1]), gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + gc * len(self.kept[2]), gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + gc * len(self.kept[3]), gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + gc * len(self.kept[4]), nf, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)

    def features(self, x):
        xs = [x]
        for j, conv in enumerate([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5]):
            y = conv(torch.cat([x] + [xs[i] for i in self.kept[j]], 1))
            xs.append(self.lrelu(y) if j < 4 else y)
        return xs

    def forward(self, x):
        return self.features(x)[5] * 0.2 + x


class RefRRDB(nn.Module):
    def __init__(self, nf, gc, kept=None):
        super().__init__()
        kept = kept or [None] * 3
        self.rdb1 = RefRDB(nf, gc, kept[0])
        self.rdb2 = RefRDB(nf, gc, kept[1])
        self.rdb3 = RefRDB(nf, gc, kept[2])

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


def basicsr_pixel_unshuffle(x, scale):
    b, c, hh, hw = x.size()
    h, w = hh // scale, hw // scale
    return x.view(b, c, h, scale, w, scale).permute(0, 1, 3, 5, 2, 4).reshape(b, c * scale**2, h, w)


class RefRRDBNet(nn.Module):
    """BasicSR's RRDBNet; ``num_up`` other than 2 gives an ESRGAN-style net with that many up-convs
    (×2, ×8) and no pixel-unshuffle."""

    def __init__(self, num_in_ch, num_out_ch, scale, nf, nb, gc, connections=None, num_up=2):
        super().__init__()
        self.scale, self.num_up = scale, num_up
        num_in_ch = num_in_ch * ({4: 1, 2: 4, 1: 16}[scale] if num_up == 2 else 1)
        self.conv_first = nn.Conv2d(num_in_ch, nf, 3, 1, 1)
        connections = connections or [None] * nb
        self.body = nn.Sequential(*[RefRRDB(nf, gc, connections[n]) for n in range(nb)])
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        for k in range(1, num_up + 1):
            setattr(self, f"conv_up{k}", nn.Conv2d(nf, nf, 3, 1, 1))
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x):
        if self.num_up == 2 and self.scale == 2:
            feat = basicsr_pixel_unshuffle(x, 2)
        elif self.num_up == 2 and self.scale == 1:
            feat = basicsr_pixel_unshuffle(x, 4)
        else:
            feat = x
        feat = self.conv_first(feat)
        body_feat = self.conv_body(self.body(feat))
        feat = feat + body_feat
        for k in range(1, self.num_up + 1):
            conv = getattr(self, f"conv_up{k}")
            feat = self.lrelu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def randomized(module, seed=0):
    """Every conv weight N(0, 1/fan_in), bias N(0, 0.1²): the body's branch then matters as much
    as its residual, so a wrong connection or order cannot hide in a small term."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(fan_in))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return module.double()
