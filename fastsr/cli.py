"""What the command-line tools (``fastsr.upscale``, ``fastsr.eval``, ``fastsr.visualize``) share:
the device and prior flags, loading a model file with its prior, reading inputs, writing PNGs.

Exit codes of every tool: 0 everything done, 1 some inputs failed (each reported, the others
processed), 2 nothing could start (bad arguments, unreadable model file, missing prior).

User errors are one line, ``python -m fastsr.X: error: <what>``, never a traceback; ``--debug``
(or ``FASTSR_DEBUG=1`` in the environment) shows the traceback instead. No tool overwrites its
inputs, the model file or a prior file; an existing output is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

EXIT_OK, EXIT_INPUT_FAILED, EXIT_USAGE = 0, 1, 2
DEVICES = ("auto", "cpu", "cuda")
PRIOR_OUTPUTS = ("logits", "probabilities")


class CLIError(Exception):
    """A problem with the command line or the model: printed as ``<prog>: error: …``, exit 2."""


def report_error(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)


def debug_requested(args: argparse.Namespace | None = None) -> bool:
    """--debug, or FASTSR_DEBUG set to anything but "", "0", "false", "no"."""
    env = os.environ.get("FASTSR_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    return env or bool(getattr(args, "debug", False))


def guarded(prog: str, args: argparse.Namespace, command) -> int:
    """``command()``'s exit status; a user error it raises (CLIError, ValueError, OSError: a bad
    argument, an unreadable or hostile file) is one ``<prog>: error: …`` line and exit 2, unless
    --debug / FASTSR_DEBUG asks for the traceback. Python warnings print as one line too."""
    if debug_requested(args):
        return command()
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *rest: f"warning: {message}\n"
    try:
        return command()
    except (CLIError, ValueError, OSError) as e:
        report_error(prog, one_line(e))
        return EXIT_USAGE
    finally:
        warnings.formatwarning = previous


def one_line(error: BaseException) -> str:
    """An exception as one line: its message's first line, whitespace collapsed (an OSError: its
    file name and strerror; a TorchScript failure: the program's own error, the report's last line;
    the exception's type when it has no message)."""
    text = str(error).strip()
    if (
        isinstance(error, OSError)
        and error.filename is not None
        and error.strerror
        and str(error.filename) not in text
    ):
        text = f"{error.filename}: {error.strerror}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].startswith("The following operation failed in the TorchScript interpreter"):
        return lines[-1]
    return " ".join(lines[0].split())


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--overwrite and --debug, which every tool takes."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that already exist (inputs, the model file and prior files "
        "are never overwritten)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show Python tracebacks instead of one-line errors (also FASTSR_DEBUG=1)",
    )


