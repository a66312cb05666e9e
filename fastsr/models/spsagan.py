"""SPSAGAN's generator and discriminator (Zhang, Zheng & Hu, "Super Resolution Using
Segmentation-Prior Self-Attention Generative Adversarial Network", arXiv:2003.03489, 2020;
section 3, Fig. 3).

    generator:      lr → conv_first → feat                                        (B, nf, h, w)
                    feat + conv_body(body(feat))          body: RRDB / RRSB blocks (B, nf, h, w)
                    → SPSA(feat, prior)              prior (B, S, s·h, s·w)      (B, nf, h, w)
                    → log2(s) × (nearest ×2 → conv_upK → lrelu)                   (B, nf, s·h, s·w)
                    → conv_hr → lrelu → conv_last                                 (B, 3, s·h, s·w)
                    [+ imresize(lr, s) with global_skip]
    discriminator:  VGG-style convs (3×3 then 4×4 stride 2, BatchNorm, LeakyReLU 0.2) → linear1
                    → lrelu → linear2: one logit per image (ESRGAN / BasicSR).

The generator is ESRGAN's RRDBNet (:mod:`fastsr.layers.rrdb`, same blocks, same parameter names
and initialisation) with the SPSA layer (:class:`fastsr.SPSA`) between the trunk and the
upsampler, at LR resolution; the prior is at HR size, so the SPSA transform network is a
``scale × scale`` convolution with stride ``scale`` (the paper's 4 × 4 at ×4). γ starts at 0, so
a fresh SPSA layer is the identity and the network starts as the PSNR-pretrained RRDBNet
(paper section 4: pre-train without SPSA with L1, then add it) — see
:meth:`SPSAGenerator.load_psnr_weights`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastsr._checks import check_bool, check_positive_int, listing
from fastsr.layers.rrdb import NEGATIVE_SLOPE, RDBConnections
from fastsr.layers.spsa import SPSA
from fastsr.models.model_file import read_model_file, write_model_file
from fastsr.models.rrdbnet import RRDBTrunk, _load_checkpoint, build_from_file, load_basicsr_state_dict
from fastsr.ops.imresize import imresize

__all__ = ["SPSAGenerator", "VGGStyleDiscriminator"]

SCALES = (2, 4, 8)
CONFIG_KEYS = (  # SPSAGenerator.config(): the architecture, backend left out
    "in_ch", "out_ch", "scale", "num_feat", "num_block", "num_grow_ch", "connections",
    "seg_channels", "use_spsa", "qk_channels", "heads", "global_skip",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------


class SPSAGenerator(RRDBTrunk):
    """SPSAGAN's generator: RRDB / RRSB trunk → SPSA layer → ESRGAN's upsampler.

    Args:
        in_ch, out_ch: image channels in and out.
        scale: 2, 4 or 8: one up-block (nearest ×2 → 3×3 conv → LeakyReLU) per factor 2,
            named conv_up1, conv_up2, conv_up3. No pixel-unshuffle: unlike BasicSR's ×2
            RRDBNet, which unshuffles the input by 2 and upsamples ×4, conv_first reads the image
            itself at every scale.
        num_feat: nf, the trunk's channels.
        num_block: RRDBs in the body (23 in ESRGAN and the paper).
        num_grow_ch: gc, the dense blocks' growth channels.
        connections: None (dense RRDBs: ESRGAN), or RRSB's kept connections, one entry per block
            (num_block × 3 × 5 lists), as :class:`fastsr.RRDBNet` takes them.
        seg_channels: S, channels of the segmentation prior (8 for the OST classes).
        use_spsa: False leaves the SPSA layer out (the PSNR-oriented pre-training network; its
            state dict is then BasicSR's RRDBNet's at ×4).
        qk_channels: channels of the SPSA query/key projections; None = max(1, nf // 8) (SAGAN).
        heads: SPSA attention heads (1 is the paper's layer).
        global_skip: add ``imresize(lr, scale)`` (MATLAB bicubic) to the output, so the network
            learns a residual over bicubic. Not in ESRGAN or the paper; needs in_ch == out_ch.
        backend: passed to :func:`fastsr.ops.dense_block` and :func:`fastsr.ops.spsa_attention`
            ("auto", "triton", "torch", "reference"). A runtime choice, not part of
            :meth:`config`.

    Parameters (BasicSR's RRDBNet keys, plus the SPSA layer's): conv_first,
    body.N.rdbK.convJ, conv_body, spsa.* (only with use_spsa), conv_up1 … conv_up{log2 scale},
    conv_hr, conv_last. The dense blocks get ESRGAN's initialisation (kaiming_normal · 0.1, bias
    0), the other convs PyTorch's default, exactly as :class:`fastsr.RRDBNet` (and BasicSR); the
    SPSA layer its own (γ = 0: the identity). At ×4 with use_spsa=False the state dict is
    BasicSR's RRDBNet's, key for key, so BasicSR / ESRGAN ×4 weights load with
    :func:`fastsr.load_basicsr_state_dict` (and, into an SPSA generator, with
    :meth:`load_psnr_weights`).

    Shapes:
        lr: (B, in_ch, h, w); prior: (B, S, scale·h, scale·w) probabilities at HR size, same
        dtype and device (required with use_spsa, refused without).
        Output: (B, out_ch, scale·h, scale·w).
    """

    MODEL_KIND = "spsagan"  # its model files' kind (fastsr.models.kinds.KINDS)

    def __init__(
        self,
        in_ch: int = 3,
        out_ch: int = 3,
        *,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        connections: Sequence[Sequence[RDBConnections | None] | None] | None = None,
        seg_channels: int = 8,
        use_spsa: bool = True,
        qk_channels: int | None = None,
        heads: int = 1,
        global_skip: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if type(scale) is not int or scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}; got {scale!r}")
        for name, value in (
            ("in_ch", in_ch),
            ("out_ch", out_ch),
            ("seg_channels", seg_channels),
            ("heads", heads),
        ):
            check_positive_int(name, value)
        if qk_channels is None:
            qk_channels = max(1, num_feat // 8)
        check_positive_int("qk_channels", qk_channels)
        for name, value in (("use_spsa", use_spsa), ("global_skip", global_skip)):
            check_bool(name, value)
        if global_skip and in_ch != out_ch:
            raise ValueError(
                f"global_skip adds the bicubic-upscaled input to the output, so in_ch must equal "
                f"out_ch; got in_ch={in_ch}, out_ch={out_ch}"
            )
        self.in_ch, self.out_ch, self.scale = in_ch, out_ch, scale
        self.seg_channels, self.use_spsa = seg_channels, use_spsa
        self.qk_channels, self.heads = qk_channels, heads
        self.global_skip = global_skip
        self.num_up = int(math.log2(scale))

        # Registration order = state-dict order = BasicSR's (conv_first, body, conv_body, ups, …).
        self._build_trunk(in_ch, num_feat, num_block, num_grow_ch, connections, backend=backend)
        self.spsa = (
            SPSA(
                num_feat,
                seg_channels,
                qk_channels=qk_channels,
                heads=heads,
                prior_stride=scale,
                backend=backend,
            )
            if use_spsa
            else None
        )
        for k in range(1, self.num_up + 1):
            self.add_module(f"conv_up{k}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, out_ch, 3, 1, 1)

    @property
    def up_convs(self) -> list[nn.Conv2d]:
        return [getattr(self, f"conv_up{k}") for k in range(1, self.num_up + 1)]

    @property
    def needs_prior(self) -> bool:
        """True with the SPSA layer: forward then takes the segmentation prior."""
        return self.use_spsa

    @property
    def input_multiple(self) -> int:
        """1: any input size runs."""
        return 1

    def reset_parameters(self) -> None:
        """PyTorch's default for the trunk convs, ESRGAN's kaiming · 0.1 for the dense blocks,
        the SPSA layer's own (γ = 0, α re-initialised by the next forward)."""
        for conv in (self.conv_first, self.conv_body, *self.up_convs, self.conv_hr, self.conv_last):
            conv.reset_parameters()
        for block in self.body:
            block.reset_parameters()
        if self.spsa is not None:
            self.spsa.reset_parameters()

    def extra_repr(self) -> str:
        return (
            f"in_ch={self.in_ch}, out_ch={self.out_ch}, scale={self.scale}, "
            f"num_feat={self.num_feat}, num_block={self.num_block}, "
            f"num_grow_ch={self.num_grow_ch}, connections={'dense' if self.is_dense else 'sparse'}, "
            f"use_spsa={self.use_spsa}, global_skip={self.global_skip}"
        )

    # -- forward --------------------------------------------------------------------------------

    def forward(self, lr: Tensor, prior: Tensor | None = None) -> Tensor:
        """lr: (B, in_ch, h, w), prior: (B, S, s·h, s·w) or None → (B, out_ch, s·h, s·w)."""
        self._check_inputs(lr, prior)
        feat = self.trunk(lr)  # (B, nf, h, w)
        if self.spsa is not None:
            # prior has lr's dtype (checked); under autocast feat may be lower precision
            feat = self.spsa(feat, prior.to(feat.dtype))  # (B, nf, h, w); prior (B, S, s·h, s·w)
        return self.reconstruct(feat, lr)

    def reconstruct(self, feat: Tensor, lr: Tensor) -> Tensor:
        """The part after the SPSA layer: feat (B, nf, h, w) (and lr (B, in_ch, h, w) for the
        bicubic skip) → (B, out_ch, s·h, s·w). :meth:`forward` is ``reconstruct(spsa(trunk(lr),
        prior), lr)``; tiled inference with whole-image attention runs the three apart."""
        for conv in self.up_convs:
            feat = F.interpolate(feat, scale_factor=2, mode="nearest")  # (B, nf, 2·H, 2·W)
            feat = F.leaky_relu(conv(feat), NEGATIVE_SLOPE)  # (B, nf, 2·H, 2·W)
        feat = F.leaky_relu(self.conv_hr(feat), NEGATIVE_SLOPE)  # (B, nf, s·h, s·w)
        out = self.conv_last(feat)  # (B, out_ch, s·h, s·w)
        if self.global_skip:
            out = out + imresize(lr, self.scale)  # (B, out_ch, s·h, s·w): MATLAB bicubic
        return out

    def _check_inputs(self, lr: Tensor, prior: Tensor | None) -> None:
        if not isinstance(lr, Tensor):
            raise TypeError(f"lr must be a torch.Tensor (B, C, h, w); got {type(lr).__name__}")
        if lr.dim() != 4 or lr.shape[1] != self.in_ch:
            raise ValueError(
                f"lr must be (B, C, h, w) with C = in_ch = {self.in_ch}; got shape {tuple(lr.shape)}"
            )
        if not self.use_spsa:
            if prior is not None:
                raise ValueError(
                    "prior was given, but this generator has no SPSA layer (use_spsa=False) and "
                    "would ignore it; pass prior=None, or build it with use_spsa=True"
                )
            return
        B, _, h, w = lr.shape
        s = self.scale
        expected = (B, self.seg_channels, s * h, s * w)
        if prior is None:
            raise ValueError(
                f"prior is required: this generator has an SPSA layer (use_spsa=True); pass the "
                f"segmentation prior (B, S, scale·h, scale·w) = {expected} for lr of shape "
                f"{tuple(lr.shape)}, or build the generator with use_spsa=False"
            )
        if not isinstance(prior, Tensor):
            raise TypeError(
                f"prior must be a torch.Tensor (B, S, scale·h, scale·w); got {type(prior).__name__}"
            )
        if tuple(prior.shape) != expected:
            raise ValueError(
                f"prior must be (B, S, scale·h, scale·w) = {expected} for lr of shape "
                f"{tuple(lr.shape)} (scale {s}, seg_channels {self.seg_channels}): the prior is "
                f"at HR size; got {tuple(prior.shape)}"
            )
        if prior.device != lr.device:
            raise ValueError(f"prior must be on lr's device {lr.device}; got {prior.device}")
        if prior.dtype != lr.dtype:
            raise TypeError(f"prior must have lr's dtype {lr.dtype}; got {prior.dtype}")

    # -- weights --------------------------------------------------------------------------------

    def load_psnr_weights(
        self,
        checkpoint: str | os.PathLike | Mapping[str, Any],
        *,
        map_location: str | torch.device = "cpu",
    ) -> list[str]:
        """Load a PSNR-pretrained generator without SPSA into this one (paper section 4).

        Args:
            checkpoint: a path or loaded object holding the weights of a use_spsa=False
                generator of the same architecture: an :meth:`save` file, a dict holding its
                "params" (model files) or "state_dict" (fastsr 0.1's), a bare state dict, or
                (×4) a BasicSR / ESRGAN RRDBNet checkpoint ("params_ema" preferred over
                "params", ``module.`` prefixes stripped, ESRGAN names converted, as
                :func:`fastsr.load_basicsr_state_dict`).
            map_location: where a path's tensors are loaded.

        Every parameter except the SPSA layer's is loaded; the SPSA layer keeps its
        initialisation (γ = 0: the loaded network's output is unchanged until γ trains). Any
        other missing or unexpected key (a checkpoint that already has spsa.*, another scale
        or block count) or shape mismatch is an error, and then nothing is loaded.

        Returns:
            The keys left as initialised: the spsa.* keys (empty with use_spsa=False).
        """
        obj = _load_checkpoint(checkpoint, map_location)
        if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
            obj = obj["state_dict"]  # fastsr 0.1's model files (and the usual wrapper); now "params"
        trunk = _WithoutSPSA(self)  # the same parameter objects, minus spsa.*
        backup = {k: v.detach().clone() for k, v in trunk.state_dict().items()}
        missing, unexpected = load_basicsr_state_dict(trunk, obj, strict=False)
        if missing or unexpected:
            trunk.load_state_dict(backup)
            problems = []
            if unexpected:
                hint = ""
                if any(k.startswith("spsa.") for k in unexpected):
                    hint = " (it already has an SPSA layer: use from_checkpoint / load_state_dict)"
                problems.append(f"unexpected keys {listing([repr(k) for k in unexpected])}{hint}")
            if missing:
                problems.append(f"missing keys {listing([repr(k) for k in missing])}")
            source = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "checkpoint"
            raise ValueError(
                f"{source} is not a use_spsa=False generator of this architecture "
                f"(scale {self.scale}, num_block {self.num_block}): " + "; ".join(problems)
            )
        return [k for k in self.state_dict() if k.startswith("spsa.")]

    # -- checkpoints ----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The constructor arguments that fix the architecture (JSON-serialisable; backend is
        left out). connections is None for a dense net, else the full num_block × 3 × 5 lists;
        qk_channels is resolved."""
        config = {key: getattr(self, key) for key in CONFIG_KEYS if key != "connections"}
        config["connections"] = None if self.is_dense else self.connections
        return {key: config[key] for key in CONFIG_KEYS}

    def save(self, path: str | os.PathLike) -> None:
        """Write a ``fastsr.model/1`` file (:mod:`fastsr.models.model_file`; kind "spsagan", no
        prior spec: :func:`fastsr.inference.save_model` adds one), atomically and with a digest.
        "params" is BasicSR's key, so BasicSR-style loaders read the weights too."""
        write_model_file(path, kind=self.MODEL_KIND, config=self.config(), params=self.state_dict())

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike | Mapping[str, Any],
        *,
        backend: str = "auto",
        map_location: str | torch.device = "cpu",
    ) -> SPSAGenerator:
        """Rebuild a generator from its model file (a path, or the loaded dict; also fastsr 0.1's
        ``SPSAGenerator.save`` layout): its config and its parameters (SPSA's α and its
        initialised flag included), in the file's dtype, on map_location. For BasicSR / ESRGAN
        weights, build ``SPSAGenerator(...)`` and call :meth:`load_psnr_weights` (or
        :func:`fastsr.load_basicsr_state_dict`)."""
        file = read_model_file(checkpoint, expect=(cls.MODEL_KIND, "an SPSAGenerator"))
        unknown = sorted(set(file.config) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError(f"{file.source}: config has unknown keys {unknown}; known: {CONFIG_KEYS}")
        return build_from_file(cls, file, backend=backend, map_location=map_location)


class _WithoutSPSA(nn.Module):
    """A view of a generator's submodules minus ``spsa``: the same parameter objects, so loading
    into it loads into the generator. Never trained or called."""

    def __init__(self, generator: SPSAGenerator) -> None:
        super().__init__()
        for name, child in generator.named_children():
            if name != "spsa":
                self.add_module(name, child)


# ---------------------------------------------------------------------------------------------
# Discriminator
# ---------------------------------------------------------------------------------------------


class VGGStyleDiscriminator(nn.Module):
    """ESRGAN's VGG-style discriminator (BasicSR's VGGStyleDiscriminator), one logit per image.

    Args:
        in_ch: image channels.
        num_feat: nf, the first stage's channels; stage k has nf · min(2^k, 8).
        input_size: the (square) crop side it judges, a multiple of 32; None = any size ≥ 32
            (global average pooling before the linears).

    Layout (BasicSR's names): stage 0 is conv0_0 (3×3, bias) → lrelu → conv0_1 (4×4 stride 2,
    no bias) → bn0_1 → lrelu; stage k ≥ 1 is conv{k}_0 (3×3) → bn{k}_0 → lrelu → conv{k}_1
    (4×4 stride 2) → bn{k}_1 → lrelu (no conv biases). Each stage halves the map. Then the map
    is flattened → linear1 (→ 100) → lrelu → linear2 (→ 1). LeakyReLU slope 0.2, BatchNorm with
    affine parameters, PyTorch's default initialisation (as BasicSR).

    Stages: five (down to input_size / 32), then more while the map is larger than 4 × 4 and
    even — so 128 gives BasicSR's five stages (conv0 … conv4) and 256 its extra conv5 stage,
    both ending at 4 × 4 with linear1 = nf · 8 · 4 · 4 → 100; elsewhere linear1 reads
    nf · 8 · r² with r the final side (96 → 3, 192 → 3, 64 → 2). input_size=None: five stages,
    then adaptive average pooling to 1 × 1, linear1 = nf · 8 → 100.

    Shapes: x (B, in_ch, input_size, input_size) (or (B, in_ch, H, W), H, W ≥ 32, with
    input_size None) → (B, 1) logits.
    """

    def __init__(self, in_ch: int = 3, num_feat: int = 64, input_size: int | None = 128) -> None:
        super().__init__()
        check_positive_int("in_ch", in_ch)
        check_positive_int("num_feat", num_feat)
        if input_size is not None and (
            isinstance(input_size, bool)
            or not isinstance(input_size, int)
            or input_size < 32
            or input_size % 32
        ):
            raise ValueError(
                f"input_size must be a multiple of 32 (128 and 256 are BasicSR's), or None for "
                f"the pooled variant that takes any size ≥ 32; got {input_size!r}"
            )
        self.in_ch, self.num_feat, self.input_size = in_ch, num_feat, input_size
        num_stages, side = 5, (input_size // 32 if input_size is not None else 1)
        while input_size is not None and side > 4 and side % 2 == 0:
            num_stages, side = num_stages + 1, side // 2
        self.num_stages, self.final_side = num_stages, side

        widths = [num_feat * min(2**k, 8) for k in range(num_stages)]
        self.conv0_0 = nn.Conv2d(in_ch, num_feat, 3, 1, 1, bias=True)
        self.conv0_1 = nn.Conv2d(num_feat, num_feat, 4, 2, 1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(num_feat, affine=True)
        for k in range(1, num_stages):
            c_in, c = widths[k - 1], widths[k]
            self.add_module(f"conv{k}_0", nn.Conv2d(c_in, c, 3, 1, 1, bias=False))
            self.add_module(f"bn{k}_0", nn.BatchNorm2d(c, affine=True))
            self.add_module(f"conv{k}_1", nn.Conv2d(c, c, 4, 2, 1, bias=False))
            self.add_module(f"bn{k}_1", nn.BatchNorm2d(c, affine=True))
        self.linear1 = nn.Linear(widths[-1] * side * side, 100)
        self.linear2 = nn.Linear(100, 1)

    def extra_repr(self) -> str:
        return f"in_ch={self.in_ch}, num_feat={self.num_feat}, input_size={self.input_size}"

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_ch, input_size, input_size) → (B, 1) logits."""
        self._check_input(x)
        lrelu = lambda t: F.leaky_relu(t, NEGATIVE_SLOPE)  # noqa: E731
        feat = lrelu(self.conv0_0(x))  # (B, nf, H, W)
        feat = lrelu(self.bn0_1(self.conv0_1(feat)))  # (B, nf, H/2, W/2)
        for k in range(1, self.num_stages):
            conv0, bn0 = getattr(self, f"conv{k}_0"), getattr(self, f"bn{k}_0")
            conv1, bn1 = getattr(self, f"conv{k}_1"), getattr(self, f"bn{k}_1")
            feat = lrelu(bn0(conv0(feat)))  # (B, c_k, H/2^k, W/2^k)
            feat = lrelu(bn1(conv1(feat)))  # (B, c_k, H/2^(k+1), W/2^(k+1))
        if self.input_size is None:
            feat = F.adaptive_avg_pool2d(feat, 1)  # (B, 8·nf, 1, 1)
        feat = feat.flatten(1)  # (B, 8·nf · r²)
        feat = lrelu(self.linear1(feat))  # (B, 100)
        return self.linear2(feat)  # (B, 1)

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor (B, C, H, W); got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.in_ch:
            raise ValueError(
                f"x must be (B, C, H, W) with C = in_ch = {self.in_ch}; got shape {tuple(x.shape)}"
            )
        H, W = x.shape[2:]
        if self.input_size is not None and (H, W) != (self.input_size, self.input_size):
            raise ValueError(
                f"x must be {self.input_size}×{self.input_size} (input_size={self.input_size}: "
                f"linear1 reads a fixed-size map); got {H}×{W}. Crop to input_size, or build "
                f"the discriminator with input_size=None for any size ≥ 32"
            )
        if self.input_size is None and (H < 32 or W < 32):
            raise ValueError(f"x must be at least 32×32 (five stride-2 stages); got {H}×{W}")
