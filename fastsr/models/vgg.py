"""VGG19 features for the perceptual loss (ESRGAN: conv5_4 before its ReLU), in plain PyTorch.

The ``features`` Sequential uses torchvision's ``vgg19`` indices (conv1_1 = features.0, …,
conv5_4 = features.34), so torchvision's ImageNet state dict — saved once with
``torch.save(torchvision.models.vgg19(weights="IMAGENET1K_V1").state_dict(), path)``, or the
downloaded ``vgg19-dcbb9e9d.pth`` itself — loads from a local file without torchvision:

    index  0  2  4  5  7  9  10 12 14 16 18 19 21 23 25 27 28 30 32 34 36
    layer  c  c  P  c  c  P  c  c  c  c  P  c  c  c  c  P  c  c  c  c  P     (ReLU after each c)
           1_1   ·  2_1   ·  3_1 …   3_4 ·  4_1 …   4_4 ·  5_1 …   5_4 ·

The network is truncated after the requested layer; classifier.* and deeper features are ignored.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["VGG19FeatureExtractor", "VGG19_LAYERS"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))  # (channels, convs) per VGG19 block


def _layer_names() -> tuple[str, ...]:
    """torchvision's vgg19.features, named as BasicSR does: conv1_1, relu1_1, …, pool5."""
    names = []
    for b, (_, convs) in enumerate(_BLOCKS, start=1):
        for i in range(1, convs + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return tuple(names)


VGG19_LAYERS = _layer_names()  # VGG19_LAYERS[N] is features.N; "conv5_4" is 34
_KEY = re.compile(r"^(?:features\.)?(\d+)\.(weight|bias)$")


class VGG19FeatureExtractor(nn.Module):
    """Frozen VGG19 features of [0, 1] RGB images.

    Args:
        weights: path of a torchvision ``vgg19`` state dict file (keys features.N.weight/bias;
            classifier.* ignored), or such a state dict; one already truncated to the features
            (``features.N.*``, or a ``features`` Sequential's own ``N.*`` keys) works too. None:
            random initialisation (torchvision's: kaiming_normal fan_out, bias 0) and a warning
            — random features make a weak perceptual loss; for tests and smoke runs only.
        layer: the output layer, a name in :data:`VGG19_LAYERS` (default "conv5_4", ESRGAN's:
            the last conv's output before its ReLU).
        use_input_norm: normalise the input with ImageNet's mean and std first (as the
            torchvision weights expect for [0, 1] RGB input).

    Always in eval mode (``train()`` keeps it there) and frozen (``requires_grad`` False):
    gradients flow to the input, never into the weights. The mean/std buffers are not in the
    state dict, which holds only ``features.N.weight/bias``.

    Shapes: x (B, 3, H, W) in [0, 1] → (B, C, H / 2^p, W / 2^p), C and p (pools before the layer)
    fixed by the layer: (B, 512, H/16, W/16) at conv5_4.
    """

    def __init__(
        self,
        weights: str | os.PathLike | Mapping[str, Tensor] | None,
        layer: str = "conv5_4",
        use_input_norm: bool = True,
    ) -> None:
        super().__init__()
        if layer not in VGG19_LAYERS:
            raise ValueError(f"layer must be one of VGG19's layers {VGG19_LAYERS}; got {layer!r}")
        self.layer, self.use_input_norm = layer, bool(use_input_norm)
        last = VGG19_LAYERS.index(layer)
        self.num_pools = sum(name.startswith("pool") for name in VGG19_LAYERS[:last])
        modules: list[nn.Module] = []
        in_ch = 3
        for name in VGG19_LAYERS[: last + 1]:
            if name.startswith("conv"):
                out_ch = _BLOCKS[int(name[4]) - 1][0]
                modules.append(nn.Conv2d(in_ch, out_ch, 3, 1, 1))
                in_ch = out_ch
            elif name.startswith("relu"):
                modules.append(nn.ReLU(inplace=True))
            else:
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*modules)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        if weights is None:
            self._random_init()
            warnings.warn(
                "VGG19FeatureExtractor built without weights: its features are random, so the "
                "perceptual loss built on it is weak. Pass the path of torchvision's ImageNet "
                "vgg19 state dict (vgg19-dcbb9e9d.pth) for real training",
                UserWarning,
                stacklevel=2,
            )
        else:
            self._load(weights)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> VGG19FeatureExtractor:
        """Stays in eval mode whatever mode asks (a frozen feature extractor)."""
        return super().train(False)

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}, use_input_norm={self.use_input_norm}"

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, H, W) in [0, 1] → (B, C, H / 2^p, W / 2^p) features at self.layer."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor (B, 3, H, W); got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise ValueError(
                f"x must be a floating (B, 3, H, W) RGB batch in [0, 1]; got shape "
                f"{tuple(x.shape)}, dtype {x.dtype}"
            )
        need = 2**self.num_pools
        if x.shape[2] < need or x.shape[3] < need:
            raise ValueError(
                f"x must be at least {need}×{need} ({self.num_pools} max-pools before "
                f"{self.layer}); got {x.shape[2]}×{x.shape[3]}"
            )
        if self.use_input_norm:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)  # (B, 3, H, W)
        return self.features(x)  # (B, C, H / 2^p, W / 2^p)

    # -- weights --------------------------------------------------------------------------------

    def _random_init(self) -> None:
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def _load(self, weights: str | os.PathLike | Mapping[str, Tensor]) -> None:
        if isinstance(weights, (str, os.PathLike)):
            from fastsr._io import load_state

            path = os.fspath(weights)
            source = f"file {path!r}"
            if not os.path.isfile(path):
                raise FileNotFoundError(f"VGG19 weights {source} does not exist")
            obj: Any = load_state(path, what="VGG19 weights file")  # tensors only: never runs code
        else:
            source, obj = "the given state dict", weights
        if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
            raise ValueError(
                f"VGG19 weights in {source} must be a state dict of tensors (torchvision's vgg19: "
                f"features.N.weight/bias, classifier.*); got {type(obj).__name__}"
            )
        expected = self.features.state_dict()
        state, unexpected = {}, []
        for key, value in obj.items():
            if key.startswith("classifier."):
                continue
            match = _KEY.match(key)
            index = int(match.group(1)) if match else -1
            if not match or index >= len(VGG19_LAYERS) or not VGG19_LAYERS[index].startswith("conv"):
                unexpected.append(key)
            elif index < len(self.features):  # deeper layers are cut off: ignored
                state[f"{index}.{match.group(2)}"] = value
        missing = [f"features.{k}" for k in expected if k not in state]
        mismatched = [
            f"features.{k}: file {tuple(v.shape)}, model {tuple(expected[k].shape)}"
            for k, v in state.items()
            if v.shape != expected[k].shape
        ]
        if unexpected or missing or mismatched:
            problems = [
                f"{what} {items[:12]}{' …' if len(items) > 12 else ''} ({len(items)})"
                for what, items in (
                    ("unexpected keys", unexpected),
                    ("missing keys", missing),
                    ("shape mismatches", mismatched),
                )
                if items
            ]
            raise ValueError(
                f"VGG19 weights in {source} do not match torchvision's vgg19 up to "
                f"{self.layer}: " + "; ".join(problems) + " (vgg19_bn or vgg16 weights use other "
                "indices)"
            )
        self.features.load_state_dict(state)
