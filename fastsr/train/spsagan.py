"""SPSAGAN training (Zhang, Zheng & Hu 2020, section 4), as one visible loop.

    python -m fastsr.train spsagan --stage psnr --train-dir HR/ --val-dir VAL/ --out runs/psnr
    python -m fastsr.train spsagan --stage gan  --pretrained runs/psnr/generator.pt \\
        --vgg-weights vgg19.pth --train-dir HR/ --val-dir VAL/ --out runs/gan
    python -m fastsr.train spsagan --resume runs/gan           # continues exactly
    python -m fastsr.train spsagan --resume runs/gan --iters 800000   # … and longer
    torchrun --nproc_per_node 2 -m fastsr.train spsagan …       # DistributedDataParallel

Stages (defaults are the paper's, section 4):
    psnr  the generator without SPSA, L1 loss, Adam(2e-4, β = (0.9, 0.99)), lr halved every 200k
    gan   from the psnr generator, SPSA inserted (γ = 0: it starts as the identity);
          1e-2·L1 + 1·perceptual (VGG19 conv5_4, before ReLU) + 5e-3·relativistic GAN;
          Adam β1 = 0.9, lr 5e-4 for SPSA and 1e-4 for the rest and the discriminator,
          halved every 100k; batch 16

Each iteration (gan stage), as ESRGAN trains:
    prior = P(bicubic↑(lr))                      (B, S, H, W), never from hr
    sr    = G(lr, prior)                         (B, 3, H, W)
    G step: w_pix·L1(sr, hr) + w_per·L1(φ(sr), φ(hr)) + w_gan·RaGAN_G(D(hr), D(sr)), D frozen
    D step: RaGAN_D(D(hr), D(sr.detach()))
    EMA of G's weights (the EMA generator is validated and exported)

The run folder holds ``checkpoints/last.pt`` (everything ``--resume`` needs, written atomically),
``generator.pt`` (EMA weights + prior, for ``fastsr.upscale`` / ``fastsr.eval``), ``train.csv``,
``val.csv``, ``samples/iter_N.png`` (bicubic | SR | HR | prior) and ``summary.json``.

Before iteration 1 every condition that could fail later is checked (the run folder, the files
named by flags, the validation images' sizes and priors, the prior network on one image, the
device): a mistake costs no training. A new run refuses a run folder that holds files
(``--resume`` it, or ``--overwrite``: the earlier run's own files are deleted, no others) and one
that is, holds or lies inside an input. Each checkpoint is written before the validation of its
iteration, and validation draws nothing from the RNG streams a checkpoint saves. A TorchScript
or torch.export ``--prior-module`` runs its author's code when loaded: it needs
``--trust-prior-code``, given again on every resume.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastsr.data import (
    HRDataset,
    MixedDataset,
    ValidationSet,
    imresize,
    list_images,
    sample_image_paths,
)
from fastsr.data.priors import (
    ColourClusterPrior,
    ModulePrior,
    NpyFolderPrior,
    PriorSource,
    open_prior_file,
    prior_from_spec,
    prior_picture,
)
from fastsr.inference import ImageScores, bicubic_upscale, mean_scores, save_model, score, super_resolve
from fastsr.models import SPSAGenerator, VGG19FeatureExtractor, VGGStyleDiscriminator
from fastsr.train import distributed
from fastsr.train.logs import save_grid
from fastsr.train.losses import PerceptualLoss, ragan_discriminator_loss, ragan_generator_loss
from fastsr.train.run import (
    Checkpointer,
    RunLogs,
    check_run_folder,
    check_validation_images,
    check_writable,
    due,
    finish,
    make_loader,
    open_run_folder,
    restore_run,
    rng_preserved,
    sample_folders,
    start_run,
    startup,
    write_json,
)

STAGES = ("psnr", "gan")
PRIORS = ("colour", "npy", "module")


@dataclass(frozen=True)
class SPSAGANConfig:
    stage: str = field(default="psnr", metadata={"help": "psnr (L1, no SPSA) or gan (from a psnr generator)"})
    # data
    train_dir: str = field(
        default="", metadata={"help": "folder of HR training images; empty: the embedded sample photographs"}
    )
    mix_dir: str = field(
        default="", metadata={"help": "a second HR folder mixed in (paper: DIV2K beside OST)"}
    )
    mix_ratio: float = field(
        default=10.0, metadata={"help": "train-dir : mix-dir sampling ratio (paper: OST:DIV2K = 10:1)"}
    )
    val_dir: str = field(
        default="",
        metadata={"help": "folder of HR validation images; empty: the embedded validation photographs"},
    )
    scale: int = field(default=4, metadata={"help": "upscaling factor: 2, 4 or 8"})
    crop: int = field(default=96, metadata={"help": "HR training crop side (multiple of scale)"})
    batch_size: int = field(default=16, metadata={"help": "crops per iteration (per process under torchrun)"})
    workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    # segmentation prior
    prior: str = field(
        default="colour",
        metadata={
            "help": "colour (k-means colour clusters, weak), npy (--prior-dir) or module (--prior-module)"
        },
    )
    prior_dir: str = field(
        default="", metadata={"help": "folder of <image stem>.npy (S, H, W) priors at HR size"}
    )
    prior_module: str = field(
        default="",
        metadata={
            "help": "the prior network mapping an image to S class scores: a Stage-GAN generator.pt (--map-mode onehot; weights, safe from anyone), or a TorchScript / torch.export program (needs --trust-prior-code)"
        },
    )
    trust_prior_code: bool = field(
        default=False,
        metadata={
            "help": "allow --prior-module to be a TorchScript / torch.export program: loading one runs its code, so pass this only for files whose author you trust (never taken from a resumed run: give it again with --resume)"
        },
    )
    prior_classes: int = field(
        default=8, metadata={"help": "S, classes of the prior (8: SFTGAN's OST classes)"}
    )
    # generator
    num_feat: int = field(default=64, metadata={"help": "nf: trunk channels"})
    num_block: int = field(default=23, metadata={"help": "RRDB / RRSB blocks in the trunk"})
    num_grow_ch: int = field(default=32, metadata={"help": "gc: channels of conv1 … conv4 in a dense block"})
    connections: str = field(
        default="",
        metadata={"help": "RRSB connection config (JSON from `fastsr.train prune`); empty: dense RRDB"},
    )
    qk_channels: int | None = field(
        default=None, metadata={"help": "SPSA query/key channels; default: max(1, num_feat // 8)"}
    )
    heads: int = field(default=1, metadata={"help": "SPSA attention heads"})
    global_skip: bool = field(
        default=False, metadata={"help": "add the bicubic-upscaled input to the output (learn the residual)"}
    )
    # optimisation
    iters: int = field(default=400_000, metadata={"help": "total iterations of this stage"})
    lr: float | None = field(
        default=None,
        metadata={"help": "learning rate; default: 2e-4 (psnr) or 1e-4 (gan, also the discriminator's)"},
    )
    lr_attention: float = field(
        default=5e-4, metadata={"help": "learning rate of the SPSA module (gan stage)"}
    )
    lr_halve_every: int | None = field(
        default=None,
        metadata={"help": "halve the learning rates every N iterations; default: 200k (psnr) or 100k (gan)"},
    )
    beta1: float = field(default=0.9, metadata={"help": "Adam β1"})
    beta2: float = field(default=0.99, metadata={"help": "Adam β2"})
    ema: float = field(
        default=0.999,
        metadata={"help": "EMA decay of the generator weights that are validated and exported; 0: no EMA"},
    )
    pixel_weight: float | None = field(
        default=None, metadata={"help": "L1 weight; default: 1 (psnr) or 1e-2 (gan)"}
    )
    perceptual_weight: float = field(
        default=1.0, metadata={"help": "perceptual (VGG19 conv5_4) loss weight (gan)"}
    )
    gan_weight: float = field(default=5e-3, metadata={"help": "relativistic GAN loss weight (gan)"})
    vgg_weights: str = field(
        default="", metadata={"help": "local torchvision vgg19 state dict (.pth) for the perceptual loss"}
    )
    random_vgg: bool = field(
        default=False,
        metadata={"help": "allow the gan stage without VGG weights (random VGG19: a weak perceptual loss)"},
    )
    pretrained: str = field(
        default="", metadata={"help": "gan stage: the psnr stage's generator.pt (or its run folder)"}
    )
    # run
    out: str = field(
        default="",
        metadata={
            "help": "run folder, new or empty (an existing run is refused: --resume it, or --overwrite it); empty: runs/spsagan-<stage>-<timestamp>"
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
        default=5000, metadata={"help": "validate (and write a sample grid) every N iterations"}
    )
    save_every: int = field(
        default=5000, metadata={"help": "write the training checkpoint every N iterations"}
    )
    log_every: int = field(default=100, metadata={"help": "log losses every N iterations"})
    seed: int = field(default=0, metadata={"help": "seeds initialisation, batches and the colour prior"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads for PyTorch; default: PyTorch's"}
    )

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}; got {self.stage!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}; got {self.prior!r}")
        if self.scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8; got {self.scale}")
        positive = (
            "crop",
            "batch_size",
            "num_feat",
            "num_block",
            "num_grow_ch",
            "heads",
            "iters",
            "prior_classes",
            "val_every",
            "save_every",
            "log_every",
            "qk_channels",
            "lr_halve_every",
            "threads",
        )
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1; got {getattr(self, name)}")
        for name in ("workers", "pixel_weight", "perceptual_weight", "gan_weight"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0; got {getattr(self, name)}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr}")
        if self.crop % self.scale:
            raise ValueError(f"crop must be a multiple of scale = {self.scale}; got {self.crop}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1); got {self.ema}")
        if self.mix_ratio <= 0:
            raise ValueError(f"mix_ratio must be > 0; got {self.mix_ratio}")
        if self.prior == "npy" and not self.prior_dir:
            raise ValueError("prior 'npy' needs --prior-dir (a folder of <image stem>.npy maps)")
        if self.stage == "gan" and self.crop < 32:
            raise ValueError(
                f"crop must be ≥ 32 in the gan stage (the discriminator halves it 5 times); got {self.crop}"
            )
        if self.prior == "module" and not self.prior_module:
            raise ValueError(
                "prior 'module' needs --prior-module (a Stage-GAN generator.pt, or a TorchScript / "
                "torch.export program with --trust-prior-code)"
            )

    # Older fastsr wrote these values for "the stage default" (None now); a resume reads them so.
    SENTINELS = {"lr": 0.0, "lr_halve_every": 0, "pixel_weight": -1.0, "qk_channels": 0, "threads": 0}

    def resolved(self) -> SPSAGANConfig:
        """This config with the stage defaults (the paper's) in place of None: the only place they
        are decided. The trainer resolves its config once, so its checkpoint and config.json say
        what ran. (``qk_channels`` None is the generator's own default, max(1, num_feat // 8).)"""
        psnr = self.stage == "psnr"
        return dataclasses.replace(
            self,
            lr=self.lr if self.lr is not None else (2e-4 if psnr else 1e-4),
            lr_halve_every=self.lr_halve_every
            if self.lr_halve_every is not None
            else (200_000 if psnr else 100_000),
            pixel_weight=self.pixel_weight if self.pixel_weight is not None else (1.0 if psnr else 1e-2),
        )


# ---------------------------------------------------------------------------------------------
# Pieces: data, prior, networks
# ---------------------------------------------------------------------------------------------


def build_data(cfg: SPSAGANConfig):
    """(training dataset, validation set) from the configured folders or the embedded samples."""
    # Only the gan stage reads priors (the psnr generator has no SPSA; its sample grids show the
    # validation images' maps, read one at a time). Every map that will be read is checked here,
    # at start-up: a missing file or a wrong shape is a ValueError naming it.
    prior_dir = cfg.prior_dir if cfg.prior == "npy" and cfg.stage == "gan" else None
    common = dict(scale=cfg.scale, num_classes=cfg.prior_classes, prior_dir=prior_dir)
    train = _from_folder(HRDataset, "--train-dir", cfg.train_dir, "train", crop=cfg.crop, **common)
    if cfg.mix_dir:
        second = _from_folder(HRDataset, "--mix-dir", cfg.mix_dir, "", crop=cfg.crop, **common)
        train = MixedDataset(train, second, cfg.mix_ratio)
    val = _from_folder(ValidationSet, "--val-dir", cfg.val_dir, "val", **common)
    if cfg.prior == "npy" and prior_dir is None:
        for item in val:  # headers only; NpyFolderPrior crops a map up to scale − 1 larger
            open_prior_file(
                Path(cfg.prior_dir) / f"{item['name']}.npy",
                cfg.prior_classes,
                tuple(item["hr"].shape[-2:]),
                max_extra=cfg.scale - 1,
            )
    return train, val


def _from_folder(dataset_cls, flag: str, folder: str, samples: str, **kwargs):
    """``dataset_cls`` over the images in ``folder`` (or the embedded sample photographs of split
    ``samples`` when it is empty); errors name the flag and the folder."""
    if not folder:
        return dataset_cls(sample_image_paths(samples), **kwargs)
    if not Path(folder).is_dir():
        raise ValueError(f"{flag} {folder} must be an existing folder of images")
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"{flag} {folder} holds no images (files ending .png, .jpg, .jpeg or .bmp)")
    try:
        return dataset_cls(paths, **kwargs)
    except ValueError as e:
        raise ValueError(f"{flag} {folder}: {e}") from None


def build_prior(cfg: SPSAGANConfig, train, saved_spec: dict | None) -> PriorSource:
    """The prior source: the checkpoint's when resuming, else the configured one. The colour prior
    is fitted on the bicubic-upscaled LR training images (never on HR). A program (TorchScript /
    torch.export), named by --prior-module or by the checkpoint, is loaded only with
    ``cfg.trust_prior_code``."""
    if saved_spec is not None:
        try:
            return prior_from_spec(saved_spec, trust_code=cfg.trust_prior_code)
        except (OSError, ValueError) as e:
            raise ValueError(f"resume: the prior saved in {cfg.resume} cannot be used: {e}") from None
    if cfg.prior == "npy":
        return NpyFolderPrior(cfg.prior_dir, num_classes=cfg.prior_classes)
    if cfg.prior == "module":
        return ModulePrior.load(
            cfg.prior_module, num_classes=cfg.prior_classes, trust_code=cfg.trust_prior_code
        )
    dataset = train.primary if isinstance(train, MixedDataset) else train
    mr = [imresize(lr, cfg.scale).clamp(0, 1) for lr in dataset.lr]  # (3, H, W) each
    return ColourClusterPrior.fit(mr, num_classes=cfg.prior_classes, seed=cfg.seed)


def saved_prior(state: dict, resume: str) -> dict:
    """The prior spec a training checkpoint holds (its "extra" entry "prior")."""
    extra = state.get("extra")
    spec = extra.get("prior") if isinstance(extra, dict) else None
    if not isinstance(spec, dict):
        raise ValueError(
            f"resume: {resume} holds no prior spec (its extra['prior'] must be a dict); got "
            f"{type(spec).__name__}"
        )
    return spec


def build_generator(cfg: SPSAGANConfig) -> SPSAGenerator:
    connections = None
    if cfg.connections:
        from fastsr.models.pruning import load_config

        connections = load_config(cfg.connections)["connections"]
    return SPSAGenerator(
        3,
        3,
        scale=cfg.scale,
        num_feat=cfg.num_feat,
        num_block=cfg.num_block,
        num_grow_ch=cfg.num_grow_ch,
        connections=connections,
        seg_channels=cfg.prior_classes,
        use_spsa=cfg.stage == "gan",
        qk_channels=cfg.qk_channels,
        heads=cfg.heads,
        global_skip=cfg.global_skip,
    )


def pretrained_path(path: str) -> Path:
    p = Path(path)
    return p / "generator.pt" if p.is_dir() else p


# Generator settings that change what the weights compute without changing their keys.
ARCHITECTURE_KEYS = ("scale", "num_feat", "num_block", "num_grow_ch", "connections", "global_skip")


def check_pretrained_architecture(path: Path, G: SPSAGenerator) -> None:
    """The psnr generator must be the gan stage's generator without SPSA: same scale, widths,
    connections and skip (a ``global_skip`` mismatch loads without a key error, then computes
    something else)."""
    from fastsr._io import load_state

    state = load_state(path, what="--pretrained generator")
    saved = state.get("config") if isinstance(state, dict) else None
    if not isinstance(saved, dict):
        return  # a bare state dict (e.g. BasicSR's): only its keys can be checked
    ours = G.config()
    for key in ARCHITECTURE_KEYS:
        if key in saved and saved[key] != ours[key]:
            raise ValueError(
                f"--pretrained {path} was trained with {key}={saved[key]!r}; this run has "
                f"{key}={ours[key]!r} (pass the same --{key.replace('_', '-')})"
            )


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model for parameters; buffers copied."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def validate(
    generator: nn.Module,
    prior_source: PriorSource | None,
    val: ValidationSet,
    scale: int,
    device: torch.device,
    grid_path: Path | None,
    grid_side: int = 160,
) -> list[ImageScores]:
    """PSNR / SSIM-Y of SR and bicubic on every validation image; a sample grid of centre crops."""
    generator.eval()
    scores, rows = [], []
    for item in val:
        lr, hr = item["lr"][None].to(device), item["hr"].to(device)  # (1, 3, h, w), (3, H, W)
        bicubic = bicubic_upscale(lr, scale)  # (1, 3, H, W)
        prior = None
        if generator.needs_prior or grid_path is not None:
            if "prior" in item:
                prior = item["prior"][None].to(device)
            elif prior_source is not None:
                prior = prior_source(bicubic, [item["name"]])  # (1, S, H, W)
        sr = super_resolve(
            generator, lr, scale, prior=prior if generator.needs_prior else None
        )  # (1, 3, H, W)
        scores.append(score(sr[0], bicubic[0], hr, name=item["name"], crop_border=scale))
        if grid_path is not None and len(rows) < 4:
            H, W = hr.shape[-2:]
            side = min(grid_side, H, W)
            t, l = (H - side) // 2, (W - side) // 2
            crop = lambda x: x[..., t : t + side, l : l + side]  # noqa: E731
            row = [crop(bicubic[0]), crop(sr[0]), crop(hr)]
            if prior is not None:
                row.append(crop(prior_picture(prior[0])))
            rows.append(row)
    generator.train()
    if grid_path is not None and rows:
        save_grid(grid_path, rows)
    return scores


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def run(cfg: SPSAGANConfig, given: Iterable[str] | None = None) -> dict:
    """Train one stage; returns the summary it writes to ``<out>/summary.json`` (rank 0).

    ``given``: the fields the user set, for the rules of ``cfg.resume``
    (:func:`fastsr.train.run.resume_or_start`); from Python, those that differ from their
    defaults."""
    with startup():
        d = distributed.setup(cfg.device)
    try:
        return _train(cfg, d, given)
    finally:
        distributed.teardown(d)


