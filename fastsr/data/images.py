"""Image files, read and written faithfully: every channel layout (grey, grey + alpha, RGB, RGBA),
8 and 16 bits, the ICC profile, EXIF orientation applied on reading.

Pillow reads everything except 16-bit colour: its colour modes are 8-bit, so it opens a 48-bit
RGB PNG as 8-bit RGB without a word. Those files — 16-bit RGB / RGBA PNG and TIFF — are read with
OpenCV (``opencv-python-headless``), the library BasicSR and Real-ESRGAN read 16-bit images with,
and the only widely used, maintained one that does both formats at 16 bits; 16-bit grey stays
with Pillow (mode I;16).

PNG, the upscaler's default output, is written here (:func:`write_png`): every layout at 8 and
16 bits, with the ICC profile, encoded from the array a band of rows at a time with the filters
Pillow and libpng pick. Neither library writes a large array without copying it whole first:
Pillow holds RGB (and grey + alpha) at 4 bytes a pixel, so ``Image.fromarray`` of an RGB array
is a 1.33× copy (only L, RGBA and I;16 share the array's memory), and OpenCV encodes into one
in-memory buffer, after an RGB → BGR copy. The other formats are written by Pillow (JPEG, WebP,
8-bit TIFF, BMP; with that copy for RGB) and OpenCV (16-bit colour TIFF, which cannot carry the
ICC profile: reported). An ICC profile is kept on every other format that can carry one.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastsr._io import atomic_write

__all__ = [
    "ImageFile",
    "WRITE_FORMATS",
    "image_suffixes",
    "list_image_files",
    "read_image_file",
    "write_image_file",
    "write_png",
]

# suffix → Pillow format name, for the formats fastsr writes
WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
_SIXTEEN_BIT = {".png", ".tif", ".tiff"}  # suffixes that hold 16-bit colour
_ORIENT = {
    2: (False, True, 0),
    3: (False, False, 2),
    4: (True, False, 0),
    5: (False, True, 1),
    6: (False, False, 3),
    7: (False, True, 3),
    8: (False, False, 1),
}  # EXIF → (flip ud, flip lr, rot90 k)


@dataclass
class ImageFile:
    """An image's pixels, (H, W) or (H, W, C) with C ∈ {2, 3, 4} (grey + alpha, RGB, RGBA),
    uint8 or uint16; its ICC profile (bytes or None) and the format it was read from."""

    pixels: np.ndarray
    icc: bytes | None = None
    format: str = "PNG"

    @property
    def bits(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8


def image_suffixes() -> tuple[str, ...]:
    """Every file suffix Pillow can open (.png, .jpg, .webp, .tif, .bmp, .gif, …), lower case."""
    from PIL import Image

    stubs = {"BUFR", "GRIB", "HDF5", "WMF"}  # registered, but opening needs a handler Pillow does not ship
    return tuple(
        sorted(
            ext
            for ext, fmt in Image.registered_extensions().items()
            if fmt in Image.OPEN and fmt not in stubs
        )
    )


def list_image_files(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """Files in ``folder`` (and its subfolders with ``recursive``) whose suffix Pillow opens,
    sorted; hidden files (".name") are skipped."""
    folder = Path(folder)
    suffixes = set(image_suffixes())
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p for p in found if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
    )


def _is_sixteen_bit_colour(path: Path, head: bytes) -> bool:
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24] == 16 and head[25] in (2, 4, 6)  # RGB, grey + alpha, RGBA at 16 bits
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        from PIL import Image

        with Image.open(path) as im:
            bits = im.tag_v2.get(258, (8,))
            samples = im.tag_v2.get(277, 1)
        return max(bits if isinstance(bits, tuple) else (bits,)) == 16 and samples >= 2
    return False


def read_image_file(path: str | os.PathLike) -> ImageFile:
    """Read an image as it is: see the module docstring. Raises OSError (missing, unreadable,
    truncated) or ValueError (a layout fastsr does not handle: CMYK is converted to RGB; 32-bit
    float and palette images come back RGB(A) 8-bit), each naming the file."""
    from PIL import Image, ImageOps

    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(64)
    if _is_sixteen_bit_colour(path, head):
        return _read_with_opencv(path)
    with Image.open(path) as im:
        icc = im.info.get("icc_profile")
        fmt = im.format or "PNG"
        im = ImageOps.exif_transpose(im)
        mode = im.mode
        if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
            pixels = np.asarray(im).astype(np.uint16)
        elif mode == "I":
            pixels = np.asarray(im).clip(0, 65535).astype(np.uint16)
        elif mode in ("L", "LA", "RGB", "RGBA"):
            pixels = np.asarray(im)
        elif mode == "1":
            pixels = np.asarray(im.convert("L"))
        elif mode in ("P", "PA"):
            keeps_alpha = mode == "PA" or "transparency" in im.info
            pixels = np.asarray(im.convert("RGBA" if keeps_alpha else "RGB"))
        else:  # CMYK, YCbCr, LAB, F …: through RGB
            pixels = np.asarray(im.convert("RGB"))
    return ImageFile(np.ascontiguousarray(pixels), icc if isinstance(icc, bytes) else None, fmt)


def _read_with_opencv(path: Path) -> ImageFile:
    import cv2
    from PIL import Image

    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise OSError(f"{path}: OpenCV could not read this 16-bit image")
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = pixels[:, :, ::-1]  # BGR → RGB
    elif pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[:, :, [2, 1, 0, 3]]  # BGRA → RGBA
    icc, orientation, fmt = None, 1, "PNG" if path.read_bytes()[:4] == b"\x89PNG" else "TIFF"
    try:
        with Image.open(path) as im:
            icc = im.info.get("icc_profile")
            orientation = im.getexif().get(0x0112, 1)
    except OSError:
        pass
    if orientation in _ORIENT:
        ud, lr, k = _ORIENT[orientation]
        pixels = np.flipud(pixels) if ud else pixels
        pixels = np.fliplr(pixels) if lr else pixels
        pixels = np.rot90(pixels, k) if k else pixels
    return ImageFile(
        np.ascontiguousarray(pixels.astype(np.uint16)), icc if isinstance(icc, bytes) else None, fmt
    )


def write_image_file(path: str | os.PathLike, image: ImageFile, *, quality: int = 95) -> list[str]:
    """Write ``image`` atomically in the format its suffix names (:data:`WRITE_FORMATS`); returns
    notices of what the format could not keep (16 bits in an 8-bit format, alpha in JPEG, an
    ICC profile in a 16-bit TIFF), for the caller to report."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_FORMATS:
        raise ValueError(f"output {path} must end in one of {sorted(WRITE_FORMATS)}; got {suffix!r}")
    pixels, notices = image.pixels, []
    if pixels.dtype == np.uint16 and suffix not in _SIXTEEN_BIT:
        notices.append(
            f"{WRITE_FORMATS[suffix]} holds 8 bits per channel: the 16-bit result is rounded to 8 bits"
        )
        pixels = _to_8_bits(pixels)
    if suffix in (".jpg", ".jpeg") and pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        notices.append("JPEG has no alpha channel: alpha is dropped")
        pixels = pixels[:, :, :-1] if pixels.shape[2] == 4 else pixels[:, :, 0]
    if suffix == ".png":
        atomic_write(path, lambda f: write_png(f, pixels, image.icc))
        return notices
    if pixels.dtype == np.uint16 and pixels.ndim == 3:  # 16-bit colour TIFF
        data = _encode_tiff_with_opencv(pixels)
        if image.icc:
            notices.append(
                "a 16-bit colour TIFF is written without the ICC profile (OpenCV cannot write one)"
            )
        atomic_write(path, lambda f: f.write(data))
        return notices
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(pixels))  # L, RGBA, I;16: shares the memory; RGB: a copy
    options = {"icc_profile": image.icc} if image.icc and suffix != ".bmp" else {}
    if suffix in (".jpg", ".jpeg", ".webp"):
        options["quality"] = quality
    atomic_write(
        path, lambda f: im.save(f, format=WRITE_FORMATS[suffix], **options)
    )  # encoded straight to disk
    return notices


