"""Pictures of what a model does inside.

    python -m fastsr.visualize attention runs/gan/generator.pt photo.png --pixel 120,64 -o att.png

``attention``: the SPSA attention of one query pixel, as the paper's Fig. 6. IMAGE is an HR image
(mod-cropped to the scale, then downscaled by MATLAB bicubic and rounded to 8 bits to make the LR
input, as :mod:`fastsr.eval` does) unless ``--lr`` says it is the LR input itself. ``--pixel X,Y``
is in IMAGE's pixel coordinates (X the column, Y the row); the query is the LR feature position
holding it, (Y // s, X // s) for an HR image. One PNG, five panels at HR size (s·h × s·w) side by
side, under a label row:

    image        the HR image (with --lr: the LR image enlarged ×s, nearest)
    prior        the prior's argmax class per pixel (the trainer's sample-grid colours)
    feature      β_fea, the feature-attention row of the query (eq. 2)
    segmentation β_seg, the segmentation-attention row (eq. 4)
    combined     β, the fused and renormalised row the layer uses (eq. 6)

Maps are averaged over heads when the layer has several, upsampled nearest ×s and stretched
each from its own minimum (black) to its maximum (pale yellow, an inferno-like scale), as
matplotlib's imshow shows them: a nearly uniform map looks as contrasted as a peaked one, so the
tool prints each map's peak weight next to the uniform weight 1/(h·w). The query's
s × s block is outlined in cyan on every panel.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastsr._io import atomic_write
from fastsr.cli import (
    EXIT_INPUT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    add_common_arguments,
    add_device_arguments,
    add_prior_arguments,
    compute_prior,
    debug_requested,
    describe,
    guarded,
    load,
    one_line,
    output_problem,
    pick_device,
    protected_files,
    read_rgb,
    report_error,
    to_uint8,
)

PROG = "python -m fastsr.visualize"
PANEL_PAD = 4  # white pixels between panels
LABEL_HEIGHT = 14  # the label row above the panels
LABELS = ("image", "prior", "feature", "segmentation", "combined")
MARK_COLOUR = (0, 255, 255)
# An inferno-like colour scale: (position, RGB) stops, linear in between.
HEAT_STOPS = (
    (0.0, (0, 0, 4)),
    (0.25, (87, 16, 110)),
    (0.5, (188, 55, 84)),
    (0.75, (249, 142, 9)),
    (1.0, (252, 255, 164)),
)


def pixel_argument(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        x, y = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be X,Y (two ints: column, row); got {text!r}") from None
    return x, y


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Pictures of what a fastsr model does inside.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    att = commands.add_parser(
        "attention",
        prog=f"{PROG} attention",
        help="the SPSA attention maps of one query pixel (paper Fig. 6)",
        description="The SPSA attention maps (feature, segmentation, combined) of one query pixel, "
        "next to the image and its prior, as one PNG.",
    )
    att.add_argument(
        "checkpoint", metavar="CKPT", help="model file with an SPSA layer (fastsr.inference.save_model)"
    )
    att.add_argument(
        "image", metavar="IMAGE", help="an HR image (downscaled by the model's scale), or LR with --lr"
    )
    att.add_argument(
        "--pixel",
        type=pixel_argument,
        required=True,
        metavar="X,Y",
        help="the query pixel in IMAGE's coordinates: X the column, Y the row, from 0",
    )
    att.add_argument("--lr", action="store_true", help="IMAGE is the LR input itself, not an HR image")
    att.add_argument(
        "-o",
        "--output",
        metavar="PNG",
        help="the picture to write (default <image stem>_attention_<X>_<Y>.png here)",
    )
    add_device_arguments(att, fp16=False)
    add_prior_arguments(att)
    add_common_arguments(att)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(PROG, args, lambda: attention_command(args))


# ---------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------


class _SPSAInputs(Exception):
    """Raised by the pre-hook to stop the generator's forward once the SPSA inputs are known."""

    def __init__(self, feat: Tensor, prior: Tensor):
        super().__init__()
        self.feat, self.prior = feat, prior


