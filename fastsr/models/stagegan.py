"""Stage-GAN (Wei, Bai & Zhao, "Stage-GAN with Semantic Maps for Large-scale Image
Super-resolution", KSII Transactions on Internet and Information Systems 13(8), 2019): the three-stage container of
pix2pix networks (:mod:`fastsr.models.pix2pix`), its upscaler (the generator interface) and its
stage 0 as a segmentation-prior network.

    stage 0, U-Net:    mr → map                                (B, 3, H, W) → (B, M, H, W)
    stage 1, U-Net:    mr ‖ map_condition(map) → hr            (B, 3 + M, H, W) → (B, 3, H, W)
                       [optional SPSA layer, prior = the map condition; not in the paper]
    stage 2, ResNet:   hr → refined hr                         (B, 3, H, W) → (B, 3, H, W)
                       [optional, both: residual=True adds the stage's input image to its
                       output (stage 1: mr, stage 2: hr); upsample="resize" decodes with
                       resize-convolutions; neither is in the paper]
    discriminators:    PatchGAN on condition ‖ output          (B, C, 256, 256) → (B, 1, 30, 30)

mr is the LR image upscaled with bicubic interpolation to the HR size ("middle resolution"), so
every network here is same-size; the scale factor lives only in :meth:`StageGAN.config`.

The stages are pix2pix's networks, with pix2pix's keys (:mod:`fastsr.models.pix2pix`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fastsr._checks import check_bool, check_positive_int
from fastsr.models.model_file import load_params, read_model_file, write_model_file
from fastsr.models.pix2pix import MIN_DOWNS, ResnetGenerator, UnetGenerator, _check_image
from fastsr.ops.imresize import imresize

__all__ = ["StageGAN", "StageGANUpscaler", "StageZeroSegmenter"]

MAX_DOWNS = 8  # StageGAN's derived num_downs is capped here (unet_256)
MAP_MODES = ("colour", "onehot")
SCALES = (2, 4, 8)
CONFIG_KEYS = (  # StageGAN.config(): the architecture, backend left out
    "image_channels", "scale", "image_size", "num_downs", "ngf", "map_mode", "map_channels",
    "use_dropout", "n_blocks", "refiner_dropout", "spsa_level", "qk_channels", "heads",
    "residual", "upsample",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The three stages
# ---------------------------------------------------------------------------------------------


class StageGAN(nn.Module):
    """Stage-GAN's three generators (Wei, Bai & Zhao 2019, Fig. 1): map, reconstruction, refinement.

    Args:
        image_channels: channels of the images (MR in, HR out): 3.
        scale: the LR → HR factor the net is trained for (2, 4 or 8; the paper's are 4 and 8).
            Stored in :meth:`config` only: the networks are same-size, their input is the LR
            image bicubic-upscaled to HR size (MR).
        image_size: the training crop side (256 in the paper). Sets num_downs when that is None:
            the number of factors 2 in image_size, capped at 8 (log2(image_size) for powers of
            two up to 256; 8 — unet_256 — for larger ones), and it must be at least 5.
        num_downs: the U-Nets' levels; image_size must then be a multiple of 2**num_downs.
            Inputs of any size that is a multiple of 2**num_downs run.
        ngf: first-level channels of all three generators (pix2pix: 64).
        map_mode: "colour" — the semantic map is a colour-coded image (the CMP Facades labels,
            paper Fig. 5): stage 0 ends in tanh and outputs the map in [-1, 1], fed to stage 1
            as is; "onehot" — stage 0 outputs K = map_channels class logits (no tanh), fed to
            stage 1 as their softmax (class probabilities). Either way stage 1 reads
            :meth:`map_condition` of the map, and a ground-truth map for teacher forcing must be
            in that form (colour image in [-1, 1], or one-hot / probabilities).
        map_channels: M, the map's channels (3 for a colour map; K classes for onehot).
        use_dropout: the U-Nets' dropout (pix2pix's noise; paper section 2.4).
        n_blocks: the refiner's residual blocks (9 in the paper).
        refiner_dropout: dropout in the refiner's residual blocks (pix2pix's pix2pix model turns
            it on with its --no_dropout default; the paper does not say; off by default).
        spsa_level: 0 (the paper), or k ≥ 1: an SPSA layer at depth k of stage 1's U-Net, with
            stage 0's map condition (M channels at the image size) as its prior — see
            :class:`UnetGenerator`. Not in the paper.
        qk_channels, heads: the SPSA layer's; qk_channels None = max(1, channels // 8).
        residual: stages 1 and 2 predict a correction of their input image instead of the whole
            image: stage 1 returns mr + G1([mr, cond]), stage 2 hr1 + G2(hr1), and the last conv
            of G1 and of G2 starts at zero, so the untrained network returns bicubic. Not in the
            paper (False, its networks): a short run then spends its iterations on detail
            instead of first relearning what bicubic gives, and cannot drift in colour.
        upsample: the decoders' ×2 convs in stages 0, 1 and 2: "transpose" (pix2pix's and the
            paper's transposed convs) or "resize" (nearest ×2 then a 3×3 conv, which leaves no
            checkerboard; :func:`fastsr.models.pix2pix.up_conv`).
        backend: the SPSA layer's backend; a runtime choice, not part of :meth:`config`.

    Submodules: stage0 = UnetGenerator(image_channels → M), stage1 = UnetGenerator(image_channels
    + M → image_channels), stage2 = ResnetGenerator(image_channels → image_channels); keys
    ``stage0.model.…``, ``stage1.model.…``, ``stage2.model.…`` (pix2pix's below the prefix).
    The discriminators are the trainer's: :attr:`discriminator_in_channels` gives their in_ch.

    Shapes:
        mr: (B, image_channels, H, W) in [-1, 1], H and W multiples of 2**num_downs.
        forward returns {"map": (B, M, H, W), "stage1": (B, image_channels, H, W),
        "stage2": (B, image_channels, H, W)}: the map (tanh colour map in [-1, 1], or logits),
        the reconstruction and the refined image (both in [-1, 1]; with ``residual`` they may
        overshoot it, and the upscaler clamps).
    """

    def __init__(
        self,
        *,
        image_channels: int = 3,
        scale: int = 4,
        image_size: int = 256,
        num_downs: int | None = None,
        ngf: int = 64,
        map_mode: str = "colour",
        map_channels: int = 3,
        use_dropout: bool = True,
        n_blocks: int = 9,
        refiner_dropout: bool = False,
        spsa_level: int = 0,
        qk_channels: int | None = None,
        heads: int = 1,
        residual: bool = False,
        upsample: str = "transpose",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        check_positive_int("image_channels", image_channels)
        check_bool("residual", residual)
        if isinstance(scale, bool) or not isinstance(scale, int) or scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}; got {scale!r}")
        check_positive_int("image_size", image_size)
        if num_downs is None:
            twos = (image_size & -image_size).bit_length() - 1  # factors 2 in image_size
            if twos < MIN_DOWNS:
                raise ValueError(
                    f"image_size must be a multiple of 2**{MIN_DOWNS} = {2**MIN_DOWNS} (the "
                    f"U-Nets halve it at least {MIN_DOWNS} times); got {image_size}"
                )
            num_downs = min(twos, MAX_DOWNS)
        elif isinstance(num_downs, bool) or not isinstance(num_downs, int) or num_downs < MIN_DOWNS:
            raise ValueError(f"num_downs must be None or an int ≥ {MIN_DOWNS}; got {num_downs!r}")
        elif image_size % 2**num_downs:
            raise ValueError(
                f"image_size must be a multiple of 2**num_downs = {2**num_downs}; got "
                f"image_size={image_size}, num_downs={num_downs}"
            )
        if map_mode not in MAP_MODES:
            raise ValueError(f"map_mode must be one of {MAP_MODES}; got {map_mode!r}")
        check_positive_int("map_channels", map_channels)
        if map_mode == "onehot" and map_channels < 2:
            raise ValueError(f"map_channels must be ≥ 2 in 'onehot' map mode (K classes); got {map_channels}")
        for name, value in (("use_dropout", use_dropout), ("refiner_dropout", refiner_dropout)):
            check_bool(name, value)
        self.image_channels, self.scale, self.image_size = image_channels, scale, image_size
        self.num_downs, self.ngf = num_downs, ngf
        self.map_mode, self.map_channels = map_mode, map_channels
        self.use_dropout, self.refiner_dropout = use_dropout, refiner_dropout
        self.n_blocks = n_blocks
        if spsa_level == 0 and (qk_channels is not None or heads != 1):
            raise ValueError(
                f"qk_channels and heads configure stage 1's SPSA layer, used only with "
                f"spsa_level > 0; got qk_channels={qk_channels!r}, heads={heads!r} with "
                "spsa_level=0"
            )
        self.spsa_level, self.heads = spsa_level, heads
        self.residual, self.upsample = residual, upsample

        unet = {"num_downs": num_downs, "ngf": ngf, "use_dropout": use_dropout, "upsample": upsample}
        self.stage0 = UnetGenerator(image_channels, map_channels, out_tanh=(map_mode == "colour"), **unet)
        self.stage1 = UnetGenerator(
            image_channels + map_channels,
            image_channels,
            spsa_level=spsa_level,
            seg_channels=map_channels if spsa_level else 0,
            qk_channels=qk_channels,
            heads=heads,
            backend=backend,
            **unet,
        )
        self.stage2 = ResnetGenerator(
            image_channels,
            image_channels,
            ngf=ngf,
            n_blocks=n_blocks,
            use_dropout=refiner_dropout,
            upsample=upsample,
        )
        spsa = self.stage1.spsa
        self.qk_channels = spsa.qk_channels if spsa is not None else qk_channels
        self._zero_residual_heads()

    def _zero_residual_heads(self) -> None:
        """With ``residual``: the last conv of stages 1 and 2 at zero (each stage starts as the
        identity on its input image; the conv's weights still get gradients)."""
        if not self.residual:
            return
        for last in (self.stage1.model.model[3], self.stage2.model[-2]):  # U-Net up conv, 7×7 conv
            conv = last[-1] if isinstance(last, nn.Sequential) else last
            with torch.no_grad():
                conv.weight.zero_()
                conv.bias.zero_()

    @property
    def discriminator_in_channels(self) -> dict[str, int]:
        """in_ch of each stage's conditional PatchGAN (Wei, Bai & Zhao 2019, Fig. 4): D0 judges mr ‖ map
        condition, D1 (mr ‖ map condition) ‖ hr, D2 stage-1 output ‖ refined."""
        c, m = self.image_channels, self.map_channels
        return {"stage0": c + m, "stage1": c + m + c, "stage2": c + c}

    def map_condition(self, map: Tensor) -> Tensor:
        """Stage 0's output → what stage 1 reads (and its SPSA prior): the colour map itself in
        "colour" mode, softmax over the K class logits in "onehot" mode. (B, M, H, W) →
        (B, M, H, W)."""
        return map if self.map_mode == "colour" else map.softmax(dim=1)

    def reset_parameters(self) -> None:
        for stage in (self.stage0, self.stage1, self.stage2):
            stage.reset_parameters()
        self._zero_residual_heads()

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, image_size={self.image_size}, num_downs={self.num_downs}, "
            f"ngf={self.ngf}, map_mode={self.map_mode!r}, map_channels={self.map_channels}, "
            f"spsa_level={self.spsa_level}, residual={self.residual}, upsample={self.upsample!r}"
        )

    def forward(self, mr: Tensor) -> dict[str, Tensor]:
        """mr: (B, C, H, W) in [-1, 1] → {"map": (B, M, H, W), "stage1": (B, C, H, W),
        "stage2": (B, C, H, W)}."""
        n = self.num_downs
        _check_image("mr", mr, self.image_channels, 2**n, f"the U-Nets' num_downs={n} halvings")
        map_out = self.stage0(mr)  # (B, M, H, W): colour map in [-1, 1], or class logits
        cond = self.map_condition(map_out).to(mr.dtype)  # (B, M, H, W); autocast may lower it
        prior = cond if self.spsa_level else None
        stage1 = self.stage1(torch.cat([mr, cond], 1), prior)  # (B, C, H, W) in [-1, 1]
        if self.residual:
            stage1 = mr + stage1  # (B, C, H, W) in [-2, 2]: a correction of the MR image
        stage2 = self.stage2(stage1)  # (B, C, H, W) in [-1, 1]
        if self.residual:
            stage2 = stage1 + stage2  # (B, C, H, W): a correction of stage 1's image
        return {"map": map_out, "stage1": stage1, "stage2": stage2}

    # -- checkpoints ----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The constructor arguments that fix the architecture (JSON-serialisable; backend left
        out); num_downs and qk_channels resolved (qk_channels None without SPSA)."""
        return {key: getattr(self, key) for key in CONFIG_KEYS}

    def save(self, path: str | os.PathLike) -> None:
        """Write a ``fastsr.model/1`` file of kind "stagegan" (as :class:`StageGANUpscaler`, with
        its default inference settings: what ``fastsr.upscale`` reads), atomically and with a
        digest (:mod:`fastsr.models.model_file`)."""
        StageGANUpscaler(self).save(path)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike | Mapping[str, Any],
        *,
        backend: str = "auto",
        map_location: str | torch.device = "cpu",
    ) -> StageGAN:
        """Rebuild a StageGAN from its model file (a path, or the loaded dict; also fastsr 0.1's
        ``StageGAN.save`` layout): its config and parameters (BatchNorm statistics and the SPSA
        layer's α and its flag included), in the file's dtype, on map_location."""
        return StageGANUpscaler.from_checkpoint(checkpoint, backend=backend, map_location=map_location).net


# ---------------------------------------------------------------------------------------------
# Inference: LR image → SR image, and stage 0 as a segmentation-prior network
# ---------------------------------------------------------------------------------------------


class StageGANUpscaler(nn.Module):
    """A trained :class:`StageGAN` as an upscaler: ``forward(lr)`` = stage 2 of stage 1 of the
    bicubic-upscaled LR image, in [0, 1] (the ``generator(lr, prior)`` interface of
    :mod:`fastsr.inference`, which ``fastsr.upscale`` / ``fastsr.eval`` call).

    Args:
        net: the StageGAN; None builds one from ``config`` (what :func:`fastsr.inference.load_model`
            does with :meth:`config`).
        batch_stats: pix2pix's test-time behaviour (True): BatchNorm normalises with the
            statistics of the image itself and dropout stays on, under a fixed ``seed`` so the
            result is repeatable; the running statistics are left as they were. False: eval mode
            (running statistics, no dropout; pix2pix's ``--eval``).
        seed: the dropout seed of ``batch_stats`` inference (the caller's RNG is not touched).

    Any image size runs: the MR image is padded (replicate) to a multiple of 2**num_downs and
    the outputs cropped back.
    """

    MODEL_KIND = "stagegan"  # its model files' kind (fastsr.models.kinds.KINDS)

    def __init__(
        self, net: StageGAN | None = None, *, batch_stats: bool = True, seed: int = 0, **config: Any
    ):
        super().__init__()
        if net is None:
            net = StageGAN(**config)
        elif config:
            raise ValueError(f"give either net or its config, not both; got net and {sorted(config)}")
        check_bool("batch_stats", batch_stats)
        self.net, self.batch_stats, self.seed = net, batch_stats, int(seed)

    @property
    def scale(self) -> int:
        return self.net.scale

    @property
    def needs_prior(self) -> bool:
        """False: stage 0 makes its own semantic map."""
        return False

    @property
    def input_multiple(self) -> int:
        """1: any input size runs (the MR image is padded inside, :meth:`stages`)."""
        return 1

    def config(self) -> dict[str, Any]:
        """The StageGAN's config plus the inference settings ``batch_stats`` and ``seed``."""
        return {**self.net.config(), "batch_stats": self.batch_stats, "seed": self.seed}

    def save(self, path: str | os.PathLike) -> None:
        """Write a ``fastsr.model/1`` file (kind "stagegan"), atomically and with a digest."""
        write_model_file(path, kind=self.MODEL_KIND, config=self.config(), params=self.state_dict())

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike | Mapping[str, Any],
        *,
        backend: str = "auto",
        map_location: str | torch.device = "cpu",
    ) -> StageGANUpscaler:
        """Rebuild an upscaler from its model file (a path or the loaded dict, any layout), in
        the file's dtype, on map_location."""
        file = read_model_file(checkpoint, expect=(cls.MODEL_KIND, "a Stage-GAN"))
        config = dict(file.config)
        unknown = sorted(set(config) - set(CONFIG_KEYS) - {"batch_stats", "seed"})
        if unknown:
            raise ValueError(f"{file.source}: config has unknown keys {unknown}; known: {CONFIG_KEYS}")
        options = {k: config.pop(k) for k in ("batch_stats", "seed") if k in config}
        try:
            net = StageGAN(**config, backend=backend)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{file.source}: its config does not build a StageGAN: {e}") from None
        return load_params(cls(net, **options), file).to(map_location)

    @torch.no_grad()
    def stages(self, mr: Tensor, *, only_map: bool = False) -> dict[str, Tensor]:
        """mr (B, C, H, W) in [0, 1], any H, W → the StageGAN outputs in net range, (B, ·, H, W)
        (only {"map"} with ``only_map``)."""
        H, W = mr.shape[-2:]
        m = 2**self.net.num_downs
        ph, pw = -H % m, -W % m
        x = mr * 2 - 1  # (B, C, H, W) in [-1, 1]
        if ph or pw:
            x = nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")  # (B, C, H + ph, W + pw)
        norms = [mod for mod in self.net.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
        saved = [
            (mod.running_mean.clone(), mod.running_var.clone(), mod.num_batches_tracked.clone())
            for mod in norms
            if mod.track_running_stats
        ]
        was_training = self.net.training
        devices = [x.device] if x.device.type == "cuda" else []
        try:
            self.net.train(self.batch_stats)
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)
                if only_map:
                    out = {"map": self.net.stage0(x)}
                else:
                    out = self.net(x)
        finally:
            self.net.train(was_training)
            for mod, (mean, var, count) in zip([n for n in norms if n.track_running_stats], saved):
                mod.running_mean.copy_(mean)
                mod.running_var.copy_(var)
                mod.num_batches_tracked.copy_(count)
        return {k: v[..., :H, :W] for k, v in out.items()}

    def forward(self, lr: Tensor, prior: Tensor | None = None) -> Tensor:
        """lr (B, C, h, w) in [0, 1] → (B, C, s·h, s·w) in [0, 1]; ``prior`` must be None."""
        if prior is not None:
            raise ValueError("prior must be None: Stage-GAN computes its own semantic map (stage 0)")
        mr = imresize(lr, self.scale).clamp(0, 1)  # (B, C, s·h, s·w)
        return ((self.stages(mr)["stage2"] + 1) / 2).clamp(0, 1)


class StageZeroSegmenter(nn.Module):
    """Stage 0 of a one-hot Stage-GAN as a segmentation network for SPSAGAN's priors:
    ``forward(mr)`` (B, C, H, W) in [0, 1] → (B, K, H, W) class logits (the prior is their
    softmax; :class:`fastsr.data.priors.ModulePrior` applies it)."""

    def __init__(self, upscaler: StageGANUpscaler):
        super().__init__()
        if upscaler.net.map_mode != "onehot":
            raise ValueError(
                "a Stage-GAN used as a segmentation prior must be trained with map_mode 'onehot' "
                f"(K class maps); this one has map_mode {upscaler.net.map_mode!r}"
            )
        self.upscaler = upscaler

    @property
    def num_classes(self) -> int:
        return self.upscaler.net.map_channels

    def forward(self, mr: Tensor) -> Tensor:
        return self.upscaler.stages(mr, only_map=True)["map"]  # (B, K, H, W) logits