def warn(message: str) -> None:
    """A plain ``warning: …`` line on stderr (no Python warning machinery: no file and line)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int ≥ 0; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an int ≥ 0; got {value}")
    return value


def add_device_arguments(parser: argparse.ArgumentParser, *, fp16: bool = True) -> None:
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where the generator runs; auto = cuda when available, else cpu (default auto)",
    )
    if fp16:
        parser.add_argument(
            "--fp16",
            action="store_true",
            help="run the generator in float16 on CUDA (weights and activations, as "
            "Real-ESRGAN's half mode; the prior is computed in float32 and cast). "
            "On the CPU it warns and runs in float32",
        )


def add_tile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tile",
        type=nonnegative_int,
        default=0,
        metavar="N",
        help="super-resolve in N×N LR tiles to bound memory; 0 = whole image (default)",
    )
    parser.add_argument(
        "--tile-pad",
        type=nonnegative_int,
        default=10,
        metavar="N",
        help="LR pixels of context around each tile, cut from its output (default 10)",
    )


def add_prior_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "segmentation prior (models with SPSA; default: the prior source saved in the model file)"
    )
    source = group.add_mutually_exclusive_group()
    source.add_argument(
        "--prior-dir",
        metavar="DIR",
        help="precomputed maps DIR/<image stem>.npy, (S, H, W) float at the output "
        "(HR) size; up to 15 extra rows / columns are cropped off bottom-right",
    )
    source.add_argument(
        "--prior-module",
        metavar="FILE",
        help="a segmentation network run on the bicubic-upscaled input in [0, 1]: a "
        "one-hot Stage-GAN generator.pt, or (with --trust-prior-code) a TorchScript "
        "file or torch.export program",
    )
    group.add_argument(
        "--prior-outputs",
        choices=PRIOR_OUTPUTS,
        default="logits",
        help="what --prior-module returns (default logits: softmax over classes is applied)",
    )
    group.add_argument(
        "--trust-prior-code",
        action="store_true",
        help="allow the prior network (--prior-module, or one the model file names) to be a "
        "TorchScript or torch.export program. Loading a program RUNS ITS CODE: give this "
        "only for files whose author you trust. A Stage-GAN generator.pt needs no trust",
    )


def pick_device(name: str) -> torch.device:
    from fastsr.inference import pick_device as pick

    if name not in DEVICES:
        raise CLIError(f"--device must be one of {DEVICES}; got {name!r}")
    try:
        return pick(name)
    except ValueError as e:
        raise CLIError(f"--device: {e}; use --device cpu") from e


def use_fp16(requested: bool, device: torch.device) -> bool:
    """--fp16 holds on CUDA only; on the CPU it warns once and the run stays in float32."""
    if requested and device.type != "cuda":
        warn("--fp16 applies on CUDA only; running in float32 on the CPU")
        return False
    return requested


# ---------------------------------------------------------------------------------------------
# The model and its prior
# ---------------------------------------------------------------------------------------------


def _prior_flag_source(args: argparse.Namespace, num_classes: int):
    """The prior source --prior-dir / --prior-module name (None without either)."""
    from fastsr.data.priors import ModulePrior, NpyFolderPrior

    prior_dir, prior_module = getattr(args, "prior_dir", None), getattr(args, "prior_module", None)
    try:
        if prior_dir:
            return NpyFolderPrior(prior_dir, num_classes)
        if prior_module:
            return ModulePrior.load(
                prior_module,
                num_classes,
                outputs=args.prior_outputs,
                trust_code=getattr(args, "trust_prior_code", False),
            )
    except (OSError, ValueError) as e:
        raise CLIError(f"{'--prior-dir' if prior_dir else '--prior-module'}: {one_line(e)}") from e
    return None


def load(args: argparse.Namespace, device: torch.device, *, fp16: bool = False):
    """The model file ``args.checkpoint`` on ``device`` (a :class:`fastsr.inference.LoadedModel`),
    its prior source replaced by --prior-dir / --prior-module when given (then the saved one is
    never built: its folder or network may exist only where the model was trained). ``prior`` is
    None for a model without SPSA. Raises CLIError when the file cannot be read or an SPSA model
    has no prior source."""
    from fastsr.data.priors import OST_CLASSES
    from fastsr.inference import load_model

    override = _prior_flag_source(args, len(OST_CLASSES))
    try:
        model = load_model(
            args.checkpoint,
            map_location=device,
            prior=override,
            trust_code=getattr(args, "trust_prior_code", False),
        )
    except (OSError, ValueError) as e:
        raise CLIError(f"CKPT: {one_line(e)}") from e
    prior = model.prior
    if not model.needs_prior:
        if override is not None:
            warn(
                f"{args.checkpoint} has no SPSA layer and takes no prior; "
                f"{'--prior-dir' if args.prior_dir else '--prior-module'} is ignored"
            )
        prior = None
    elif override is not None and override.num_classes != model.generator.seg_channels:
        prior = _prior_flag_source(args, model.generator.seg_channels).to(device)
    if model.needs_prior and prior is None:
        raise CLIError(
            f"{args.checkpoint} has an SPSA layer but no saved prior source: "
            "pass --prior-dir DIR or --prior-module FILE"
        )
    generator = model.generator.half() if fp16 else model.generator
    return dataclasses.replace(model, generator=generator, prior=prior)


def describe(checkpoint, model) -> str:
    """One line about a loaded model: ``CKPT: spsagan ×4 with SPSA, prior colour_clusters``."""
    text = f"{checkpoint}: {model.kind} ×{model.scale}"
    if model.needs_prior:
        kind = type(model.prior).__name__
        try:
            kind = model.prior.spec()["kind"]
        except (ValueError, NotImplementedError, KeyError, TypeError):
            pass
        text += f" with SPSA, prior {kind}"
    return text


def compute_prior(model, lr: Tensor, name: str) -> Tensor | None:
    """The prior the model reads for ``lr`` (B, 3, h, w): its prior source on the bicubic-upscaled
    input, (B, S, s·h, s·w) in lr's dtype — never from an HR image. None for a model without SPSA."""
    from fastsr.inference import bicubic_upscale

    if not model.needs_prior:
        return None
    mr = bicubic_upscale(lr.float(), model.scale)  # (B, 3, s·h, s·w)
    return model.prior(mr, [name] * lr.shape[0]).to(lr.dtype)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def protected_files(args: argparse.Namespace, inputs: Sequence[Path] = ()) -> set[Path]:
    """What no output may replace: the model file, the prior network, every prior map and every
    input (resolved paths)."""
    protected = {Path(p).resolve() for p in inputs}
    for name in ("checkpoint", "prior_module"):
        if getattr(args, name, None):
            protected.add(Path(getattr(args, name)).resolve())
    prior_dir = getattr(args, "prior_dir", None)
    if prior_dir and Path(prior_dir).is_dir():
        protected.update(p.resolve() for p in Path(prior_dir).iterdir())
    return protected


