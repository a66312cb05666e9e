"""Image files, read and written faithfully: every channel layout (grey, grey + alpha, RGB, RGBA),
8 and 16 bits, the ICC profile, EXIF orientation applied on reading.

Pillow reads and writes everything except 16-bit colour: its colour modes are 8-bit, so it opens
a 48-bit RGB PNG as 8-bit RGB without a word. Those files — 16-bit RGB / RGBA PNG and TIFF — are
read and written with OpenCV (``opencv-python-headless``), the library BasicSR and Real-ESRGAN
read 16-bit images with, and the only widely used, maintained one that does both formats at
16 bits. 16-bit grey stays with Pillow (mode I;16). An ICC profile is kept on every format that
can carry one (PNG, JPEG, WebP, TIFF through Pillow; 16-bit colour PNG gets its iCCP chunk
written here; 16-bit colour TIFF through OpenCV cannot carry it, and is reported).
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
    colour16 = pixels.dtype == np.uint16 and pixels.ndim == 3
    if pixels.dtype == np.uint16 and suffix not in _SIXTEEN_BIT:
        notices.append(
            f"{WRITE_FORMATS[suffix]} holds 8 bits per channel: the 16-bit result is rounded to 8 bits"
        )
        pixels, colour16 = np.round(pixels / 257.0).astype(np.uint8), False
    if suffix in (".jpg", ".jpeg") and pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        notices.append("JPEG has no alpha channel: alpha is dropped")
        pixels = pixels[:, :, :-1] if pixels.shape[2] == 4 else pixels[:, :, 0]
    if colour16:
        data = _encode_with_opencv(pixels, suffix)
        if image.icc:
            if suffix == ".png":
                data = _png_with_icc(data, image.icc)
            else:
                notices.append(
                    "a 16-bit colour TIFF is written without the ICC profile (OpenCV cannot write one)"
                )
        atomic_write(path, lambda f: f.write(data))
        return notices
    from PIL import Image

    im = Image.fromarray(pixels)  # shares the array's memory
    options = {"icc_profile": image.icc} if image.icc and suffix != ".bmp" else {}
    if suffix in (".jpg", ".jpeg", ".webp"):
        options["quality"] = quality
    atomic_write(
        path, lambda f: im.save(f, format=WRITE_FORMATS[suffix], **options)
    )  # encoded straight to disk
    return notices


def _encode_with_opencv(pixels: np.ndarray, suffix: str) -> bytes:
    import cv2

    if pixels.shape[2] == 3:
        pixels = pixels[:, :, ::-1]  # RGB → BGR
    elif pixels.shape[2] == 4:
        pixels = pixels[:, :, [2, 1, 0, 3]]
    ok, data = cv2.imencode(".png" if suffix == ".png" else ".tiff", np.ascontiguousarray(pixels))
    if not ok:
        raise OSError(f"OpenCV could not encode a {pixels.shape} {pixels.dtype} image as {suffix}")
    return data.tobytes()


def _png_with_icc(png: bytes, icc: bytes) -> bytes:
    """``png`` with an iCCP chunk (profile name, compression 0, zlib-compressed profile) after IHDR."""
    body = b"icc\x00\x00" + zlib.compress(icc)
    chunk = (
        struct.pack(">I", len(body))
        + b"iCCP"
        + body
        + struct.pack(">I", zlib.crc32(b"iCCP" + body) & 0xFFFFFFFF)
    )
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length + type, IHDR data, CRC
    return png[:ihdr_end] + chunk + png[ihdr_end:]
