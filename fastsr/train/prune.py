"""The pruning stage of SPSAGAN (paper 000, §3.2), as one visible script.

    1. train an RRDBNet with L1 (Adam 2e-4) on random crops of scikit-learn's sample images;
       over its last K iterations, record eq. 8's dissimilarities on every dense block
    2. 2-means rule per conv → connection config (JSON) in the run folder
    3. train the RRSB net (same widths, pruned connections) from scratch, same iterations and crops
    4. save both checkpoints; print it/s, final L1, kept connections, validation PSNR vs bicubic;
       val.png shows the held-out crops: bicubic | RRDB | RRSB | HR

    python -m fastsr.train prune --iters 1000 --out runs/prune-demo

The defaults are a smoke-sized run (a few minutes on 2 CPU cores), not a converged one: the
paper prunes an RRDB trained to convergence on DIV2K + Flickr2K.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastsr._io import atomic_write
from fastsr.prune import DissimilarityRecorder, connection_config, save_config

VAL_SIZE = 128  # the right-most VAL_SIZE columns of each sample image are held out for validation


@dataclass(frozen=True)
class PruneConfig:
    iters: int = field(default=1000, metadata={"help": "training iterations of each network"})
    last_k: int = field(default=100, metadata={"help": "DS is averaged over the last K iterations of the RRDB run"})
    num_feat: int = field(default=32, metadata={"help": "nf: channels between dense blocks"})
    num_grow_ch: int = field(default=16, metadata={"help": "gc: channels of conv1 … conv4 in a dense block"})
    num_block: int = field(default=2, metadata={"help": "RRDB / RRSB blocks in the body"})
    scale: int = field(default=4, metadata={"help": "upscaling factor"})
    crop: int = field(default=64, metadata={"help": "HR training crop side (multiple of scale)"})
    batch_size: int = field(default=4, metadata={"help": "crops per iteration"})
    lr: float = field(default=2e-4, metadata={"help": "Adam learning rate"})
    threshold: float = field(default=0.05, metadata={"help": "relative k-means gap under which nothing is pruned"})
    log_every: int = field(default=100, metadata={"help": "print the loss every N iterations"})
    out: str = field(default="", metadata={"help": "run folder; empty: runs/prune-<timestamp>"})
    seed: int = field(default=0, metadata={"help": "seeds initialisation and crops (the same for both nets)"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    # One intra-op thread by default: this small net gains little from more, and on a shared CPU
    # OpenMP threads that wait for each other cost far more (on a busy 2-core machine a training
    # step of the default net took ~9× longer with 2 threads than with 1).
    threads: int = field(default=1, metadata={"help": "CPU threads for PyTorch; 0: PyTorch's default"})

    def __post_init__(self):
        if self.threads < 0:
            raise ValueError(f"threads must be ≥ 0; got {self.threads}")
        positive = ("iters", "last_k", "num_feat", "num_grow_ch", "num_block", "scale", "crop", "batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1; got {getattr(self, name)}")
        if self.last_k > self.iters:
            raise ValueError(f"last_k must be ≤ iters = {self.iters}; got {self.last_k}")
        if self.crop % self.scale:
            raise ValueError(f"crop must be a multiple of scale = {self.scale}; got {self.crop}")
        if self.crop > 427 or VAL_SIZE % self.scale:
            raise ValueError(f"crop must be ≤ 427 (sample image height) and scale divide {VAL_SIZE}")


# ---------------------------------------------------------------------------------------------
# Data: scikit-learn's two sample images (china.jpg, flower.jpg; 427 × 640, shipped, no download)
# ---------------------------------------------------------------------------------------------


def sample_images() -> tuple[list[Tensor], Tensor]:
    """Training images (3, 427, 640 − VAL_SIZE) in [0, 1] and the validation crops
    (2, 3, VAL_SIZE, VAL_SIZE): a centred square of each image's held-out right strip."""
    from sklearn.datasets import load_sample_images

    train, val = [], []
    for img in load_sample_images().images:  # (H, W, 3) uint8
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255  # (3, H, W)
        h, w = x.shape[1:]
        top = (h - VAL_SIZE) // 2
        train.append(x[:, :, : w - VAL_SIZE])
        val.append(x[:, top : top + VAL_SIZE, w - VAL_SIZE :])
    return train, torch.stack(val)


