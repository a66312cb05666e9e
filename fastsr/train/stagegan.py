"""Stage-GAN training (Wei, Bai & Zhao 2019, eqs. 4–10), as one visible loop.

    python -m fastsr.train stagegan                                   # embedded photographs
    python -m fastsr.train stagegan --data facades --data-dir CMP_facades/base \\
        --val-dir CMP_facades/extended --map-mode onehot --num-classes 12 \\
        --size 256 --ngf 64 --ndf 64 --iters 80000 --decay-from 40000   # the paper's scale
    python -m fastsr.train stagegan --resume runs/stagegan-…          # continues exactly

Each iteration (``--schedule joint``, the default: eq. 10's single sum):

    mr     = bicubic↑(lr)                        (B, 3, S, S), in [-1, 1] for the nets
    map    = G0(mr)                              (B, M, S, S)   stage 0: semantic map
    cond   = map, or softmax(map) in onehot mode
    hr1    = G1([mr, cond])                      (B, 3, S, S)   stage 1: reconstruction
    hr2    = G2(hr1)                             (B, 3, S, S)   stage 2: refinement
    G step: Σ_i BCE(D_i(c_i ‖ fake_i), 1) + λ·Σ_i L1(fake_i, target_i)        (eqs. 4–10)
            c_0 = mr, c_1 = [mr, cond], c_2 = hr1;  targets: map_gt, hr, hr
    D step: Σ_i ½·[BCE(D_i(c_i ‖ real_i), 1) + BCE(D_i(c_i ‖ fake_i.detach()), 0)]

The losses of all three stages are summed and back-propagated together, so stage 1's losses also
reach stage 0 through the map (the paper writes one objective, eq. 10). ``--schedule sequential``
trains one stage after the other instead (``--stage-iters`` each, by default a third of
``--iters``; the other stages frozen).

Conditioning as the paper's Fig. 4: D0 sees mr ‖ map, D1 (mr ‖ map) ‖ image, D2 hr1 ‖ image.
Adam(2e-4, β = (0.5, 0.999)); the learning rate is constant, then decays linearly to 0 from
``--decay-from`` to ``--iters`` (pix2pix's schedule, in iterations). Noise is dropout only; as in
pix2pix, validation and inference keep dropout and batch statistics (``--eval-mode`` switches to
running statistics without dropout), with a fixed seed so their numbers are repeatable.

The run folder holds ``checkpoints/last.pt``, ``generator.pt`` (for ``fastsr.upscale`` /
``fastsr.eval``, and as SPSAGAN's prior source when ``--map-mode onehot``), ``train.csv``,
``val.csv``, ``samples/iter_N.png`` (MR | map | stage 1 | stage 2 | HR) and ``summary.json``.
As SPSAGAN's trainer: start-up checks before iteration 1, an existing run folder refused
(``--resume`` or ``--overwrite``), the checkpoint written before the validation of its iteration.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastsr.data.facades import StageGANDataset, StageGANValidationSet
from fastsr.data.priors import prior_picture
from fastsr.inference import save_model, score
from fastsr.metrics import checker_taps, checkerboard, gsm, quantize
from fastsr.models import NLayerDiscriminator, StageGAN
from fastsr.models.pix2pix import UPSAMPLES
from fastsr.models.stagegan import StageGANUpscaler
from fastsr.train import distributed
from fastsr.train.logs import save_grid
from fastsr.train.run import (
    Checkpointer,
    RunLogs,
    due,
    finish,
    make_loader,
    open_run_folder,
    restore_run,
    sample_folders,
    start_run,
    startup,
)

DATA = ("samples", "facades", "ab")
SCHEDULES = ("joint", "sequential")
STAGE_NAMES = ("stage0", "stage1", "stage2")


@dataclass(frozen=True)
class StageGANConfig:
    # data
    data: str = field(
        default="samples",
        metadata={
            "help": "samples (embedded photographs, pseudo maps), facades (CMP Facades folder) or ab (pix2pix A|B files)"
        },
    )
    data_dir: str = field(default="", metadata={"help": "training folder for --data facades / ab"})
    val_dir: str = field(
        default="",
        metadata={
            "help": "validation folder, same format; empty: the embedded validation photographs (samples) or required"
        },
    )
    photo_side: str = field(
        default="left", metadata={"help": "ab files: the half holding the photo (pix2pix facades: left)"}
    )
    map_mode: str = field(
        default="colour",
        metadata={
            "help": "colour (3-channel colour-coded maps, as pix2pix facades) or onehot (K-class maps)"
        },
    )
    num_classes: int = field(
        default=8,
        metadata={"help": "K: classes of the maps (12 for CMP Facades; pseudo classes for samples)"},
    )
    scale: int = field(default=4, metadata={"help": "upscaling factor: 4 or 8 (2 works too)"})
    size: int = field(default=64, metadata={"help": "training crop side S (paper: 256)"})
    val_size: int = field(
        default=256, metadata={"help": "side of the validation centre crops (a multiple of 32)"}
    )
    batch_size: int = field(default=1, metadata={"help": "crops per iteration per process (paper: 1)"})
    workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    # networks
    ngf: int = field(default=32, metadata={"help": "generator width (paper / pix2pix: 64)"})
    ndf: int = field(default=32, metadata={"help": "discriminator width (paper / pix2pix: 64)"})
    n_blocks: int = field(default=9, metadata={"help": "residual blocks of the stage-2 refiner"})
    residual: bool = field(
        default=True,
        metadata={
            "help": "beyond the paper: stages 1 and 2 predict a correction of their input image (bicubic, stage 1's output), starting as the identity; --no-residual: the paper's whole-image generators"
        },
    )
    upsample: str = field(
        default="resize",
        metadata={
            "help": "the generators' ×2 convs: resize (nearest ×2 then 3×3, no checkerboard; beyond the paper) or transpose (the paper's and pix2pix's transposed convs)"
        },
    )
    spsa_level: int = field(
        default=0,
        metadata={
            "help": "beyond the paper: an SPSA layer at depth k of stage 1's U-Net, stage 0's map as prior (0: none)"
        },
    )
    # optimisation
    iters: int = field(default=3000, metadata={"help": "total iterations"})
    decay_from: int = field(
        default=1500,
        metadata={"help": "the learning rate decays linearly to 0 from this iteration to --iters"},
    )
    lr: float = field(default=2e-4, metadata={"help": "Adam learning rate (generators and discriminators)"})
    beta1: float = field(default=0.5, metadata={"help": "Adam β1"})
    l1_weight: float = field(default=100.0, metadata={"help": "λ, the L1 weight of every stage (eq. 10)"})
    schedule: str = field(
        default="joint",
        metadata={
            "help": "joint (eq. 10: all stages, one summed loss) or sequential (stage 0, then 1, then 2)"
        },
    )
    stage_iters: int | None = field(
        default=None,
        metadata={
            "help": "sequential: iterations of stage 0 and of stage 1 (stage 2 trains to the end); default: a third of --iters each"
        },
    )
    eval_mode: bool = field(
        default=False,
        metadata={
            "help": "validate / infer with running BatchNorm statistics and no dropout (pix2pix --eval)"
        },
    )
    # run
    out: str = field(
        default="",
        metadata={
            "help": "run folder, new or empty (an existing run is refused: --resume it, or --overwrite it); empty: runs/stagegan-<timestamp>"
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "a new run into --out that holds an earlier run: delete that run's own files (checkpoints/last.pt, generator.pt, config.json, summary.json, train.csv, val.csv, samples/iter_*.png, tensorboard events) once start-up has passed; other files are kept"
        },
    )
    resume: str = field(
        default="",
        metadata={
            "help": "run folder (or checkpoint) to continue with its saved config; of the flags typed with it, --iters, the intervals, --device, --threads, --workers and --trust-prior-code take effect, any other that would change the run is refused; a checkpoint outside a run's checkpoints/ folder needs --out"
        },
    )
    val_every: int = field(
        default=1000, metadata={"help": "validate (and write a sample grid) every N iterations"}
    )
    save_every: int = field(
        default=1000, metadata={"help": "write the training checkpoint every N iterations"}
    )
    log_every: int = field(default=50, metadata={"help": "log losses every N iterations"})
    seed: int = field(
        default=0, metadata={"help": "seeds initialisation, batches, dropout and the pseudo maps"}
    )
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads for PyTorch; default: PyTorch's"}
    )

    def __post_init__(self):
        for name, value, allowed in (
            ("data", self.data, DATA),
            ("schedule", self.schedule, SCHEDULES),
            ("map_mode", self.map_mode, ("colour", "onehot")),
            ("photo_side", self.photo_side, ("left", "right")),
            ("upsample", self.upsample, UPSAMPLES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {value!r}")
        if self.scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8; got {self.scale}")
        for name in (
            "num_classes",
            "size",
            "batch_size",
            "ngf",
            "ndf",
            "n_blocks",
            "iters",
            "val_every",
            "save_every",
            "log_every",
            "stage_iters",
            "threads",
        ):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1; got {getattr(self, name)}")
        for name in ("workers", "spsa_level", "decay_from", "l1_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0; got {getattr(self, name)}")
        for name in ("size", "val_size"):
            if getattr(self, name) % 32:
                raise ValueError(
                    f"{name} must be a multiple of 32 (the U-Nets halve it at least 5 times); "
                    f"got {getattr(self, name)}"
                )
        if self.data != "samples" and not self.data_dir:
            raise ValueError(f"--data {self.data} needs --data-dir")
        if self.data != "samples" and not self.val_dir:
            raise ValueError(f"--data {self.data} needs --val-dir (a held-out folder in the same format)")
        if self.map_mode == "onehot" and self.num_classes < 2:
            raise ValueError(f"num_classes must be ≥ 2 in onehot mode; got {self.num_classes}")

    # Older fastsr wrote these values for "the default" (None now); a resume reads them so.
    SENTINELS = {"stage_iters": 0, "threads": 0}
    # Fields older fastsr did not have: its runs resume with the networks they were trained with.
    ADDED = {"residual": False, "upsample": "transpose"}


# ---------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------


def build_data(cfg: StageGANConfig) -> tuple[StageGANDataset, StageGANValidationSet]:
    common = dict(scale=cfg.scale, map_mode=cfg.map_mode)
    t, v = dict(size=cfg.size, **common), dict(size=cfg.val_size, **common)
    if cfg.data == "samples":
        train = StageGANDataset.from_samples("train", num_classes=cfg.num_classes, seed=cfg.seed, **t)
        val = StageGANValidationSet.from_samples("val", num_classes=cfg.num_classes, seed=cfg.seed, **v)
    elif cfg.data == "facades":
        train = StageGANDataset.from_facades(cfg.data_dir, **t)
        val = StageGANValidationSet.from_facades(cfg.val_dir, **v)
    else:
        train = StageGANDataset.from_ab_folder(cfg.data_dir, photo_side=cfg.photo_side, **t)
        val = StageGANValidationSet.from_ab_folder(cfg.val_dir, photo_side=cfg.photo_side, **v)
    if cfg.map_mode == "onehot" and train.num_classes != cfg.num_classes:
        raise ValueError(
            f"num_classes must match the data's {train.num_classes} classes; got {cfg.num_classes}"
        )
    return train, val


def build_networks(cfg: StageGANConfig, map_channels: int) -> tuple[StageGAN, nn.ModuleDict]:
    net = StageGAN(
        scale=cfg.scale,
        image_size=cfg.size,
        ngf=cfg.ngf,
        map_mode=cfg.map_mode,
        map_channels=map_channels,
        n_blocks=cfg.n_blocks,
        spsa_level=cfg.spsa_level,
        residual=cfg.residual,
        upsample=cfg.upsample,
    )
    discriminators = nn.ModuleDict(
        {
            name: NLayerDiscriminator(in_ch, ndf=cfg.ndf, n_layers=3)
            for name, in_ch in net.discriminator_in_channels.items()
        }
    )
    return net, discriminators


def network_choices(cfg: StageGANConfig) -> str:
    """The banner's words for the two choices beyond the paper."""
    if not cfg.residual and cfg.upsample == "transpose":
        return "the paper's networks"
    parts = ["residual stages 1 and 2" if cfg.residual else "whole-image stages 1 and 2 (paper)"]
    parts.append("resize-convolutions" if cfg.upsample == "resize" else "transposed convs (paper)")
    return ", ".join(parts) + " (--no-residual --upsample transpose: the paper's)"