def run_inputs(cfg: SPSAGANConfig) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (flag, folder) and (flag, file) pairs a new run reads: its run folder keeps apart."""
    folders = [
        ("--train-dir", cfg.train_dir),
        ("--mix-dir", cfg.mix_dir),
        ("--val-dir", cfg.val_dir),
        ("--prior-dir", cfg.prior_dir if cfg.prior == "npy" else ""),
    ]
    folders += sample_folders(
        *(["train"] if not cfg.train_dir else []), *(["val"] if not cfg.val_dir else [])
    )
    files = [
        (
            "--pretrained",
            str(pretrained_path(cfg.pretrained)) if cfg.pretrained and cfg.stage == "gan" else "",
        ),
        ("--vgg-weights", cfg.vgg_weights),
        ("--connections", cfg.connections),
        ("--prior-module", cfg.prior_module if cfg.prior == "module" else ""),
    ]
    return folders, files


def check_prior_source(
    prior_source: PriorSource, val: ValidationSet, scale: int, device: torch.device
) -> None:
    """Run a prior network once on the first validation image, as validation will: a network that
    returns the wrong shape or fails on it is refused at start-up (RNG streams untouched)."""
    if not isinstance(prior_source, ModulePrior) or not len(val):
        return
    item = val[0]
    with rng_preserved(), torch.no_grad():
        mr = bicubic_upscale(item["lr"][None].to(device), scale)  # (1, 3, H, W)
        try:
            prior_source(mr, [item["name"]])
        except (RuntimeError, ValueError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"prior module {prior_source.path}: fails on validation image {item['name']!r} "
                f"({tuple(mr.shape)}): {first[:300]}"
            ) from None


def build_networks(
    cfg: SPSAGANConfig, device: torch.device, *, resumed: bool, warn: bool
) -> tuple[SPSAGenerator, nn.Module | None, PerceptualLoss | None]:
    """(generator, discriminator, perceptual loss); the last two in the gan stage only. A new gan
    run starts from the psnr stage's generator (``--pretrained``)."""
    G = build_generator(cfg).to(device)
    if cfg.stage == "psnr":
        return G, None, None
    if not resumed:
        if not cfg.pretrained:
            raise ValueError(
                "stage 'gan' starts from the psnr stage's generator: pass --pretrained "
                "<psnr run>/generator.pt"
            )
        check_pretrained_architecture(pretrained_path(cfg.pretrained), G)
        G.load_psnr_weights(pretrained_path(cfg.pretrained))
    D = VGGStyleDiscriminator(3, input_size=cfg.crop if cfg.crop % 32 == 0 else None).to(device)
    if cfg.perceptual_weight == 0:
        return G, D, None
    if not cfg.vgg_weights and not cfg.random_vgg:
        raise ValueError(
            "stage 'gan' needs VGG19 weights for the perceptual loss: pass --vgg-weights "
            "<torchvision vgg19 .pth> (nothing is downloaded), or --random-vgg to train "
            "with a randomly initialised VGG19 (a weak perceptual loss), or --perceptual-weight 0"
        )
    # A random VGG19 is not in the checkpoint: its weights come from the seed alone, so a resumed
    # run rebuilds the same ones.
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        if not cfg.vgg_weights:  # the flag was explicit: say it once, below, not per process
            warnings.simplefilter("ignore")
        torch.manual_seed(cfg.seed)
        perceptual = PerceptualLoss(VGG19FeatureExtractor(cfg.vgg_weights or None)).to(device)
    if not cfg.vgg_weights and warn:
        warnings.warn(
            "--random-vgg: the perceptual loss uses a randomly initialised VGG19, which measures "
            "little of what a pretrained one does",
            stacklevel=2,
        )
    return G, D, perceptual