def output_problem(path: Path, protected: set[Path], overwrite: bool) -> str | None:
    """Why ``path`` may not be written (None when it may): it is one of the protected files, a
    folder, or an existing file without --overwrite."""
    key = path.resolve()
    if key in protected:
        return f"{path} is an input (an image, the model file or a prior) and is never overwritten"
    if path.is_dir():
        return f"{path} is a folder; expected a file name"
    if path.exists() and not overwrite:
        return f"{path} already exists; pass --overwrite to replace it"
    return None


def check_output_folder(folder: Path, flag: str = "-o") -> None:
    """Create ``folder`` (and its parents) and check that it can be written: CLIError otherwise."""
    if folder.exists() and not folder.is_dir():
        raise CLIError(f"{flag} must name a folder; {folder} is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"{flag}: cannot create folder {folder}: {e.strerror or e}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CLIError(f"{flag}: folder {folder} is not writable")


def gather_images(inputs: Sequence[str | Path], *, recursive: bool = False) -> tuple[list[Path], list[str]]:
    """Image files named directly, and those inside named folders (every suffix Pillow opens;
    with ``recursive``, subfolders too), in the order given. Returns (paths, problems): a missing
    path or an image-less folder is a problem, reported by the caller as a failed input."""
    paths, problems = gather_image_tree(inputs, recursive=recursive)
    return [p for p, _ in paths], problems


def gather_image_tree(
    inputs: Sequence[str | Path], *, recursive: bool = False
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """As :func:`gather_images`, each path with the folder its output goes to relative to ``-o``:
    "." for files named directly and images at a named folder's top, the subfolder path under it
    with ``recursive`` (outputs mirror the input tree)."""
    from fastsr.data.images import list_image_files

    found_all, problems, seen = [], [], set()
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = [(p, p.parent.relative_to(item)) for p in list_image_files(item, recursive=recursive)]
            if not found:
                problems.append(
                    f"{item}: no images in this folder"
                    + ("" if recursive else " (--recursive looks in its subfolders too)")
                )
        elif item.exists():
            found = [(item, Path("."))]
        else:
            problems.append(f"{item}: no such file or folder")
            found = []
        for p, rel in found:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                found_all.append((p, rel))
    return found_all, problems


def read_rgb(path: str | Path) -> Tensor:
    """An image file as (3, H, W) float32 RGB in [0, 1], at its own depth (16-bit files / 65535;
    :func:`fastsr.data.images.read_image_file`): grey replicated, alpha dropped — what scores and
    attention maps read."""
    import numpy as np

    from fastsr.data.images import read_image_file

    pixels = read_image_file(path).pixels
    peak = 65535.0 if pixels.dtype == np.uint16 else 255.0
    planes = pixels[:, :, None] if pixels.ndim == 2 else pixels
    planes = planes[:, :, :3] if planes.shape[2] in (3, 4) else planes[:, :, :1]
    rgb = np.repeat(planes, 3, axis=2) if planes.shape[2] == 1 else planes
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32) / peak)


def to_uint8(img: Tensor):
    """(3, H, W) in [0, 1] → (H, W, 3) uint8 numpy, rounded as :func:`fastsr.metrics.quantize`."""
    return img.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