def linear_decay(cfg: StageGANConfig):
    """Multiplier of the learning rate at iteration t: 1 until decay_from, then linear to 0."""
    span = max(1, cfg.iters - cfg.decay_from)
    return lambda t: 1.0 if t < cfg.decay_from else max(0.0, 1.0 - (t - cfg.decay_from) / span)


def active_stages(cfg: StageGANConfig, iteration: int) -> tuple[str, ...]:
    """The stages trained at ``iteration`` (1-based): all three (joint), or one after another."""
    if cfg.schedule == "joint":
        return STAGE_NAMES
    # None follows --iters (a runtime flag), so it is resolved here, at each use, not once
    per_stage = cfg.stage_iters if cfg.stage_iters is not None else max(1, -(-cfg.iters // 3))
    return (STAGE_NAMES[min(2, (iteration - 1) // per_stage)],)


def to_net(x: Tensor) -> Tensor:
    return x * 2 - 1  # [0, 1] → [-1, 1]


def from_net(x: Tensor) -> Tensor:
    return ((x + 1) / 2).clamp(0, 1)  # [-1, 1] → [0, 1]


def bce(logits: Tensor, real: bool) -> Tensor:
    """pix2pix's GANLoss('vanilla') on PatchGAN logits: BCE against all ones or all zeros."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def map_picture(map_: Tensor, map_mode: str) -> Tensor:
    """(M, H, W) in net range → (3, H, W) in [0, 1] for the sample grid."""
    return from_net(map_) if map_mode == "colour" else prior_picture(map_.softmax(0))


@torch.no_grad()
def validate(
    upscaler: StageGANUpscaler,
    val: StageGANValidationSet,
    scale: int,
    device: torch.device,
    grid_path: Path | None,
) -> dict[str, float]:
    """Mean PSNR / SSIM (:func:`fastsr.inference.score`: 8-bit, Y, border = scale), GSM and
    checkerboard energies at periods 2 and 4 relative to HR's (:func:`fastsr.metrics.checkerboard`
    on R, G and B; 1: as much such structure as HR) of each stage's output and of bicubic (MR); a sample grid
    MR | stage-0 map | stage 1 | stage 2 | HR."""
    metrics = ("psnr", "ssim", "gsm", "checker2", "checker4")
    sums = {f"{m}_{n}": 0.0 for n in ("bicubic", "stage1", "stage2") for m in metrics}
    rows = []
    for item in val:
        hr, mr = item["hr"].to(device), item["mr"][None].to(device)  # (3, S, S), (1, 3, S, S)
        out = upscaler.stages(mr)  # dict of (1, C, S, S) in net range
        images = {
            "bicubic": mr[0],
            "stage1": from_net(out["stage1"][0]),
            "stage2": from_net(out["stage2"][0]),
        }
        for n in ("stage1", "stage2"):
            s = score(images[n], mr[0], hr, name=item["name"], crop_border=scale)
            sums[f"psnr_{n}"] += s.psnr
            sums[f"ssim_{n}"] += s.ssim
        sums["psnr_bicubic"] += s.bicubic_psnr
        sums["ssim_bicubic"] += s.bicubic_ssim
        for n, img in images.items():
            sr8, hr8 = quantize(img), quantize(hr)
            sums[f"gsm_{n}"] += float(gsm(sr8, hr8, crop_border=scale))
            for p in (2, 4):
                # on R, G and B: a transposed conv's grid often shows in colour more than in luma
                if min(hr.shape[-2:]) - 2 * scale < checker_taps(p):
                    sums[f"checker{p}_{n}"] = math.nan  # too small a crop for the window
                    continue
                c = checkerboard(sr8, hr8, period=p, crop_border=scale, y_channel=False)
                sums[f"checker{p}_{n}"] += float(c)
        if grid_path is not None and len(rows) < 4:
            rows.append(
                [
                    mr[0],
                    map_picture(out["map"][0], upscaler.net.map_mode),
                    images["stage1"],
                    images["stage2"],
                    hr,
                ]
            )
    if grid_path is not None and rows:
        save_grid(grid_path, rows)
    return {k: v / len(val) for k, v in sums.items()}


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def run(cfg: StageGANConfig, given: Iterable[str] | None = None) -> dict:
    """Train Stage-GAN; returns the summary it writes to ``<out>/summary.json`` (rank 0).

    ``given``: the fields the user set, for the rules of ``cfg.resume``
    (:func:`fastsr.train.run.resume_or_start`); from Python, those that differ from their
    defaults."""
    with startup():
        d = distributed.setup(cfg.device)
    try:
        return _train(cfg, d, given)
    finally:
        distributed.teardown(d)


def run_inputs(cfg: StageGANConfig) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (flag, folder) and (flag, file) pairs a new run reads: its run folder keeps apart."""
    if cfg.data == "samples":
        return sample_folders("train", "val"), []
    return [("--data-dir", cfg.data_dir), ("--val-dir", cfg.val_dir)], []


def build_optimizers(cfg: StageGANConfig, net: StageGAN, Ds: nn.ModuleDict) -> tuple[dict, dict]:
    """Adam(lr, β = (β1, 0.999)) for the generators and for the discriminators; linear decay."""
    optimizers = {
        "generators": torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999)),
        "discriminators": torch.optim.Adam(Ds.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999)),
    }
    schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, linear_decay(cfg)) for k, o in optimizers.items()}
    return optimizers, schedulers


