"""The pruning stage of SPSAGAN (Zhang, Zheng & Hu 2020, §3.2), as one visible script.

    1. train an RRDBNet with L1 (Adam 2e-4) on random crops of the embedded sample photographs
       (LR by MATLAB-compatible bicubic);
       over its last K iterations, record eq. 8's dissimilarities on every dense block
    2. 2-means rule per conv → connection config (JSON) in the run folder
    3. train the RRSB net (same widths, pruned connections) from scratch, same iterations and crops
    4. save both checkpoints; print it/s, final L1, kept connections, validation PSNR-Y vs bicubic
       (the held-out photographs, BasicSR's conventions); val.png shows centre crops of them:
       bicubic | RRDB | RRSB | HR

    python -m fastsr.train prune --iters 1000 --out runs/prune-demo

The defaults are a smoke-sized run (a few minutes on 2 CPU cores), not a converged one: the
paper prunes an RRDB trained to convergence on DIV2K + Flickr2K.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastsr.data import HRDataset, ValidationSet, sample_image_paths
from fastsr.inference import ImageScores, bicubic_upscale, mean_scores, pick_device, score, super_resolve
from fastsr.models.pruning import DissimilarityRecorder, connection_config, save_config
from fastsr.train.distributed import Dist
from fastsr.train.logs import save_grid
from fastsr.train.run import (
    check_run_folder,
    check_validation_images,
    check_writable,
    folders_of,
    make_loader,
    open_run_folder,
    startup,
    write_json,
)

VAL_CROP = 128  # side of the centre crops shown in val.png
# What the stage writes in its run folder: what --overwrite deletes, and nothing else.
PRUNE_ARTEFACTS = ("rrdb.pt", "rrsb.pt", "rrsb.json", "val.png", "summary.json")


@dataclass(frozen=True)
class PruneConfig:
    iters: int = field(default=1000, metadata={"help": "training iterations of each network"})
    last_k: int = field(
        default=100, metadata={"help": "DS is averaged over the last K iterations of the RRDB run"}
    )
    num_feat: int = field(default=32, metadata={"help": "nf: channels between dense blocks"})
    num_grow_ch: int = field(default=16, metadata={"help": "gc: channels of conv1 … conv4 in a dense block"})
    num_block: int = field(default=2, metadata={"help": "RRDB / RRSB blocks in the body"})
    scale: int = field(default=4, metadata={"help": "upscaling factor"})
    crop: int = field(default=64, metadata={"help": "HR training crop side (multiple of scale)"})
    batch_size: int = field(default=4, metadata={"help": "crops per iteration"})
    lr: float = field(default=2e-4, metadata={"help": "Adam learning rate"})
    threshold: float = field(
        default=0.05, metadata={"help": "relative k-means gap under which nothing is pruned"}
    )
    log_every: int = field(default=100, metadata={"help": "print the loss every N iterations"})
    out: str = field(
        default="",
        metadata={
            "help": "run folder, new or empty (an existing one is refused unless --overwrite); empty: runs/prune-<timestamp>"
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "a new run into --out that holds an earlier prune run: delete that run's own files (rrdb.pt, rrsb.pt, rrsb.json, val.png, summary.json) once start-up has passed; other files are kept"
        },
    )
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
        if self.crop > 300:
            raise ValueError(f"crop must be ≤ 300 (the smallest sample photograph's side); got {self.crop}")


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def train_l1(
    net: nn.Module,
    cfg: PruneConfig,
    data: HRDataset,
    device: torch.device,
    name: str,
    recorder: DissimilarityRecorder | None = None,
) -> dict:
    """L1 training for cfg.iters iterations; the recorder (if any) is attached for the last K.

    Returns {"losses": [...], "its": iterations/s before the recorder was attached}."""
    # Batches are a function of (seed, iteration): RRDB and RRSB see the same crops.
    _, batches = make_loader(data, cfg.batch_size, seed=cfg.seed, d=Dist(rank=0, world_size=1, device=device))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    record_from = cfg.iters - recorder.last_k if recorder is not None else cfg.iters
    losses = []
    net.train()
    t0 = time.perf_counter()
    for it in range(cfg.iters):
        if it == record_from:
            its = it / (time.perf_counter() - t0) if it else float("nan")
            recorder.attach()  # from here on every forward also records DS (recomputes each block)
        batch = next(batches)
        hr, lr = batch["hr"].to(device), batch["lr"].to(device)  # (B, 3, crop, crop), (B, 3, crop/s, crop/s)
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


def validation_scores(
    net: nn.Module | None, val: ValidationSet, scale: int, device: torch.device, crops: list[Tensor]
) -> list[ImageScores]:
    """Scores of ``net`` on every validation image (bicubic's too); appends centre crops of each
    SR output (or of bicubic and HR when ``net`` is None) to ``crops`` for the picture."""
    scores = []
    for item in val:
        lr, hr = item["lr"][None].to(device), item["hr"].to(device)  # (1, 3, h, w), (3, H, W)
        bicubic = bicubic_upscale(lr, scale)[0]  # (3, H, W)
        if net is not None:
            net.eval()
            sr = super_resolve(lambda x, _: net(x), lr, scale)[0]  # (3, H, W)
            net.train()
        else:
            sr = bicubic
        scores.append(score(sr, bicubic, hr, name=item["name"], crop_border=scale))
        side = min(VAL_CROP, *hr.shape[-2:])
        t, l = (hr.shape[-2] - side) // 2, (hr.shape[-1] - side) // 2
        crops.append(
            torch.stack(
                [x[:, t : t + side, l : l + side] for x in ([sr] if net is not None else [bicubic, hr])]
            )
        )
    return scores


def run(cfg: PruneConfig) -> dict:
    """The whole stage; returns the summary it prints and writes to ``<out>/summary.json``."""
    from fastsr.models.rrdbnet import RRDBNet

    # Start-up: every condition that could fail later is checked before training.
    with startup():
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = pick_device(cfg.device)
        out = Path(cfg.out or f"runs/prune-{time.strftime('%Y%m%d-%H%M%S')}")
        train_paths, val_paths = sample_image_paths("train"), sample_image_paths("val")
        check_run_folder(
            out,
            artefacts=PRUNE_ARTEFACTS,
            overwrite=cfg.overwrite,
            resumable=False,
            folders=folders_of(train_paths + val_paths, "embedded sample photographs'"),
        )
        check_writable(out)
        data = HRDataset(train_paths, scale=cfg.scale, crop=cfg.crop)
        val = ValidationSet(val_paths, scale=cfg.scale)
        check_validation_images(val, cfg.scale)
        open_run_folder(
            out,
            Dist(rank=0, world_size=1, device=device),
            overwrite=cfg.overwrite,
            artefacts=PRUNE_ARTEFACTS,
            banner=f"prune stage → {out}  ({device}, {torch.get_num_threads()} threads)\n  {cfg}",
        )
    t_start = time.perf_counter()

    # 1. RRDB, with DS recorded over its last K iterations.
    torch.manual_seed(cfg.seed)
    widths = dict(num_feat=cfg.num_feat, num_grow_ch=cfg.num_grow_ch, num_block=cfg.num_block)
    rrdb = RRDBNet(3, 3, scale=cfg.scale, **widths).to(device)
    recorder = DissimilarityRecorder(rrdb, cfg.last_k)
    rrdb_log = train_l1(rrdb, cfg, data, device, "RRDB", recorder)
    rrdb.save(out / "rrdb.pt")

    # 2. The rule → connection config.
    rrsb_cfg = connection_config(
        recorder.average(), num_feat=cfg.num_feat, num_grow_ch=cfg.num_grow_ch, threshold=cfg.threshold
    )
    save_config(out / "rrsb.json", rrsb_cfg)

    # 3. RRSB from scratch: same seed, so the same initialisation stream and the same crops.
    torch.manual_seed(cfg.seed)
    rrsb = RRDBNet(3, 3, scale=cfg.scale, connections=rrsb_cfg["connections"], **widths).to(device)
    rrsb_log = train_l1(rrsb, cfg, data, device, "RRSB")
    rrsb.save(out / "rrsb.pt")

    # 4. Validation, summary.json, val.png.
    result = summarise(
        cfg,
        device,
        val,
        rrsb_cfg,
        {"rrdb": (rrdb, rrdb_log), "rrsb": (rrsb, rrsb_log)},
        out,
        seconds=time.perf_counter() - t_start,
    )
    print_summary(result, cfg, out, len(val))
    return result


def summarise(
    cfg: PruneConfig,
    device: torch.device,
    val: ValidationSet,
    rrsb_cfg: dict,
    nets: dict,
    out: Path,
    *,
    seconds: float,
) -> dict:
    """Validate bicubic and both nets (``nets``: name → (net, training log)); write summary.json
    and val.png (bicubic | RRDB | RRSB | HR centre crops); return the summary."""
    tail = max(1, cfg.iters // 10)
    kept = sum(len(layer) for block in rrsb_cfg["connections"] for rdb in block for layer in rdb)
    total = cfg.num_block * 3 * sum(range(5))  # candidates x_1 … x_{l−1} per conv; x_0 not counted
    result = {
        "config": dataclasses.asdict(cfg),
        "device": str(device),
        "seconds": seconds,
        "kept_connections": kept,
        "total_connections": total,
    }
    reference: list[Tensor] = []  # per validation image: (2, 3, c, c) bicubic and HR centre crops
    bicubic_scores = validation_scores(None, val, cfg.scale, device, reference)
    result["bicubic"] = {"val_psnr_y": mean_scores(bicubic_scores)["bicubic_psnr"]}
    columns = []
    for name, (net, log) in nets.items():
        columns.append([])
        result[name] = {
            "its": log["its"],
            "final_l1": float(np.mean(log["losses"][-tail:])),
            "val_psnr_y": mean_scores(validation_scores(net, val, cfg.scale, device, columns[-1]))["psnr"],
            "params": sum(p.numel() for p in net.parameters()),
        }
    save_grid(out / "val.png", [[ref[0], a[0], b[0], ref[1]] for ref, a, b in zip(reference, *columns)])
    write_json(out / "summary.json", result)
    return result


def print_summary(result: dict, cfg: PruneConfig, out: Path, images: int) -> None:
    tail = max(1, cfg.iters // 10)
    print(
        f"\nsummary ({cfg.iters} iterations each, {result['seconds']:.0f} s in all; final L1 = mean of the "
        f"last {tail} iterations; PSNR on Y, {cfg.scale}-pixel border cropped, {images} held-out "
        f"photographs)"
    )
    print(f"  {'':8s} {'it/s':>7s} {'final L1':>9s} {'PSNR-Y':>9s} {'params':>8s}")
    print(f"  {'bicubic':8s} {'':>7s} {'':>9s} {result['bicubic']['val_psnr_y']:9.2f}")
    for name in ("rrdb", "rrsb"):
        s = result[name]
        print(
            f"  {name.upper():8s} {s['its']:7.2f} {s['final_l1']:9.4f} {s['val_psnr_y']:9.2f} {s['params']:8d}"
        )
    print(
        f"  kept connections: {result['kept_connections']} / {result['total_connections']} (x_1 … x_{{l−1}} "
        "into conv l; x_0 always kept, not counted)"
    )
    print(
        f"  wrote {out}/rrdb.pt, rrsb.json, rrsb.pt, summary.json, val.png (bicubic | RRDB | RRSB | HR)",
        flush=True,
    )