@torch.no_grad()
def spsa_inputs(generator: nn.Module, lr: Tensor, prior: Tensor) -> Tensor:
    """The features the generator's SPSA layer reads for ``lr`` (B, 3, h, w): (B, nf, h, w).

    Runs the generator's own forward and stops it at the SPSA layer (a forward pre-hook), so the
    features are exactly what the layer sees, whatever the trunk, and the upsampler never runs."""
    spsa = getattr(generator, "spsa", None)
    if spsa is None:
        raise ValueError("generator has no SPSA layer (use_spsa=False): it has no attention to show")

    def stop(module, inputs):
        raise _SPSAInputs(*inputs)

    handle = spsa.register_forward_pre_hook(stop)
    try:
        generator(lr, prior)
    except _SPSAInputs as captured:
        return captured.feat
    finally:
        handle.remove()
    raise RuntimeError("the generator's forward never called its SPSA layer")


@torch.no_grad()
def attention_rows(generator: nn.Module, lr: Tensor, prior: Tensor, row: int, col: int) -> dict[str, Tensor]:
    """The attention rows of LR feature position (row, col): {"feature", "segmentation",
    "combined"} → (h, w) distributions over the key pixels (each sums to 1), mean over heads.

    Args:
        lr: (1, 3, h, w); prior: (1, S, s·h, s·w)."""
    feat = spsa_inputs(generator, lr, prior)  # (1, nf, h, w)
    maps = generator.spsa.attention_maps(feat, prior, [(row, col)])  # each (1, heads, 1, h, w)
    return {k: v[0, :, 0].float().mean(0) for k, v in maps.items()}  # each (h, w)


def heatmap(values: Tensor) -> Tensor:
    """(h, w) → (3, h, w) in [0, 1]: values stretched from their minimum (black) to their maximum
    (pale yellow) on the inferno-like scale, as matplotlib's imshow normalises; a constant map is
    black."""
    low, span = values.min(), values.max() - values.min()
    t = ((values - low) / span if span > 0 else torch.zeros_like(values)).clamp(0, 1)  # (h, w)
    positions = torch.tensor([p for p, _ in HEAT_STOPS], dtype=t.dtype, device=t.device)  # (K,)
    colours = torch.tensor([c for _, c in HEAT_STOPS], dtype=t.dtype, device=t.device) / 255  # (K, 3)
    k = torch.bucketize(t, positions[1:-1])  # (h, w): segment index, 0 … K−2
    frac = (t - positions[k]) / (positions[k + 1] - positions[k])  # (h, w)
    rgb = colours[k] + frac[..., None] * (colours[k + 1] - colours[k])  # (h, w, 3)
    return rgb.permute(2, 0, 1)