def stage_pairs(
    net: StageGAN, outs: dict[str, Tensor], mr: Tensor, hr: Tensor, map_gt: Tensor
) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """(condition, fake, real) per stage, as the paper's Fig. 4 conditions each discriminator."""
    cond = net.map_condition(outs["map"])  # (B, M, S, S): what stage 1 read
    mr_cond = torch.cat([mr, cond], dim=1)  # (B, 3 + M, S, S)
    return {
        "stage0": (mr, cond, map_gt),
        "stage1": (mr_cond, outs["stage1"], hr),
        "stage2": (outs["stage1"], outs["stage2"], hr),
    }


def generator_step(
    Ds: nn.ModuleDict,
    optimizer: torch.optim.Optimizer,
    pairs: dict,
    stages: tuple[str, ...],
    l1_weight: float,
) -> dict[str, float]:
    """Σ_s BCE(D_s(c_s ‖ fake_s), 1) + λ·L1(fake_s, real_s) over the active stages, the
    discriminators frozen. ``Ds`` unwrapped: this step updates none of their weights."""
    Ds.requires_grad_(False)
    logs, loss = {}, 0.0
    for s in stages:
        c, fake, real = pairs[s]
        l_gan = bce(Ds[s](torch.cat([c, fake], 1)), real=True)
        l_l1 = F.l1_loss(fake, real)
        loss = loss + l_gan + l1_weight * l_l1
        logs[f"{s}_gan"], logs[f"{s}_l1"] = l_gan.item(), l_l1.item()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return logs