def build_optimizers(cfg: SPSAGANConfig, G: SPSAGenerator, D: nn.Module | None) -> tuple[dict, dict]:
    """Adam for the generator (SPSA at its own rate) and the discriminator; StepLR halving."""
    groups = [{"params": [p for n, p in G.named_parameters() if not n.startswith("spsa.")], "lr": cfg.lr}]
    if G.use_spsa:
        groups.append({"params": list(G.spsa.parameters()), "lr": cfg.lr_attention})
    optimizers = {"generator": torch.optim.Adam(groups, betas=(cfg.beta1, cfg.beta2))}
    if D is not None:
        optimizers["discriminator"] = torch.optim.Adam(
            D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2)
        )
    schedulers = {
        k: torch.optim.lr_scheduler.StepLR(o, step_size=cfg.lr_halve_every, gamma=0.5)
        for k, o in optimizers.items()
    }
    return optimizers, schedulers


def psnr_step(
    G: nn.Module, optimizer: torch.optim.Optimizer, lr: Tensor, hr: Tensor, pixel_weight: float
) -> dict:
    """One psnr-stage step: w_pix·L1(G(lr), hr)."""
    sr = G(lr, None)  # (B, 3, H, W)
    loss = pixel_weight * F.l1_loss(sr, hr)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"l_pix": loss.item()}