def _to_8_bits(pixels: np.ndarray) -> np.ndarray:
    """uint16 → uint8, round(v / 257), a band of rows at a time (no float copy of the image):
    v / 257 is never a half, so (v + 128) // 257 is that rounding exactly."""
    out = np.empty(pixels.shape, np.uint8)
    rows = max(1, _BAND_BYTES // max(1, pixels[:1].nbytes))
    for r in range(0, len(pixels), rows):
        out[r : r + rows] = (pixels[r : r + rows].astype(np.uint32) + 128) // 257
    return out


def _encode_tiff_with_opencv(pixels: np.ndarray) -> np.ndarray:
    import cv2

    if pixels.shape[2] == 3:
        pixels = pixels[:, :, ::-1]  # RGB → BGR
    elif pixels.shape[2] == 4:
        pixels = pixels[:, :, [2, 1, 0, 3]]
    ok, data = cv2.imencode(".tiff", np.ascontiguousarray(pixels))
    if not ok:
        raise OSError(f"OpenCV could not encode a {pixels.shape} {pixels.dtype} image as TIFF")
    return data  # written from its own buffer, not copied to bytes


# ---------------------------------------------------------------------------------------------
# PNG, a band of rows at a time
# ---------------------------------------------------------------------------------------------

_BAND_BYTES = 1 << 17  # raw bytes per band: the encoder's buffers are ≈ 30× this (4 MiB), whatever the image
_PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels → grey, grey + alpha, RGB, RGBA
_PNG_FILTERS = np.array([0, 2, 1, 4], np.uint8)  # None, Up, Sub, Paeth: the order Pillow tries them


def write_png(f, pixels: np.ndarray, icc: bytes | None = None, *, level: int = 6) -> None:
    """Encode ``pixels`` — (H, W) or (H, W, C), C ∈ {1, 2, 3, 4} (grey, grey + alpha, RGB, RGBA),
    uint8 or uint16 — as a PNG into the binary file ``f``, with the ICC profile as an iCCP chunk.

    The image is never copied whole: each band of rows (≈ 128 KiB of raw bytes) is filtered,
    deflated and written as one IDAT chunk. The file is the one Pillow would write, to within
    the chunking (a few bytes): each row gets the filter Pillow's encoder (libpng's heuristic)
    gives it — of None, Up, Sub and Paeth, the first whose bytes, read as signed, have the
    smallest sum of magnitudes (Average, which Pillow tries only with ``optimize``, is left out
    here too) — and zlib runs with Pillow's settings (``level`` 6, memLevel 9, Z_FILTERED).
    """
    if pixels.dtype not in (np.uint8, np.uint16) or pixels.ndim not in (2, 3):
        raise ValueError(
            f"pixels must be (H, W) or (H, W, C) uint8 or uint16; got {pixels.shape} {pixels.dtype}"
        )
    H, W = pixels.shape[:2]
    C = 1 if pixels.ndim == 2 else pixels.shape[2]
    if C not in _PNG_COLOUR_TYPES or H == 0 or W == 0:
        raise ValueError(f"pixels must be at least 1×1 with 1 to 4 channels; got shape {pixels.shape}")
    depth = 16 if pixels.dtype == np.uint16 else 8
    f.write(b"\x89PNG\r\n\x1a\n")
    f.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, depth, _PNG_COLOUR_TYPES[C], 0, 0, 0)))
    if icc:
        f.write(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    bpp = C * depth // 8  # bytes per pixel: how far back Sub and Paeth look
    row_bytes = W * bpp
    rows = max(1, _BAND_BYTES // row_bytes)
    deflate = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_FILTERED)
    above = np.zeros(row_bytes, np.uint8)  # the row above the first is zeros
    for r in range(0, H, rows):
        band = np.ascontiguousarray(pixels[r : r + rows], dtype=">u2" if depth == 16 else np.uint8)
        raw = band.view(np.uint8).reshape(len(band), row_bytes)  # (rows, W·bpp), big-endian samples
        data = deflate.compress(_png_scanlines(raw, above, bpp))
        if data:
            f.write(_png_chunk(b"IDAT", data))
        above = raw[-1]
    f.write(_png_chunk(b"IDAT", deflate.flush()))
    f.write(_png_chunk(b"IEND", b""))


def _png_scanlines(raw: np.ndarray, above: np.ndarray, bpp: int) -> np.ndarray:
    """(rows, n) raw bytes and the row above them → (rows, 1 + n): each row's filter type, then
    its filtered bytes (PNG spec §9: differences mod 256 from the left, upper, upper-left bytes)."""
    up = np.concatenate([above[None], raw[:-1]])  # (rows, n)
    left = np.zeros_like(raw)
    left[:, bpp:] = raw[:, :-bpp]
    corner = np.zeros_like(raw)
    corner[:, bpp:] = up[:, :-bpp]
    a, b, c = left.astype(np.int16), up.astype(np.int16), corner.astype(np.int16)
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, corner))
    candidates = np.stack([raw, raw - up, raw - left, raw - paeth])  # (4, rows, n), uint8 wraps mod 256
    cost = np.minimum(candidates, 0 - candidates).sum(axis=2, dtype=np.int64)  # (4, rows): |signed byte|
    choice = cost.argmin(axis=0)  # the first smallest, in Pillow's order
    out = np.empty((len(raw), raw.shape[1] + 1), np.uint8)
    out[:, 0] = _PNG_FILTERS[choice]
    out[:, 1:] = candidates[choice, np.arange(len(raw))]
    return out


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )
