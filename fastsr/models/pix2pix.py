"""pix2pix's networks (Isola, Zhu, Zhou & Efros, "Image-to-Image Translation with Conditional
Adversarial Networks", CVPR 2017; junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py):
the U-Net generator, the ResNet generator and the PatchGAN discriminator, which Stage-GAN's
three stages are made of (:mod:`fastsr.models.stagegan`).

The module nesting is pix2pix's, so the state dicts have pix2pix's keys and shapes, and a pix2pix
checkpoint (``latest_net_G.pth`` of unet_256 / resnet_9blocks, ``latest_net_D.pth`` of the basic
D, BatchNorm) loads with ``load_state_dict``:

    UnetGenerator         model.model.0 (first conv) · model.model.1.model.1 (level-2 conv) · …
                          model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model.1
                          (the innermost conv at unet_256) · model.model.3 (last transposed conv)
    ResnetGenerator       model.1 (7×7) · model.4, model.7 (downs) · model.10 … model.18
                          (.conv_block.1 / .5: the blocks' convs) · model.19, model.22 (ups) ·
                          model.26 (last 7×7)
    NLayerDiscriminator   model.0, model.2, model.5, model.8, model.11 (convs), BatchNorms between

Value ranges: images are in [-1, 1] (pix2pix's ``Normalize(0.5, 0.5)``: ``2·x − 1`` of a [0, 1]
image), and the generators end in tanh (optional for the U-Net).

Initialisation is pix2pix's "normal" (:func:`init_weights`): conv and linear weights N(0, 0.02),
biases 0, BatchNorm weights N(1, 0.02), biases 0.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from fastsr._checks import check_bool, check_choice, check_positive_int
from fastsr.layers.spsa import SPSA
from fastsr.ops.spsa import BACKENDS

__all__ = [
    "UnetGenerator",
    "UnetSkipConnectionBlock",
    "ResnetGenerator",
    "ResnetBlock",
    "NLayerDiscriminator",
    "init_weights",
]

NEGATIVE_SLOPE = 0.2  # pix2pix's LeakyReLU in the U-Net encoder and the PatchGAN
DROPOUT = 0.5
MIN_DOWNS = 5  # the U-Net's fixed levels: outermost, ngf→2ngf, →4ngf, →8ngf, innermost
PADDING_TYPES = ("reflect", "replicate", "zero")
UPSAMPLES = ("transpose", "resize")  # pix2pix's transposed convs, or resize-then-convolve

NormLayer = Callable[[int], nn.Module]


# ---------------------------------------------------------------------------------------------
# Initialisation and small helpers
# ---------------------------------------------------------------------------------------------


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """pix2pix's "normal" initialisation, in place; returns net.

    Every convolution (transposed too) and linear layer: weight N(0, gain²), bias 0. Every
    BatchNorm with affine parameters: weight N(1, gain²), bias 0. Other modules (InstanceNorm
    without affine parameters, the SPSA layer's γ and α) are left alone — but the SPSA layer's
    own convs are convs: :class:`UnetGenerator` re-initialises its SPSA layer afterwards.
    """
    if not isinstance(gain, (int, float)) or isinstance(gain, bool) or not gain > 0:
        raise ValueError(f"gain must be a positive number; got {gain!r}")
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, gain)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                nn.init.normal_(m.weight, 1.0, gain)
                nn.init.zeros_(m.bias)
    return net


def _conv_bias(norm_layer: NormLayer) -> bool:
    """pix2pix gives the convs before a norm a bias only for InstanceNorm2d: BatchNorm's own
    shift makes it redundant (functools.partial norms are looked through, as pix2pix does)."""
    if isinstance(norm_layer, functools.partial):
        norm_layer = norm_layer.func
    return norm_layer is nn.InstanceNorm2d


def up_conv(in_ch: int, out_ch: int, *, upsample: str, kernel: int, bias: bool) -> nn.Module:
    """A ×2 upsampling conv: pix2pix's transposed conv ("transpose": kernel×kernel, stride 2,
    exactly ×2), or Odena et al.'s resize-convolution ("resize": nearest-neighbour ×2, then a
    3×3 conv, padding 1; "Deconvolution and Checkerboard Artifacts", Distill 2016). A stride-2
    transposed conv whose kernel is not a multiple of its stride (4×4 in the U-Net, 3×3 in the
    ResNet) gives the output pixels of the four 2×2 phases different numbers of kernel taps:
    the checkerboard, which training must learn to cancel; the resize-convolution treats every
    pixel alike. Keys: ``N.weight`` (transpose) or ``N.1.weight`` (resize)."""
    if upsample == "transpose":
        output_padding = 1 if kernel % 2 else 0  # 3×3 with padding 1 needs it for exactly ×2
        return nn.ConvTranspose2d(
            in_ch, out_ch, kernel, stride=2, padding=1, output_padding=output_padding, bias=bias
        )
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)
    )


def _check_upsample(upsample: str) -> None:
    if upsample not in UPSAMPLES:
        raise ValueError(f"upsample must be one of {UPSAMPLES}; got {upsample!r}")


def _check_image(name: str, x: Any, channels: int, multiple: int, why: str) -> None:
    """x must be a floating (B, channels, H, W) tensor with H and W positive multiples of
    `multiple` (`why` says what needs it)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (B, C, H, W); got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must be (B, C, H, W) with C = {channels}; got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    H, W = x.shape[2:]
    if H == 0 or W == 0 or H % multiple or W % multiple:
        raise ValueError(
            f"{name} must have H and W positive multiples of {multiple} ({why}); got {H}×{W}. "
            f"Pad or crop it to a multiple of {multiple}"
        )


# ---------------------------------------------------------------------------------------------
# U-Net (pix2pix's UnetGenerator / UnetSkipConnectionBlock)
# ---------------------------------------------------------------------------------------------


class UnetSkipConnectionBlock(nn.Module):
    """One level of pix2pix's U-Net: down → [SPSA] → submodule → up, and the skip.

    Args:
        outer_ch: channels this level returns to (its input's channels, except at the outermost
            level, where the input has in_ch and the output outer_ch = the image's out_ch).
        inner_ch: channels of the level's encoder output (its down conv's output).
        in_ch: the outermost level's input channels (None elsewhere: = outer_ch).
        submodule: the next level down (None at the innermost level).
        outermost, innermost: the level's kind (neither: a middle level).
        norm_layer: norm class (or partial) called with a channel count.
        use_dropout: Dropout(0.5) after the up path (pix2pix sets it on the ngf·8 middle levels).
        spsa: an SPSA layer applied to the encoder output (see :class:`UnetGenerator`); it sits
            outside ``model``, so the pix2pix keys do not move.
        out_tanh: the outermost level's final activation: tanh (pix2pix), or none (logits).
        upsample: the up conv, "transpose" (pix2pix's 4×4 stride-2 transposed conv) or "resize"
            (nearest ×2, then a 3×3 conv: no checkerboard; see :func:`up_conv`).

    ``model`` holds pix2pix's layers in pix2pix's order, so the parameter names are pix2pix's:

        outermost:  0 down conv (bias) · 1 submodule · 2 ReLU · 3 up conv (bias) · 4 Tanh
        middle:     0 LeakyReLU · 1 down conv · 2 down norm · 3 submodule · 4 ReLU ·
                    5 up conv · 6 up norm [· 7 Dropout]
        innermost:  0 LeakyReLU · 1 down conv · 2 ReLU · 3 up conv · 4 up norm

    Down convs are 4×4 stride 2 padding 1 (halve the size), up convs 4×4 stride-2 transposed
    convs (double it); a submodule returns twice its input's channels (skip ‖ up), so the up
    conv of a level with a submodule reads 2·inner_ch.

    pix2pix's activations run in place, so its ``torch.cat([x, model(x)])`` concatenates
    LeakyReLU(x), not x; the concatenation only ever feeds the parent level's ReLU, and
    ReLU(LeakyReLU(x)) = ReLU(x), so the outputs and gradients are the same as with x. This
    module's activations are not in place (callers' tensors are never rewritten) and its skip is
    x itself.

    Shapes:
        x: (B, outer_ch, h, w) (in_ch at the outermost level), h and w even.
        prior: (B, S, H, W) at the image size, passed down; only the level holding ``spsa``
            reads it.
        Output: (B, 2·outer_ch, h, w) — skip ‖ up — or (B, outer_ch, h, w) at the outermost.
    """

    def __init__(
        self,
        outer_ch: int,
        inner_ch: int,
        *,
        in_ch: int | None = None,
        submodule: UnetSkipConnectionBlock | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
        use_dropout: bool = False,
        spsa: SPSA | None = None,
        out_tanh: bool = True,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        _check_upsample(upsample)
        if outermost and innermost:
            raise ValueError("a level cannot be both outermost and innermost")
        if (submodule is None) != innermost:
            raise ValueError(
                f"submodule must be given exactly when the level is not innermost; got "
                f"innermost={innermost}, submodule={type(submodule).__name__}"
            )
        self.outermost, self.innermost = outermost, innermost
        self.outer_ch, self.inner_ch = outer_ch, inner_ch
        in_ch = outer_ch if in_ch is None else in_ch
        bias = _conv_bias(norm_layer)
        up_in = inner_ch if innermost else 2 * inner_ch  # a submodule returns skip ‖ up

        def up(bias: bool) -> nn.Module:
            return up_conv(up_in, outer_ch, upsample=upsample, kernel=4, bias=bias)

        if outermost:
            layers = [
                nn.Conv2d(in_ch, inner_ch, 4, stride=2, padding=1, bias=bias),
                submodule,
                nn.ReLU(),
                up(True),  # bias: no norm
                nn.Tanh() if out_tanh else nn.Identity(),
            ]
            self._down, self._up = (0, 1), (2, 5)  # model index ranges of the two paths
        elif innermost:
            layers = [
                nn.LeakyReLU(NEGATIVE_SLOPE),
                nn.Conv2d(in_ch, inner_ch, 4, stride=2, padding=1, bias=bias),
                nn.ReLU(),
                up(bias),
                norm_layer(outer_ch),
            ]
            self._down, self._up = (0, 2), (2, 5)
        else:
            layers = [
                nn.LeakyReLU(NEGATIVE_SLOPE),
                nn.Conv2d(in_ch, inner_ch, 4, stride=2, padding=1, bias=bias),
                norm_layer(inner_ch),
                submodule,
                nn.ReLU(),
                up(bias),
                norm_layer(outer_ch),
            ]
            if use_dropout:
                layers.append(nn.Dropout(DROPOUT))
            self._down, self._up = (0, 3), (4, len(layers))
        self.model = nn.Sequential(*layers)
        self.spsa = spsa  # registered after model: pix2pix's keys keep their order

    @property
    def submodule(self) -> UnetSkipConnectionBlock | None:
        return None if self.innermost else self.model[1 if self.outermost else 3]

    def forward(self, x: Tensor, prior: Tensor | None = None) -> Tensor:
        """x: (B, outer_ch, h, w), prior: (B, S, H, W) or None → (B, 2·outer_ch, h, w)
        ((B, outer_ch, h, w) at the outermost level)."""
        feat = x
        for i in range(*self._down):
            feat = self.model[i](feat)  # [LeakyReLU] → conv: (B, inner_ch, h/2, w/2) [→ norm]
        if self.spsa is not None:
            # the encoder output, before it goes down and into the next level's skip
            feat = self.spsa(feat, prior.to(feat.dtype))  # (B, inner_ch, h/2, w/2)
        if not self.innermost:
            feat = self.submodule(feat, prior)  # (B, 2·inner_ch, h/2, w/2)
        for i in range(*self._up):
            feat = self.model[i](feat)  # ReLU → up conv → (B, outer_ch, h, w) → norm / tanh
        if self.outermost:
            return feat  # (B, outer_ch, h, w)
        return torch.cat([x, feat], 1)  # (B, 2·outer_ch, h, w)


class UnetGenerator(nn.Module):
    """pix2pix's U-Net generator (Stage-GAN's stage 0 and stage 1, Wei, Bai & Zhao 2019, Fig. 2).

    Args:
        in_ch, out_ch: image (or image ‖ map) channels in, channels out.
        num_downs: levels, each halving the size: 8 is pix2pix's unet_256 (a 256 input reaches
            1×1 at the bottleneck), 7 unet_128. At least 5. H and W must be multiples of
            2**num_downs (checked at forward).
        ngf: channels of the first level; level L has ngf · min(2^(L−1), 8).
        norm_layer: norm class or partial, called with a channel count (pix2pix: BatchNorm2d,
            or InstanceNorm2d, which turns the convs' biases on).
        use_dropout: Dropout(0.5) in the num_downs − 5 innermost ngf·8 middle levels (three at
            unet_256): pix2pix's noise source; on by default as in pix2pix training.
        spsa_level: k > 0 inserts a :class:`fastsr.SPSA` layer on the encoder output at depth k
            (level k's down conv + norm, (B, ngf · min(2^(k−1), 8), H/2^k, W/2^k)); the attended
            features go both down the U-Net and into level k+1's skip. 1 ≤ k ≤ num_downs − 1:
            the innermost level's encoder output is the bottleneck — 1×1 at unet_256, where
            attention over a single pixel is the identity — so it is not offered. Attention
            length is (H/2^k)·(W/2^k): k = 4 at 256 attends over 16×16 = 256 positions.
            Not in the paper. 0 (default): no SPSA, pix2pix's network exactly.
        seg_channels: S, channels of the prior (required with spsa_level > 0, 0 without).
        qk_channels, heads, backend: the SPSA layer's (see :class:`fastsr.SPSA`); backend is a
            runtime choice.
        out_tanh: end in tanh (pix2pix); False leaves the last transposed conv's output as is
            (logits, for a one-hot map). Either way the keys are the same.
        upsample: the decoder's ×2 convs, "transpose" (pix2pix) or "resize" (nearest ×2 then
            3×3: no checkerboard; the up convs' keys gain a ``.1``; see :func:`up_conv`).

    Parameters: pix2pix's, key for key (see the module docstring): ``model`` is the outermost
    :class:`UnetSkipConnectionBlock`, each level's submodule at ``model.1`` (outermost) or
    ``model.3`` (middle). The SPSA layer, if any, is the ``spsa`` child of level k's block —
    ``model.spsa`` for k = 1, ``model.model.1.spsa`` for k = 2, then ``.model.3`` per level —
    so all other keys stay pix2pix's and a pix2pix checkpoint loads into an SPSA U-Net with
    ``load_state_dict(state, strict=False)`` (missing: the spsa.* keys only). Initialisation:
    :func:`init_weights` (pix2pix's), then the SPSA layer's own (γ = 0: the layer starts as the
    identity, so the network starts as the plain U-Net).

    Shapes:
        x: (B, in_ch, H, W), H and W multiples of 2**num_downs.
        prior: (B, S, H, W) at the image size (required with spsa_level > 0, refused without);
            x's dtype and device. The SPSA transform network is a 2^k × 2^k stride-2^k conv.
        Output: (B, out_ch, H, W), in (-1, 1) with out_tanh.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        num_downs: int = 8,
        ngf: int = 64,
        norm_layer: NormLayer = nn.BatchNorm2d,
        use_dropout: bool = True,
        spsa_level: int = 0,
        seg_channels: int = 0,
        qk_channels: int | None = None,
        heads: int = 1,
        out_tanh: bool = True,
        upsample: str = "transpose",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        for name, value in (("in_ch", in_ch), ("out_ch", out_ch), ("ngf", ngf)):
            check_positive_int(name, value)
        _check_upsample(upsample)
        if isinstance(num_downs, bool) or not isinstance(num_downs, int) or num_downs < MIN_DOWNS:
            raise ValueError(
                f"num_downs must be an int ≥ {MIN_DOWNS} (pix2pix's U-Net has five fixed levels; "
                f"8 is unet_256, 7 unet_128); got {num_downs!r}"
            )
        if isinstance(spsa_level, bool) or not isinstance(spsa_level, int) or not 0 <= spsa_level < num_downs:
            raise ValueError(
                f"spsa_level must be an int in [0, num_downs − 1] = [0, {num_downs - 1}] (0: no "
                f"SPSA; the innermost level {num_downs} is the bottleneck, 1×1 at "
                f"2**num_downs input); got {spsa_level!r}"
            )
        if isinstance(seg_channels, bool) or not isinstance(seg_channels, int) or seg_channels < 0:
            raise ValueError(f"seg_channels must be a non-negative int; got {seg_channels!r}")
        if spsa_level > 0 and seg_channels == 0:
            raise ValueError(
                f"seg_channels must be positive with spsa_level={spsa_level} (the prior's channels); got 0"
            )
        if spsa_level == 0 and seg_channels > 0:
            raise ValueError(
                f"seg_channels is the SPSA prior's channels, used only with spsa_level > 0; got "
                f"seg_channels={seg_channels} with spsa_level=0 (pass 0, or choose a level)"
            )
        for name, value in (("use_dropout", use_dropout), ("out_tanh", out_tanh)):
            check_bool(name, value)
        check_choice("backend", backend, BACKENDS)
        self.in_ch, self.out_ch, self.num_downs, self.ngf = in_ch, out_ch, num_downs, ngf
        self.use_dropout, self.out_tanh, self.upsample = use_dropout, out_tanh, upsample
        self.spsa_level, self.seg_channels = spsa_level, seg_channels

        def spsa_at(level: int) -> SPSA | None:
            if level != spsa_level:
                return None
            return SPSA(
                self.level_channels(level),
                seg_channels,
                qk_channels=qk_channels,
                heads=heads,
                prior_stride=2**level,
                backend=backend,
            )

        # Built innermost first, as pix2pix does; level L's encoder has ngf·min(2^(L−1), 8) ch.
        kw = {"norm_layer": norm_layer, "upsample": upsample}
        c8 = ngf * 8
        block = UnetSkipConnectionBlock(c8, c8, innermost=True, **kw)  # the bottleneck: no SPSA
        for level in range(num_downs - 1, 4, -1):  # the ngf·8 middle levels, dropout here
            block = UnetSkipConnectionBlock(
                c8, c8, submodule=block, use_dropout=use_dropout, spsa=spsa_at(level), **kw
            )
        for level, outer, inner in ((4, ngf * 4, c8), (3, ngf * 2, ngf * 4), (2, ngf, ngf * 2)):
            spsa = spsa_at(level)
            block = UnetSkipConnectionBlock(outer, inner, submodule=block, spsa=spsa, **kw)
        self.model = UnetSkipConnectionBlock(
            out_ch, ngf, in_ch=in_ch, submodule=block, outermost=True, spsa=spsa_at(1),
            out_tanh=out_tanh, **kw,
        )  # fmt: skip
        self.reset_parameters()

    def level_channels(self, level: int) -> int:
        """Channels of the encoder output at depth level (1-based): ngf · min(2^(level−1), 8)."""
        return self.ngf * min(2 ** (level - 1), 8)

    @property
    def levels(self) -> list[UnetSkipConnectionBlock]:
        """The blocks, outermost (level 1) to innermost (level num_downs)."""
        blocks, block = [], self.model
        while block is not None:
            blocks.append(block)
            block = block.submodule
        return blocks

    @property
    def spsa(self) -> SPSA | None:
        """The SPSA layer (level spsa_level's), or None."""
        return self.levels[self.spsa_level - 1].spsa if self.spsa_level else None

    def reset_parameters(self) -> None:
        """pix2pix's initialisation (:func:`init_weights`), then the SPSA layer's own (γ = 0)."""
        init_weights(self)
        if self.spsa is not None:
            self.spsa.reset_parameters()

    def extra_repr(self) -> str:
        return (
            f"in_ch={self.in_ch}, out_ch={self.out_ch}, num_downs={self.num_downs}, "
            f"ngf={self.ngf}, use_dropout={self.use_dropout}, spsa_level={self.spsa_level}, "
            f"upsample={self.upsample!r}"
        )

    def forward(self, x: Tensor, prior: Tensor | None = None) -> Tensor:
        """x: (B, in_ch, H, W), prior: (B, S, H, W) or None → (B, out_ch, H, W)."""
        self._check_inputs(x, prior)
        return self.model(x, prior)  # (B, out_ch, H, W)

    def _check_inputs(self, x: Tensor, prior: Tensor | None) -> None:
        n = self.num_downs
        _check_image("x", x, self.in_ch, 2**n, f"num_downs={n} halvings")
        if self.spsa_level == 0:
            if prior is not None:
                raise ValueError(
                    "prior was given, but this U-Net has no SPSA layer (spsa_level=0) and would "
                    "ignore it; pass prior=None, or build it with spsa_level > 0"
                )
            return
        B, _, H, W = x.shape
        expected = (B, self.seg_channels, H, W)
        if prior is None:
            raise ValueError(
                f"prior is required: this U-Net has an SPSA layer (spsa_level="
                f"{self.spsa_level}); pass the (B, S, H, W) = {expected} prior for x of shape "
                f"{tuple(x.shape)}"
            )
        if not isinstance(prior, Tensor):
            raise TypeError(f"prior must be a torch.Tensor (B, S, H, W); got {type(prior).__name__}")
        if tuple(prior.shape) != expected:
            raise ValueError(
                f"prior must be (B, S, H, W) = {expected} for x of shape {tuple(x.shape)} "
                f"(seg_channels {self.seg_channels}, at the image size); got {tuple(prior.shape)}"
            )
        if prior.device != x.device:
            raise ValueError(f"prior must be on x's device {x.device}; got {prior.device}")
        if prior.dtype != x.dtype:
            raise TypeError(f"prior must have x's dtype {x.dtype}; got {prior.dtype}")


# ---------------------------------------------------------------------------------------------
# ResNet generator (pix2pix's ResnetGenerator: Stage-GAN's stage-2 refiner)
# ---------------------------------------------------------------------------------------------


class ResnetBlock(nn.Module):
    """pix2pix's residual block: x + conv_block(x), conv_block = pad → 3×3 conv → norm → ReLU
    [→ Dropout(0.5)] → pad → 3×3 conv → norm, with padding_type "reflect" / "replicate" (a
    1-pixel pad layer) or "zero" (the convs' own padding 1). Keys conv_block.N as pix2pix's: with
    reflection and no dropout the convs are conv_block.1 and conv_block.5, the norms .2 and .6.

    Shapes: x (B, dim, h, w) → (B, dim, h, w).
    """

    def __init__(
        self, dim: int, *, padding_type: str, norm_layer: NormLayer, use_dropout: bool, bias: bool
    ) -> None:
        super().__init__()
        if padding_type not in PADDING_TYPES:
            raise ValueError(f"padding_type must be one of {PADDING_TYPES}; got {padding_type!r}")

        def padded_conv() -> list[nn.Module]:
            if padding_type == "zero":
                return [nn.Conv2d(dim, dim, 3, padding=1, bias=bias)]
            pad = nn.ReflectionPad2d(1) if padding_type == "reflect" else nn.ReplicationPad2d(1)
            return [pad, nn.Conv2d(dim, dim, 3, padding=0, bias=bias)]

        layers = [*padded_conv(), norm_layer(dim), nn.ReLU()]
        if use_dropout:
            layers.append(nn.Dropout(DROPOUT))
        layers += [*padded_conv(), norm_layer(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, dim, h, w) → (B, dim, h, w)."""
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """pix2pix's ResNet generator (Johnson et al.; Stage-GAN's stage-2 refiner, Wei, Bai & Zhao 2019, Fig. 3).

    Args:
        in_ch, out_ch: image channels in and out.
        ngf: channels after the first conv; the blocks run at 4·ngf.
        n_blocks: residual blocks (9: pix2pix's resnet_9blocks and the paper's refiner).
        norm_layer: norm class or partial (InstanceNorm2d turns the convs' biases on, as pix2pix).
        use_dropout: Dropout(0.5) inside each residual block.
        padding_type: the residual blocks' padding, "reflect" (pix2pix's default), "replicate"
            or "zero". The first and last 7×7 convs always use a 3-pixel reflection pad.
        upsample: the two ×2 convs, "transpose" (pix2pix's 3×3 stride-2 transposed convs) or
            "resize" (nearest ×2 then 3×3: no checkerboard; keys ``model.19.1`` / ``model.22.1``;
            see :func:`up_conv`).

    Layout (``model.N``, pix2pix's indices at n_blocks = 9): 0 ReflectionPad(3) · 1 7×7 conv ·
    2 norm · 3 ReLU · 4 / 7 3×3 stride-2 convs (ngf → 2ngf → 4ngf), 5 / 8 norms, 6 / 9
    ReLUs · 10 … 9 + n_blocks ResnetBlocks · then two 3×3 stride-2 transposed convs (padding 1,
    output_padding 1: exactly ×2) with norm and ReLU each (4ngf → 2ngf → ngf) ·
    ReflectionPad(3) · 7×7 conv (bias) · Tanh.

    Shapes:
        x: (B, in_ch, H, W), H and W multiples of 4 (two halvings; with reflection padding at
        least 8, so that the 1-pixel pads of the H/4 blocks have a pixel to reflect).
        Output: (B, out_ch, H, W) in (-1, 1).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        ngf: int = 64,
        n_blocks: int = 9,
        norm_layer: NormLayer = nn.BatchNorm2d,
        use_dropout: bool = False,
        padding_type: str = "reflect",
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        for name, value in (("in_ch", in_ch), ("out_ch", out_ch), ("ngf", ngf)):
            check_positive_int(name, value)
        _check_upsample(upsample)
        if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 0:
            raise ValueError(f"n_blocks must be a non-negative int; got {n_blocks!r}")
        check_bool("use_dropout", use_dropout)
        if padding_type not in PADDING_TYPES:
            raise ValueError(f"padding_type must be one of {PADDING_TYPES}; got {padding_type!r}")
        self.in_ch, self.out_ch, self.ngf, self.n_blocks = in_ch, out_ch, ngf, n_blocks
        self.use_dropout, self.padding_type, self.upsample = use_dropout, padding_type, upsample
        bias = _conv_bias(norm_layer)

        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_ch, ngf, 7, padding=0, bias=bias),
            norm_layer(ngf),
            nn.ReLU(),
        ]
        for c in (ngf, 2 * ngf):  # two downsamplings
            layers += [
                nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias),
                norm_layer(2 * c),
                nn.ReLU(),
            ]
        for _ in range(n_blocks):
            layers.append(
                ResnetBlock(
                    4 * ngf,
                    padding_type=padding_type,
                    norm_layer=norm_layer,
                    use_dropout=use_dropout,
                    bias=bias,
                )
            )
        for c in (4 * ngf, 2 * ngf):  # two upsamplings
            layers += [
                up_conv(c, c // 2, upsample=upsample, kernel=3, bias=bias),
                norm_layer(c // 2),
                nn.ReLU(),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """pix2pix's initialisation (:func:`init_weights`)."""
        init_weights(self)

    def extra_repr(self) -> str:
        return (
            f"in_ch={self.in_ch}, out_ch={self.out_ch}, ngf={self.ngf}, n_blocks={self.n_blocks}, "
            f"use_dropout={self.use_dropout}, padding_type={self.padding_type!r}, upsample={self.upsample!r}"
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_ch, H, W) → (B, out_ch, H, W)."""
        _check_image("x", x, self.in_ch, 4, "two stride-2 downsamplings")
        if self.padding_type == "reflect" and min(x.shape[2:]) < 8:
            raise ValueError(
                f"x must be at least 8×8 with reflection padding (the blocks at H/4 pad by one "
                f"pixel by reflection); got {x.shape[2]}×{x.shape[3]}"
            )
        # pad → 7×7 → two downs → blocks at (B, 4·ngf, H/4, W/4) → two ups → 7×7 → tanh
        return self.model(x)  # (B, out_ch, H, W)


# ---------------------------------------------------------------------------------------------
# PatchGAN discriminator (pix2pix's NLayerDiscriminator)
# ---------------------------------------------------------------------------------------------


class NLayerDiscriminator(nn.Module):
    """pix2pix's PatchGAN: one real/fake logit per overlapping patch (Wei, Bai & Zhao 2019, Fig. 4).

    Args:
        in_ch: input channels — a conditional GAN judges condition ‖ image, e.g. 3 + 3.
        ndf: channels of the first conv; conv n has ndf · min(2^n, 8).
        n_layers: normalised convs between the first conv and the output conv, all stride 2
            but the last (3: pix2pix's "basic" D, 70×70 patches).
        norm_layer: norm class or partial (InstanceNorm2d turns the convs' biases on).

    Layout (``model.N``, pix2pix's): 4×4 conv stride 2 (bias) → LeakyReLU(0.2); n_layers − 1
    × [4×4 conv stride 2 → norm → LeakyReLU]; 4×4 conv stride 1 → norm → LeakyReLU; 4×4
    conv stride 1 (bias) → 1 channel; all padding 1. At n_layers = 3 the convs are model.0,
    .2, .5, .8, .11 and the norms .3, .6, .9. No sigmoid: the output is logits (use
    BCEWithLogitsLoss, or MSE for LSGAN).

    Shapes:
        x: (B, in_ch, H, W) with H, W ≥ 3 · 2^n_layers (each stride-2 conv gives ⌊h/2⌋, the
        two stride-1 convs take 1 pixel each).
        Output: (B, 1, h', w') logits: 30×30 at 256 (n_layers = 3), each seeing a 70×70 patch.
    """

    def __init__(
        self,
        in_ch: int,
        *,
        ndf: int = 64,
        n_layers: int = 3,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        for name, value in (("in_ch", in_ch), ("ndf", ndf), ("n_layers", n_layers)):
            check_positive_int(name, value)
        self.in_ch, self.ndf, self.n_layers = in_ch, ndf, n_layers
        bias = _conv_bias(norm_layer)
        lrelu = lambda: nn.LeakyReLU(NEGATIVE_SLOPE)  # noqa: E731

        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1), lrelu()]
        c = ndf
        for n in range(1, n_layers + 1):  # the last of these is stride 1
            c_next = ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(c, c_next, 4, stride=stride, padding=1, bias=bias),
                norm_layer(c_next),
                lrelu(),
            ]
            c = c_next
        layers.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """pix2pix's initialisation (:func:`init_weights`)."""
        init_weights(self)

    def extra_repr(self) -> str:
        return f"in_ch={self.in_ch}, ndf={self.ndf}, n_layers={self.n_layers}"

    def output_size(self, size: int) -> int:
        """Side of the logit map for an input side size (30 for 256 at n_layers = 3)."""
        for _ in range(self.n_layers):
            size = (size + 2 - 4) // 2 + 1  # 4×4, stride 2, padding 1
        return size - 2  # two 4×4 stride-1 convs with padding 1: −1 each

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_ch, H, W) → (B, 1, h', w') logits."""
        _check_image("x", x, self.in_ch, 1, "")
        smallest = 3 * 2**self.n_layers  # n_layers halvings must leave 3 pixels for the −2
        if min(x.shape[2:]) < smallest:
            raise ValueError(
                f"x must be at least {smallest}×{smallest} for n_layers={self.n_layers} (else "
                f"the logit map is empty); got {x.shape[2]}×{x.shape[3]}"
            )
        return self.model(x)  # (B, 1, h', w')


# ---------------------------------------------------------------------------------------------
# The three stages