def gan_step(
    G: nn.Module,
    D: nn.Module,
    perceptual: PerceptualLoss | None,
    optimizer: torch.optim.Optimizer,
    lr: Tensor,
    hr: Tensor,
    prior: Tensor | None,
    cfg: SPSAGANConfig,
) -> tuple[Tensor, dict]:
    """One generator step of the gan stage, the discriminator frozen:
    w_pix·L1(sr, hr) + w_per·L1(φ(sr), φ(hr)) + w_gan·RaGAN_G(D(hr), D(sr)). Returns (sr, logs).

    ``D`` is the unwrapped discriminator: this step updates none of its weights, so DDP has
    nothing to synchronise."""
    D.requires_grad_(False)
    sr = G(lr, prior)  # (B, 3, H, W)
    l_pix = cfg.pixel_weight * F.l1_loss(sr, hr)
    l_per = cfg.perceptual_weight * perceptual(sr, hr) if perceptual is not None else sr.new_zeros(())
    d_real = D(hr).detach()  # (B, 1)
    d_fake = D(sr)  # (B, 1)
    l_gan = cfg.gan_weight * ragan_generator_loss(d_real, d_fake)
    optimizer.zero_grad(set_to_none=True)
    (l_pix + l_per + l_gan).backward()
    optimizer.step()
    return sr, {"l_pix": l_pix.item(), "l_per": l_per.item(), "l_gan": l_gan.item()}


