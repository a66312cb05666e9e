"""fastsr.data.images: every layout and depth round-trips bit for bit through the formats that
hold it, ICC profiles stay, EXIF orientation is applied, and what a format cannot keep is said."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from fastsr.data.images import ImageFile, image_suffixes, list_image_files, read_image_file, write_image_file

REPO = Path(__file__).resolve().parents[2]
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def pixels(shape, dtype, seed=0):
    top = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, top + 1, shape).astype(dtype)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3), (5, 7, 4)], ids=["grey", "rgb", "rgba"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=["8-bit", "16-bit"])
def test_lossless_formats_round_trip_every_layout_and_depth(tmp_path, suffix, shape, dtype):
    a = pixels(shape, dtype)
    path = tmp_path / f"x{suffix}"
    notices = write_image_file(path, ImageFile(a, ICC))
    back = read_image_file(path)
    assert back.pixels.dtype == a.dtype and np.array_equal(back.pixels, a)
    sixteen_colour_tiff = dtype == np.uint16 and len(shape) == 3 and suffix == ".tif"
    assert (back.icc == ICC) != sixteen_colour_tiff  # kept, except where OpenCV writes the file
    assert bool(notices) == sixteen_colour_tiff


def test_pillow_alone_reads_48_bit_png_as_8_bit(tmp_path):
    """Why OpenCV: Pillow opens a 16-bit RGB PNG in an 8-bit mode."""
    a = pixels((4, 4, 3), np.uint16)
    write_image_file(tmp_path / "x.png", ImageFile(a))
    with Image.open(tmp_path / "x.png") as im:
        assert np.asarray(im).dtype == np.uint8
    assert read_image_file(tmp_path / "x.png").pixels.dtype == np.uint16


def test_lossy_and_8_bit_formats_say_what_they_drop(tmp_path):
    a16 = pixels((6, 6, 4), np.uint16)
    notices = write_image_file(tmp_path / "x.jpg", ImageFile(a16, ICC))
    assert any("8 bits" in n for n in notices) and any("alpha" in n for n in notices)
    back = read_image_file(tmp_path / "x.jpg")
    assert back.pixels.shape == (6, 6, 3) and back.pixels.dtype == np.uint8 and back.icc == ICC
    write_image_file(tmp_path / "x.webp", ImageFile(pixels((6, 6, 4), np.uint8), ICC))
    assert read_image_file(tmp_path / "x.webp").pixels.shape == (6, 6, 4)
    with pytest.raises(ValueError, match="must end in one of"):
        write_image_file(tmp_path / "x.gif", ImageFile(a16))


@pytest.mark.parametrize("sixteen", [False, True])
def test_exif_orientation_is_applied(tmp_path, sixteen):
    a = pixels((3, 5, 3), np.uint16 if sixteen else np.uint8)
    path = tmp_path / ("x.png" if sixteen else "x.jpg")
    if sixteen:
        write_image_file(path, ImageFile(a))
        im = Image.open(path)
        exif = im.getexif()
        exif[0x0112] = 6  # rotate 90° clockwise to view
        data = path.read_bytes()
        im.close()
        # re-save the same 16-bit pixels with an eXIf chunk, through OpenCV's bytes + the chunk
        import struct
        import zlib

        body = exif.tobytes()
        chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
        path.write_bytes(data[:33] + chunk + data[33:])
        expected = np.rot90(a, 3)
    else:
        im = Image.fromarray(a)
        exif = im.getexif()
        exif[0x0112] = 6
        im.save(path, exif=exif, quality=100, subsampling=0)
        expected = np.rot90(np.asarray(Image.open(path)), 3)  # JPEG is lossy: compare with its own pixels
    back = read_image_file(path)
    assert back.pixels.shape == (5, 3, 3) and np.array_equal(back.pixels, expected)


def test_folder_scans_find_every_format_pillow_reads(tmp_path):
    for name in ("a.png", "b.tif", "c.webp", "d.bmp", "e.jpg", "f.gif"):
        Image.fromarray(pixels((4, 4, 3), np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.png").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    Image.fromarray(pixels((4, 4, 3), np.uint8)).save(tmp_path / "sub" / "g.png")
    assert [p.name for p in list_image_files(tmp_path)] == [
        "a.png",
        "b.tif",
        "c.webp",
        "d.bmp",
        "e.jpg",
        "f.gif",
    ]
    assert [p.name for p in list_image_files(tmp_path, recursive=True)][-1] == "g.png"
    assert {".png", ".tif", ".tiff", ".webp", ".jpg", ".bmp", ".gif"} <= set(image_suffixes())


def test_palette_and_cmyk_images_come_back_as_rgb(tmp_path):
    rgb = pixels((4, 4, 3), np.uint8)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert read_image_file(tmp_path / "p.png").pixels.shape == (4, 4, 3)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg")
    assert read_image_file(tmp_path / "c.jpg").pixels.shape == (4, 4, 3)


def _png_rows_filters(data: bytes, height: int) -> np.ndarray:
    """The filter type byte of each row of a PNG file (its IDAT stream inflated)."""
    import struct
    import zlib

    pos, idat = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + n])
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    return raw.reshape(height, -1)[:, 0]


@pytest.mark.parametrize("channels", [1, 2, 3, 4], ids=["grey", "grey+alpha", "rgb", "rgba"])
def test_png_is_the_file_pillow_writes(tmp_path, channels):
    """fastsr writes PNG itself, a band of rows at a time: Pillow reads back the same pixels, and
    the file is Pillow's own — every row has the filter Pillow's encoder picks, and the size is
    Pillow's to within the IDAT chunking."""
    yy, xx = np.mgrid[0:61, 0:77]
    smooth = np.stack([np.sin(yy / 9) * 90 + 120, np.cos(xx / 13) * 90 + 120, (yy + xx) * 1.5, yy * 3.0], -1)
    noisy = smooth + np.random.default_rng(0).normal(0, 3, smooth.shape)
    a = np.clip(noisy, 0, 255).astype(np.uint8)[:, :, :channels]
    a = a[:, :, 0] if channels == 1 else a
    write_image_file(tmp_path / "ours.png", ImageFile(a, ICC))
    Image.fromarray(a).save(tmp_path / "pillow.png", icc_profile=ICC)
    ours, theirs = (tmp_path / "ours.png").read_bytes(), (tmp_path / "pillow.png").read_bytes()
    with Image.open(tmp_path / "ours.png") as im:
        assert np.array_equal(np.asarray(im), a) and im.info["icc_profile"] == ICC
    assert np.array_equal(_png_rows_filters(ours, 61), _png_rows_filters(theirs, 61))
    assert len(set(_png_rows_filters(ours, 61).tolist())) > 1  # the choice is made per row
    assert abs(len(ours) - len(theirs)) < 0.002 * len(theirs) + 64


PEAK_OF_A_WRITE = """
import sys, numpy as np
from fastsr.data.images import ImageFile, write_image_file
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) * 1024
dtype = np.dtype(sys.argv[2])
a = np.broadcast_to((np.arange(4000) % 251).astype(dtype)[None, :, None], (3000, 4000, 3)).copy()
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
write_image_file(sys.argv[1], ImageFile(a, b"icc"))
print((status("VmHWM") - before) / a.nbytes)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc peak-RSS reset")
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_png_writing_never_copies_the_image(tmp_path, dtype):
    """What a PNG's writing adds to the peak RSS of a fresh process is a few bands of rows, not
    the image again: a 34 / 69 MiB image. Pillow would hold an RGB copy at 4 bytes a pixel
    (+1.33×); OpenCV (fastsr's 16-bit path before) a BGR copy, its encoded buffer and bytes of it."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    out = tmp_path / "x.png"
    done = subprocess.run(
        [sys.executable, "-c", PEAK_OF_A_WRITE, str(out), dtype],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 0.2, float(done.stdout)
    a = np.broadcast_to((np.arange(4000) % 251).astype(dtype)[None, :, None], (3000, 4000, 3))
    assert np.array_equal(read_image_file(out).pixels, a)