def discriminator_step(
    Ds: nn.ModuleDict,
    D: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    pairs: dict,
    stages: tuple[str, ...],
) -> dict[str, float]:
    """Σ_s ½·[BCE(D_s(c_s ‖ real_s), 1) + BCE(D_s(c_s ‖ fake_s.detach()), 0)] over the active
    stages; ``D`` the (DDP-wrapped) discriminators of ``Ds``."""
    Ds.requires_grad_(True)
    logs, loss = {}, 0.0
    for s in stages:
        c, fake, real = pairs[s]
        c = c.detach()
        l_d = 0.5 * (
            bce(D[s](torch.cat([c, real], 1)), real=True)
            + bce(D[s](torch.cat([c, fake.detach()], 1)), real=False)
        )
        loss = loss + l_d
        logs[f"{s}_d"] = l_d.item()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return logs


def _train(cfg: StageGANConfig, d: distributed.Dist, given: Iterable[str] | None) -> dict:
    # Start-up: every condition that could fail later is checked before iteration 1. (Validation
    # images cannot be too small to score: they are --val-size crops, ≥ 32 ≥ 2·8 + 11.)
    with startup():
        cfg, resumed, out = start_run(cfg, given, "stagegan", run_inputs)
        device = d.device
        train, val = build_data(cfg)
        net, Ds = build_networks(cfg, train.map_channels)
        net, Ds = net.to(device), Ds.to(device)
        if d.rank:  # other dropout masks on every rank (rank 0 keeps the single-process stream)
            torch.manual_seed(cfg.seed + d.rank)
        upscaler = StageGANUpscaler(net, batch_stats=not cfg.eval_mode, seed=cfg.seed)
        models = {"generators": net, "discriminators": Ds}
        optimizers, schedulers = build_optimizers(cfg, net, Ds)
        state = dict(models=models, optimizers=optimizers, schedulers=schedulers)  # what a checkpoint holds
        start, extra = 0, {}
        if resumed is not None:
            start, extra = restore_run(resumed, cfg.resume, **state, rank=d.rank, world_size=d.world_size)
        sampler, loader = make_loader(
            train, cfg.batch_size, seed=cfg.seed, d=d, start=start, workers=cfg.workers
        )
        if net.stage1.spsa is not None and not bool(net.stage1.spsa.alpha_initialized):
            with torch.no_grad():  # SPSA's α from the first batch, before DDP broadcasts rank 0's
                first = train[sampler.global_batch(start)[0]]
                net(to_net(first["mr"][None].to(device)))
        sequential = cfg.schedule == "sequential"  # frozen stages: parameters without gradients
        G = distributed.wrap(net, d, find_unused_parameters=sequential)
        D = {k: distributed.wrap(m, d, find_unused_parameters=sequential) for k, m in Ds.items()}
        open_run_folder(
            out,
            d,
            overwrite=cfg.overwrite,
            config=cfg,
            resumed_at=start if resumed is not None else None,
            banner=f"stagegan → {out}  ({device}, {torch.get_num_threads()} threads, {d.world_size} "
            f"process{'es' if d.enabled else ''}, {len(train)} training / {len(val)} validation "
            f"images, ×{cfg.scale}, {cfg.size}² crops, {cfg.map_mode} maps, schedule {cfg.schedule}; "
            f"{network_choices(cfg)})",
        )
        logs = RunLogs(
            out,
            d,
            start=start,
            total=cfg.iters,
            resumed=resumed is not None,
            desc="stagegan",
            every=cfg.log_every,
        )

    def run_validation(iteration: int) -> dict[str, float]:
        # The upscaler seeds its own dropout (torch's RNG forked); the checkpointer keeps every stream.
        means = validate(upscaler, val, cfg.scale, device, out / "samples" / f"iter_{iteration:07d}.png")
        logs.val(
            iteration,
            means,
            f"  val @ {iteration}: PSNR-Y bicubic {means['psnr_bicubic']:.2f} | stage 1 "
            f"{means['psnr_stage1']:.2f} | stage 2 {means['psnr_stage2']:.2f} dB; GSM "
            f"{means['gsm_bicubic']:.4f} | {means['gsm_stage1']:.4f} | {means['gsm_stage2']:.4f}; "
            f"checkerboard 2 / 4 px ×HR {means['checker2_stage1']:.2f} / {means['checker4_stage1']:.2f} | "
            f"{means['checker2_stage2']:.2f} / {means['checker4_stage2']:.2f}",
        )
        return means

    checkpointer = Checkpointer(
        out,
        d,
        cfg,
        **state,
        extra=extra,
        validate=run_validation,
        export=lambda path: save_model(path, upscaler),
    )
    net.train()
    for iteration in range(start + 1, cfg.iters + 1):
        batch = next(loader)
        mr, hr = to_net(batch["mr"].to(device)), to_net(batch["hr"].to(device))  # (B, 3, S, S) each
        map_gt = (
            to_net(batch["map"].to(device)) if cfg.map_mode == "colour" else batch["map"].to(device)
        )  # (B, M, S, S)
        stages = active_stages(cfg, iteration)
        for s in STAGE_NAMES:
            getattr(net, s).requires_grad_(s in stages)
        # forward through all three generators (through the DDP wrapper: it syncs the gradients)
        pairs = stage_pairs(net, G(mr), mr, hr, map_gt)
        losses = generator_step(Ds, optimizers["generators"], pairs, stages, cfg.l1_weight)
        losses |= discriminator_step(Ds, D, optimizers["discriminators"], pairs, stages)
        lr_used = schedulers["generators"].get_last_lr()[0]  # this iteration's, before the step
        for sch in schedulers.values():
            sch.step()
        logs.step(iteration, {k: v for k, v in losses.items() if k.endswith("_l1")})
        if due(iteration, cfg.log_every, cfg.iters):
            losses = distributed.mean_over_ranks(losses, d)
            logs.train(
                iteration,
                {f"{s}_{k}": losses.get(f"{s}_{k}", "") for s in STAGE_NAMES for k in ("gan", "l1", "d")},
                lr_used,
            )
        checkpointer.end_of_iteration(iteration)  # the checkpoint, then the validation
    result = finish(cfg, d, logs, checkpointer, start=start)
    if result:
        print_summary(result, cfg, out, start, len(val))
    return result


def print_summary(result: dict, cfg: StageGANConfig, out: Path, start: int, images: int) -> None:
    v = result["val"]
    print(
        f"\nstagegan: {cfg.iters - start} iterations in {result['seconds']:.0f} s ({result['its']:.2f} it/s); "
        f"validation ({images} images, ×{cfg.scale}, Y channel, border {cfg.scale}):\n"
        f"  {'':10s} {'PSNR':>7s} {'SSIM':>7s} {'GSM':>7s} {'grid 2':>7s} {'grid 4':>7s}  "
        "(checkerboard energy at 2 / 4 px, ×HR's)",
        flush=True,
    )
    for n, label in (("bicubic", "bicubic"), ("stage1", "stage 1"), ("stage2", "stage 2")):
        print(
            f"  {label:10s} {v[f'psnr_{n}']:7.2f} {v[f'ssim_{n}']:7.4f} {v[f'gsm_{n}']:7.4f} "
            f"{v[f'checker2_{n}']:7.2f} {v[f'checker4_{n}']:7.2f}"
        )
    print(
        f"  wrote {out}/generator.pt, checkpoints/last.pt, train.csv, val.csv, samples/, summary.json",
        flush=True,
    )