def discriminator_step(D: nn.Module, optimizer: torch.optim.Optimizer, hr: Tensor, sr: Tensor) -> dict:
    """One discriminator step: RaGAN_D(D(hr), D(sr.detach())). ``D``: the DDP-wrapped one."""
    D.requires_grad_(True)
    d_real = D(hr)  # (B, 1)
    d_fake = D(sr.detach())  # (B, 1)
    l_d = ragan_discriminator_loss(d_real, d_fake)
    optimizer.zero_grad(set_to_none=True)
    l_d.backward()
    optimizer.step()
    return {"l_d": l_d.item(), "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}


def _train(cfg: SPSAGANConfig, d: distributed.Dist, given: Iterable[str] | None) -> dict:
    with startup():  # every condition that could fail later is checked before iteration 1
        cfg, resumed, out = start_run(cfg, given, "spsagan-{stage}", run_inputs)
        cfg, device = cfg.resolved(), d.device
        train, val = build_data(cfg)
        check_validation_images(val, cfg.scale, f"--val-dir {cfg.val_dir}" if cfg.val_dir else "")
        prior_source = build_prior(cfg, train, saved_prior(resumed, cfg.resume) if resumed else None).to(
            device
        )
        G, D, perceptual = build_networks(cfg, device, resumed=resumed is not None, warn=d.is_main)
        G_ema = copy.deepcopy(G).requires_grad_(False) if cfg.ema else G
        models = {
            "generator": G,
            **({"generator_ema": G_ema} if cfg.ema else {}),
            **({"discriminator": D} if D is not None else {}),
        }
        optimizers, schedulers = build_optimizers(cfg, G, D)
        state = dict(models=models, optimizers=optimizers, schedulers=schedulers)  # what a checkpoint holds
        start, extra = 0, {"prior": prior_source.spec()}
        if resumed is not None:
            start, extra = restore_run(resumed, cfg.resume, **state, rank=d.rank, world_size=d.world_size)
        check_prior_source(prior_source, val, cfg.scale, device)
        _, loader = make_loader(train, cfg.batch_size, seed=cfg.seed, d=d, start=start, workers=cfg.workers)

        def next_batch() -> tuple[Tensor, Tensor, Tensor | None]:
            batch = next(loader)
            lr, hr = batch["lr"].to(device), batch["hr"].to(device)  # (B, 3, h, w), (B, 3, H, W)
            prior = None
            if G.use_spsa:
                prior = (
                    batch["prior"].to(device)
                    if "prior" in batch
                    else prior_source(bicubic_upscale(lr, cfg.scale), batch["name"])
                )  # (B, S, H, W)
            return lr, hr, prior

        lr, hr, prior = next_batch()
        if G.use_spsa and not bool(G.spsa.alpha_initialized):
            with torch.no_grad():  # SPSA's α comes from the first batch; DDP then broadcasts rank 0's
                G(lr, prior)
                G_ema.load_state_dict(G.state_dict())
        G_train, D_train = distributed.wrap(G, d), (distributed.wrap(D, d) if D is not None else None)
        open_run_folder(
            out,
            d,
            overwrite=cfg.overwrite,
            config=cfg,
            resumed_at=start if resumed is not None else None,
            banner=f"spsagan {cfg.stage} stage → {out}  ({device}, {torch.get_num_threads()} threads, "
            f"{d.world_size} process{'es' if d.enabled else ''}, {len(train)} training images, "
            f"{len(val)} validation images, prior: {prior_source.spec()['kind']})",
        )
        logs = RunLogs(
            out,
            d,
            start=start,
            total=cfg.iters,
            resumed=resumed is not None,
            desc=f"spsagan {cfg.stage}",
            every=cfg.log_every,
        )

    def run_validation(iteration: int) -> dict[str, float]:
        scores = validate(
            G_ema, prior_source, val, cfg.scale, device, out / "samples" / f"iter_{iteration:07d}.png"
        )
        means = mean_scores(scores)
        logs.val(
            iteration,
            means,
            f"  val @ {iteration}: PSNR-Y {means['psnr']:.2f} dB (bicubic "
            f"{means['bicubic_psnr']:.2f}), SSIM-Y {means['ssim']:.4f} (bicubic {means['bicubic_ssim']:.4f})",
        )
        return means

    checkpointer = Checkpointer(
        out,
        d,
        cfg,
        **state,
        extra=extra,
        validate=run_validation,
        export=lambda path: save_model(path, G_ema, prior_source if G.use_spsa else None),
    )
    G_train.train()
    for iteration in range(start + 1, cfg.iters + 1):
        if iteration > start + 1:
            lr, hr, prior = next_batch()
        if cfg.stage == "psnr":
            losses = psnr_step(G_train, optimizers["generator"], lr, hr, cfg.pixel_weight)
        else:
            sr, losses = gan_step(G_train, D, perceptual, optimizers["generator"], lr, hr, prior, cfg)
            losses |= discriminator_step(D_train, optimizers["discriminator"], hr, sr)
        if cfg.ema:
            update_ema(G_ema, G, cfg.ema)
        lr_used = schedulers["generator"].get_last_lr()[0]  # this iteration's, before the step
        for s in schedulers.values():
            s.step()
        logs.step(iteration, losses)
        if due(iteration, cfg.log_every, cfg.iters):
            logs.train(iteration, distributed.mean_over_ranks(losses, d), lr_used)
        checkpointer.end_of_iteration(iteration)  # the checkpoint, then the validation
    result = finish(cfg, d, logs, checkpointer, start=start)
    if result:
        print_summary(result, cfg, out, start)
    return result


def print_summary(result: dict, cfg: SPSAGANConfig, out: Path, start: int) -> None:
    v = result["val"]
    print(
        f"spsagan {cfg.stage}: {cfg.iters - start} iterations in {result['seconds']:.0f} s ({result['its']:.2f} "
        f"it/s); validation PSNR-Y {v['psnr']:.2f} dB vs bicubic {v['bicubic_psnr']:.2f} dB, "
        f"SSIM-Y {v['ssim']:.4f} vs {v['bicubic_ssim']:.4f}\n  wrote {out}/generator.pt, "
        "checkpoints/last.pt, train.csv, val.csv, samples/, summary.json",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# The main job: `python -m fastsr.train` with no arguments
# ---------------------------------------------------------------------------------------------


def demo_configs(out: Path) -> tuple[SPSAGANConfig, SPSAGANConfig]:
    """The main job's two stages: a small generator (nf 32, 2 RRDBs, bicubic skip) on 64² crops of
    the embedded photographs, sized to finish both stages in under 10 minutes on 2 CPU cores:
    3000 psnr iterations (batch 8, lr 5e-4), then 300 gan iterations (batch 4, the paper's rates).

    The gan stage runs with a random VGG19 (``random_vgg``): nothing is downloaded, so there are
    no pretrained weights to load; pass ``--vgg-weights`` to a real run."""
    common = dict(num_feat=32, num_block=2, num_grow_ch=16, crop=64, global_skip=True, log_every=50, seed=0)
    psnr = SPSAGANConfig(
        stage="psnr",
        iters=3000,
        batch_size=8,
        lr=5e-4,
        val_every=1000,
        save_every=1000,
        out=str(out / "psnr"),
        **common,
    )
    # VGG19 to conv5_4 and the discriminator make a gan iteration ~20× a psnr one on the CPU.
    gan = SPSAGANConfig(
        stage="gan",
        iters=300,
        batch_size=4,
        val_every=150,
        save_every=150,
        random_vgg=True,
        pretrained=str(out / "psnr" / "generator.pt"),
        out=str(out / "gan"),
        **common,
    )
    return psnr, gan


def command_line(cfg: SPSAGANConfig) -> str:
    """The ``python -m fastsr.train spsagan`` command equivalent to ``cfg``."""
    default = SPSAGANConfig()
    flags = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value != getattr(default, f.name):
            flag = "--" + f.name.replace("_", "-")
            flags.append(
                flag if value is True else f"--no-{flag[2:]}" if value is False else f"{flag} {value}"
            )
    return "python -m fastsr.train spsagan " + " ".join(flags)


def run_demo(out: str = "", *, overwrite: bool = False) -> dict:
    """Train the main job's psnr then gan stage into ``out`` (default runs/spsagan-demo-<timestamp>)
    and print validation PSNR-Y / SSIM-Y of both stages against bicubic.

    An existing non-empty ``out`` is refused before anything trains, unless ``overwrite`` (then
    each stage deletes its earlier run's artefacts in ``out``/psnr and ``out``/gan, as
    ``--overwrite`` does)."""
    root = Path(out or f"runs/spsagan-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    with startup():
        check_run_folder(
            root,
            artefacts=("summary.json",),
            overwrite=overwrite,
            folders=sample_folders("train", "val"),
            resumable=False,
        )
        check_writable(root)
    t0 = time.perf_counter()
    results = {}
    for cfg in demo_configs(root):
        cfg = dataclasses.replace(cfg, overwrite=overwrite)
        print(f"\n$ {command_line(cfg)}", flush=True)
        results[cfg.stage] = run(cfg)
    seconds = time.perf_counter() - t0
    p, g = results["psnr"]["val"], results["gan"]["val"]
    both = {"seconds": seconds, "psnr_stage": results["psnr"], "gan_stage": results["gan"]}
    write_json(root / "summary.json", both)
    print(
        f"\nmain job done in {seconds / 60:.1f} min → {root}\n"
        f"  validation ({len(sample_image_paths('val'))} held-out photographs, ×4, Y channel, border 4):\n"
        f"    {'':18s} {'PSNR-Y':>8s} {'SSIM-Y':>8s} {'it/s':>6s}\n"
        f"    {'bicubic':18s} {p['bicubic_psnr']:8.2f} {p['bicubic_ssim']:8.4f}\n"
        f"    {'SR, psnr stage':18s} {p['psnr']:8.2f} {p['ssim']:8.4f} {results['psnr']['its']:6.2f}\n"
        f"    {'SR, gan stage':18s} {g['psnr']:8.2f} {g['ssim']:8.4f} {results['gan']['its']:6.2f}\n"
        f"  upscale with: python -m fastsr.upscale {root}/gan/generator.pt IMAGE -o OUT",
        flush=True,
    )
    return both