def compose(panels: Sequence[Tensor], box: tuple[int, int, int, int], labels: Sequence[str] = LABELS):
    """Panels (3, H, W) in [0, 1] side by side (PANEL_PAD white between), under a label row,
    the box (left, top, right, bottom) outlined on each (cyan one pixel out, black two) → a PIL image of width
    n·W + (n − 1)·PANEL_PAD and height LABEL_HEIGHT + H."""
    from PIL import Image, ImageDraw, ImageFont

    H, W = panels[0].shape[-2:]
    n = len(panels)
    canvas = Image.new("RGB", (n * W + (n - 1) * PANEL_PAD, LABEL_HEIGHT + H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    left, top, right, bottom = box
    for i, (panel, label) in enumerate(zip(panels, labels)):
        x0 = i * (W + PANEL_PAD)
        canvas.paste(Image.fromarray(to_uint8(panel)), (x0, LABEL_HEIGHT))
        for grow, colour in ((2, (0, 0, 0)), (1, MARK_COLOUR)):  # a cyan ring inside a black one
            draw.rectangle(
                (
                    x0 + max(left - grow, 0),
                    LABEL_HEIGHT + max(top - grow, 0),
                    x0 + min(right + grow, W - 1),
                    LABEL_HEIGHT + min(bottom + grow, H - 1),
                ),
                outline=colour,
            )
        if draw.textlength(label, font=font) <= W:  # no label that would run into the next panel
            draw.text((x0, 1), label, fill=(0, 0, 0), font=font)
    return canvas


def attention_command(args: argparse.Namespace) -> int:
    from fastsr.data import bicubic_lr, mod_crop
    from fastsr.data.priors import prior_picture

    image_path = Path(args.image)
    x, y = args.pixel
    output = Path(args.output) if args.output else Path(f"{image_path.stem}_attention_{x}_{y}.png")
    problem = output_problem(output, protected_files(args, [image_path]), args.overwrite)
    if problem is not None:
        raise CLIError(f"-o: {problem}")
    device = pick_device(args.device)
    model = load(args, device)
    if not model.needs_prior or getattr(model.generator, "spsa", None) is None:
        raise CLIError(f"{args.checkpoint} has no SPSA layer (use_spsa=False): it has no attention to show")
    s = model.scale
    try:
        img = read_rgb(image_path)  # (3, H0, W0), at the file's own depth
    except (OSError, ValueError, SyntaxError) as e:
        report_error(PROG, f"{image_path}: not a readable image ({type(e).__name__}: {one_line(e)})")
        return EXIT_INPUT_FAILED

    H0, W0 = img.shape[-2:]
    if args.lr:
        lr = img  # (3, h, w)
        limit_h, limit_w = H0, W0
        where = f"the {W0}×{H0} LR image"
        row, col = y, x
        picture = F.interpolate(lr[None], scale_factor=s, mode="nearest")[0]  # (3, s·h, s·w)
    else:
        hr = mod_crop(img, s)  # (3, H, W)
        limit_h, limit_w = hr.shape[-2:]
        if limit_h == 0 or limit_w == 0:
            report_error(
                PROG,
                f"{image_path}: {W0}×{H0} is smaller than the model's scale {s}; "
                "an HR image must be at least s × s (or pass --lr)",
            )
            return EXIT_INPUT_FAILED
        where = f"the {limit_w}×{limit_h} HR image" + (
            f" (mod-cropped to a multiple of {s} from {W0}×{H0})" if (limit_h, limit_w) != (H0, W0) else ""
        )
        lr = bicubic_lr(hr, s)  # (3, h, w)
        row, col = y // s, x // s
        picture = hr
    if not (0 <= x < limit_w and 0 <= y < limit_h):
        report_error(
            PROG, f"--pixel X,Y must lie in {where}: 0 ≤ X < {limit_w}, 0 ≤ Y < {limit_h}; got {x},{y}"
        )
        return EXIT_USAGE

    lr = lr[None].to(device)  # (1, 3, h, w)
    try:
        prior = compute_prior(model, lr, image_path.stem)  # (1, S, s·h, s·w)
        maps = attention_rows(model.generator, lr, prior, row, col)  # each (h, w)
    except Exception as e:  # noqa: BLE001 — a missing .npy prior, out of memory, a prior program's error
        if debug_requested(args):
            raise
        report_error(PROG, f"{image_path}: {type(e).__name__}: {one_line(e)}")
        return EXIT_INPUT_FAILED
    up = lambda m: m.repeat_interleave(s, 0).repeat_interleave(s, 1)  # noqa: E731 — (h, w) → (s·h, s·w)
    panels = [picture.cpu(), prior_picture(prior[0].float()).cpu()]
    panels += [heatmap(up(maps[k].cpu())) for k in ("feature", "segmentation", "combined")]
    box = (col * s, row * s, col * s + s - 1, row * s + s - 1)  # the query's block at HR size
    canvas = compose(panels, box)
    atomic_write(output, lambda f: canvas.save(f, format="PNG"))

    h, w = lr.shape[-2:]
    peaks = ", ".join(
        f"{k} {float(v.max()):.3g} at (row {int(v.argmax()) // w}, col {int(v.argmax()) % w})"
        for k, v in maps.items()
    )
    print(
        f"{describe(args.checkpoint, model)}; {device}\n"
        f"query pixel {x},{y} of {where} → LR feature (row {row}, col {col}) of {h}×{w}\n"
        f"peak weights (uniform = {1 / (h * w):.3g}): {peaks}\n"
        f"wrote {output} ({canvas.width}×{canvas.height})",
        flush=True,
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