def random_crops(images: list[Tensor], batch: int, size: int, gen: torch.Generator) -> Tensor:
    """(batch, 3, size, size) crops at random images and positions."""
    crops = []
    for _ in range(batch):
        img = images[int(torch.randint(len(images), (), generator=gen))]
        top = int(torch.randint(img.shape[1] - size + 1, (), generator=gen))
        left = int(torch.randint(img.shape[2] - size + 1, (), generator=gen))
        crops.append(img[:, top : top + size, left : left + size])
    return torch.stack(crops)


def downsample(hr: Tensor, scale: int) -> Tensor:
    """(B, 3, H, W) → (B, 3, H/scale, W/scale) by antialiased bicubic.

    PyTorch's bicubic (a = −0.75), not MATLAB's imresize (a = −0.5) that published tables use:
    the MATLAB-compatible resize comes with fastsr.data."""
    h, w = hr.shape[-2:]
    lr = F.interpolate(hr, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    return lr.clamp(0, 1)


def psnr_rgb(sr: Tensor, hr: Tensor, border: int) -> float:
    """Mean PSNR (dB) over the batch, on RGB in [0, 1], ``border`` pixels cropped per side.

    Plain RGB PSNR for this smoke stage; the Y-channel metric of published tables is
    fastsr.metrics' job."""
    if border:
        sr, hr = sr[..., border:-border, border:-border], hr[..., border:-border, border:-border]
    mse = (sr.clamp(0, 1) - hr).pow(2).flatten(1).mean(1)  # (B,)
    return float((10 * torch.log10(1 / mse)).mean())


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def train_l1(net: nn.Module, cfg: PruneConfig, images: list[Tensor], device: torch.device, name: str,
             recorder: DissimilarityRecorder | None = None) -> dict:
    """L1 training for cfg.iters iterations; the recorder (if any) is attached for the last K.

    Returns {"losses": [...], "its": iterations/s before the recorder was attached}."""
    gen = torch.Generator().manual_seed(cfg.seed)  # the same crops for RRDB and RRSB
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    record_from = cfg.iters - recorder.last_k if recorder is not None else cfg.iters
    losses = []
    net.train()
    t0 = time.perf_counter()
    for it in range(cfg.iters):
        if it == record_from:
            its = it / (time.perf_counter() - t0) if it else float("nan")
            recorder.attach()  # from here on every forward also records DS (recomputes each block)
        hr = random_crops(images, cfg.batch_size, cfg.crop, gen).to(device)  # (B, 3, crop, crop)
        lr = downsample(hr, cfg.scale)  # (B, 3, crop/s, crop/s)
        sr = net(lr)  # (B, 3, crop, crop)
        loss = F.l1_loss(sr, hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (it + 1) % cfg.log_every == 0 or it + 1 == cfg.iters:
            rate = (it + 1) / (time.perf_counter() - t0)
            print(f"[{name}] iter {it + 1:5d}/{cfg.iters}  L1 {loss.item():.4f}  {rate:.2f} it/s", flush=True)
    if recorder is None:
        its = cfg.iters / (time.perf_counter() - t0)
    else:
        recorder.detach()
    return {"losses": losses, "its": its}


@torch.no_grad()
def super_resolve(net: nn.Module, val_hr: Tensor, scale: int) -> Tensor:
    """(N, 3, VAL_SIZE, VAL_SIZE) SR of the downsampled validation crops, clamped to [0, 1]."""
    net.eval()
    sr = net(downsample(val_hr, scale))
    net.train()
    return sr.clamp(0, 1)


def bicubic_upsample(val_hr: Tensor, scale: int) -> Tensor:
    lr = downsample(val_hr, scale)
    return F.interpolate(lr, size=val_hr.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)


def save_image_rows(path: Path, rows: list[Tensor]) -> None:
    """One PNG: per validation crop a row, per entry of ``rows`` ((N, 3, H, W) each) a column."""
    from PIL import Image

    grid = torch.cat([torch.cat(list(images), dim=1) for images in rows], dim=2)  # (3, N·H, len·W)
    pixels = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    atomic_write(path, lambda f: Image.fromarray(pixels).save(f, format="PNG"))


def _write_json(path: Path, obj) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def run(cfg: PruneConfig) -> dict:
    """The whole stage; returns the summary it prints and writes to ``<out>/summary.json``."""
    from fastsr.layers.rrdb import RRDBNet

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(cfg.out or f"runs/prune-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    images, val_hr = sample_images()
    val_hr = val_hr.to(device)
    images = [img.to(device) for img in images]
    print(f"prune stage → {out}  ({device}, {torch.get_num_threads()} threads)\n  {cfg}", flush=True)
    t_start = time.perf_counter()

    # 1. RRDB, with DS recorded over its last K iterations.
    torch.manual_seed(cfg.seed)
    widths = dict(num_feat=cfg.num_feat, num_grow_ch=cfg.num_grow_ch, num_block=cfg.num_block)
    rrdb = RRDBNet(3, 3, scale=cfg.scale, **widths).to(device)
    recorder = DissimilarityRecorder(rrdb, cfg.last_k)
    rrdb_log = train_l1(rrdb, cfg, images, device, "RRDB", recorder)
    rrdb.save(out / "rrdb.pt")

    # 2. The rule → connection config.
    rrsb_cfg = connection_config(recorder.average(), num_feat=cfg.num_feat, num_grow_ch=cfg.num_grow_ch,
                                 threshold=cfg.threshold)
    save_config(out / "rrsb.json", rrsb_cfg)

    # 3. RRSB from scratch: same seed, so the same initialisation stream and the same crops.
    torch.manual_seed(cfg.seed)
    rrsb = RRDBNet(3, 3, scale=cfg.scale, connections=rrsb_cfg["connections"], **widths).to(device)
    rrsb_log = train_l1(rrsb, cfg, images, device, "RRSB")
    rrsb.save(out / "rrsb.pt")

    # 4. Summary.
    tail = max(1, cfg.iters // 10)
    kept = sum(len(layer) for block in rrsb_cfg["connections"] for rdb in block for layer in rdb)
    total = cfg.num_block * 3 * sum(range(5))  # candidates x_1 … x_{l−1} per conv; x_0 not counted
    summary = {
        "config": dataclasses.asdict(cfg),
        "device": str(device),
        "seconds": time.perf_counter() - t_start,
        "kept_connections": kept,
        "total_connections": total,
    }
    bicubic = bicubic_upsample(val_hr, cfg.scale)
    summary["bicubic"] = {"val_psnr_rgb": psnr_rgb(bicubic, val_hr, border=cfg.scale)}
    images = [bicubic]
    for name, net, log in (("rrdb", rrdb, rrdb_log), ("rrsb", rrsb, rrsb_log)):
        images.append(super_resolve(net, val_hr, cfg.scale))
        summary[name] = {
            "its": log["its"],
            "final_l1": float(np.mean(log["losses"][-tail:])),
            "val_psnr_rgb": psnr_rgb(images[-1], val_hr, border=cfg.scale),
            "params": sum(p.numel() for p in net.parameters()),
        }
    save_image_rows(out / "val.png", images + [val_hr])
    _write_json(out / "summary.json", summary)

    print(f"\nsummary ({cfg.iters} iterations each, {summary['seconds']:.0f} s in all; final L1 = mean of the "
          f"last {tail} iterations; PSNR on RGB, {cfg.scale}-pixel border cropped, {len(val_hr)} held-out "
          f"{VAL_SIZE}² crops)")
    print(f"  {'':8s} {'it/s':>7s} {'final L1':>9s} {'val PSNR':>9s} {'params':>8s}")
    print(f"  {'bicubic':8s} {'':>7s} {'':>9s} {summary['bicubic']['val_psnr_rgb']:9.2f}")
    for name in ("rrdb", "rrsb"):
        s = summary[name]
        print(f"  {name.upper():8s} {s['its']:7.2f} {s['final_l1']:9.4f} {s['val_psnr_rgb']:9.2f} {s['params']:8d}")
    print(f"  kept connections: {kept} / {total} (x_1 … x_{{l−1}} into conv l; x_0 always kept, not counted)")
    print(f"  wrote {out}/rrdb.pt, rrsb.json, rrsb.pt, summary.json, val.png (bicubic | RRDB | RRSB | HR)",
          flush=True)
    return summary
