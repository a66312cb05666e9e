"""python -m fastsr.upscale: outputs against the generator run directly on independently read
pixels, prior sources, tiles, bad inputs, and the files it must never touch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_helpers import read_png, run_module, save_png, smooth_image
from PIL import Image

from fastsr.data import NpyFolderPrior, imresize, prior_from_spec
from fastsr.inference import load_model, save_model
from fastsr.models import SPSAGenerator
from fastsr.upscale import main


@torch.no_grad()
def reference_sr(model_path, png_path, prior=None, rounded=True) -> np.ndarray:
    """The generator rebuilt from the file's config and weights, run on the PNG's pixels (read by
    PIL: RGB, alpha dropped, grey replicated), the prior from the saved source on the
    bicubic-upscaled input unless given → (H, W, 3) uint8."""
    state = torch.load(model_path, weights_only=True)
    generator = SPSAGenerator(**state["config"])
    generator.load_state_dict(state["params"])
    lr = torch.from_numpy(read_png(png_path).copy()).permute(2, 0, 1).float()[None] / 255  # (1, 3, h, w)
    if generator.use_spsa and prior is None:
        prior = prior_from_spec(state["prior"])(imresize(lr, generator.scale).clamp(0, 1))  # (1, S, s·h, s·w)
    sr = generator.eval()(lr, prior)[0].clamp(0, 1)  # (3, s·h, s·w)
    if not rounded:
        return sr.permute(1, 2, 0).numpy()
    return (sr * 255).round().byte().permute(1, 2, 0).numpy()


def assert_same_picture(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to a rounding flip: the same float computation, re-rounded to 8 bits."""
    assert a.shape == b.shape
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())


def test_files_and_folders_at_scale(models, tmp_path, rng, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    save_png(folder / "rgb.png", smooth_image(rng, 12, 10))
    save_png(folder / "grey.png", smooth_image(rng, 9, 11), "L")
    save_png(folder / "rgba.png", smooth_image(rng, 10, 10), "RGBA")
    (folder / "notes.txt").write_text("not an image")
    single = save_png(tmp_path / "single.bmp", smooth_image(rng, 8, 13))
    out = tmp_path / "out"

    assert main([str(models["spsa"]), str(folder), str(single), "-o", str(out)]) == 0

    written = sorted(p.name for p in out.iterdir())
    assert written == ["grey_x4.png", "rgb_x4.png", "rgba_x4.png", "single_x4.png"]
    modes = {"rgb": "RGB", "grey": "L", "rgba": "RGBA", "single": "RGB"}  # each keeps its channels
    for src in [*(folder / n for n in ("rgb.png", "grey.png", "rgba.png")), single]:
        with Image.open(out / f"{src.stem}_x4.png") as im:
            assert im.mode == modes[src.stem]
        result = read_png(out / f"{src.stem}_x4.png")
        h, w = read_png(src).shape[:2]
        assert result.shape == (4 * h, 4 * w, 3)
        expected = reference_sr(models["spsa"], src)
        if src.stem == "grey":  # grey in, grey out: the mean of the three channels the network returns
            mean = reference_sr(models["spsa"], src, rounded=False).mean(2, keepdims=True)
            expected = np.repeat(np.round(mean * 255), 3, axis=2).astype(np.uint8)
        assert_same_picture(result, expected)
    stdout = capsys.readouterr().out
    assert "10×12 → 40×48" in stdout and "4 written" in stdout


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize("source", ["dir", "module"])
def test_prior_sources(models, tmp_path, rng, source):
    """--prior-dir maps (at the output size) and a --prior-module network replace the saved prior."""
    image = save_png(tmp_path / "photo.png", smooth_image(rng, 10, 9))
    lr = torch.from_numpy(read_png(image).copy()).permute(2, 0, 1).float()[None] / 255  # (1, 3, 10, 9)
    if source == "dir":
        maps = torch.from_numpy(rng.normal(0, 3, (1, 8, 40, 36))).float().softmax(1)  # (1, 8, 40, 36)
        (tmp_path / "priors").mkdir()
        np.save(tmp_path / "priors" / "photo.npy", maps[0].numpy())
        flags, prior = ["--prior-dir", str(tmp_path / "priors")], maps
    else:
        torch.manual_seed(3)
        net = torch.nn.Conv2d(3, 8, 1)
        torch.jit.save(torch.jit.script(net), str(tmp_path / "seg.pt"))
        flags = ["--prior-module", str(tmp_path / "seg.pt"), "--trust-prior-code"]
        with torch.no_grad():
            prior = net(imresize(lr, 4).clamp(0, 1)).softmax(1)  # logits → probabilities

    assert main([str(models["spsa"]), str(image), "-o", str(tmp_path / "out"), *flags]) == 0
    result = read_png(tmp_path / "out" / "photo_x4.png")
    assert_same_picture(result, reference_sr(models["spsa"], image, prior))
    # the saved colour-cluster prior gives another picture: the flag was not ignored
    assert np.abs(result.astype(int) - reference_sr(models["spsa"], image).astype(int)).max() > 1


def test_prior_flags_replace_a_saved_folder_that_is_gone(models, tmp_path, rng, capsys):
    """A model trained with --prior-dir stores that folder; elsewhere it does not exist, and the
    flag must replace it without the saved source ever being built."""
    folder = tmp_path / "train_priors"
    folder.mkdir()
    model = load_model(models["spsa"])
    moved = tmp_path / "moved.pt"
    save_model(moved, model.generator, NpyFolderPrior(folder))
    folder.rmdir()
    image = save_png(tmp_path / "photo.png", smooth_image(rng, 6, 5))
    assert main([str(moved), str(image), "-o", str(tmp_path / "out")]) == 2
    assert "train_priors" in capsys.readouterr().err
    (tmp_path / "maps").mkdir()
    maps = torch.from_numpy(rng.normal(0, 3, (8, 24, 20))).float().softmax(0)  # (8, 24, 20)
    np.save(tmp_path / "maps" / "photo.npy", maps.numpy())
    assert (
        main([str(moved), str(image), "-o", str(tmp_path / "out"), "--prior-dir", str(tmp_path / "maps")])
        == 0
    )
    assert_same_picture(read_png(tmp_path / "out" / "photo_x4.png"), reference_sr(moved, image, maps[None]))


def test_missing_prior_map_fails_that_input(models, tmp_path, rng, capsys):
    image = save_png(tmp_path / "photo.png", smooth_image(rng, 6, 6))
    (tmp_path / "priors").mkdir()
    assert (
        main(
            [
                str(models["spsa"]),
                str(image),
                "-o",
                str(tmp_path / "out"),
                "--prior-dir",
                str(tmp_path / "priors"),
            ]
        )
        == 1
    )
    assert "photo.npy" in capsys.readouterr().err
    assert not (tmp_path / "out" / "photo_x4.png").exists()


def test_tiles_equal_the_whole_image_without_spsa(models, tmp_path, rng):
    """Without SPSA every output pixel depends on LR pixels at most 18.5 away: conv_first (1),
    one RRDB's 3 × 5 dense-block convs (15), conv_body (1) at LR size, then conv_up1, conv_hr and
    conv_last at ×2 (1 HR pixel = ½ LR pixel each). With tile_pad = 20 each tile sees everything
    its output needs, so tiles give the whole-image result (up to float summation order); with
    tile_pad = 0 they do not."""
    image = save_png(tmp_path / "big.png", smooth_image(rng, 40, 36))
    outputs = {}
    for name, flags in (
        ("whole", []),
        ("tiled", ["--tile", "16", "--tile-pad", "20"]),
        ("unpadded", ["--tile", "16", "--tile-pad", "0"]),
    ):
        assert main([str(models["plain"]), str(image), "-o", str(tmp_path / name), *flags]) == 0
        outputs[name] = read_png(tmp_path / name / "big_x2.png")
    assert outputs["whole"].shape == (80, 72, 3)
    assert_same_picture(outputs["tiled"], outputs["whole"])
    assert_same_picture(outputs["whole"], reference_sr(models["plain"], image))
    assert np.abs(outputs["unpadded"].astype(int) - outputs["whole"].astype(int)).max() > 1


def test_progress_shows_the_image_and_its_tiles_on_a_pipe(models, tmp_path, rng, capsys):
    """stderr captured (not a terminal): plain lines, no carriage returns, one per tenth of an
    image's tiles — here each of the 4 tiles (2 × 2 at --tile 6 on 12 × 10) of each image."""
    for name in ("a", "b"):
        save_png(tmp_path / f"{name}.png", smooth_image(rng, 12, 10))
    inputs = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert main([str(models["plain"]), *inputs, "-o", str(tmp_path / "out"), "--tile", "6"]) == 0
    captured = capsys.readouterr()
    lines = [line.split(" · ETA ")[0] for line in captured.err.splitlines()]
    assert lines == [f"image {n}/2 · tile {k}/4" for n in (1, 2) for k in (1, 2, 3, 4)]
    assert "\r" not in captured.err and " · ETA " in captured.err
    assert "[1/2]" in captured.out and "[2/2]" in captured.out and "2 written" in captured.out


def test_progress_is_a_bar_on_a_terminal(models, tmp_path, rng, monkeypatch):
    """A terminal gets one tqdm bar: its last state names the last image and all its tiles,
    with the elapsed time and the ETA."""
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    for name in ("a", "b"):
        save_png(tmp_path / f"{name}.png", smooth_image(rng, 12, 10))
    inputs = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert main([str(models["plain"]), *inputs, "-o", str(tmp_path / "out"), "--tile", "6"]) == 0
    last = terminal.getvalue().split("\r")[-1]
    assert "image 2/2 · tile 4/4" in last and "100%" in last and "<00:00" in last


def test_tiles_with_spsa_crop_the_prior(models, tmp_path, rng):
    image = save_png(tmp_path / "photo.png", smooth_image(rng, 11, 9))
    assert main([str(models["spsa"]), str(image), "-o", str(tmp_path), "--tile", "4", "--tile-pad", "2"]) == 0
    assert read_png(tmp_path / "photo_x4.png").shape == (44, 36, 3)


def test_bad_inputs_are_reported_and_skipped(models, tmp_path, rng, capsys):
    good = save_png(tmp_path / "good.png", smooth_image(rng, 8, 8))
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "nothing_here").mkdir()
    out = tmp_path / "out"
    code = main(
        [
            str(models["plain"]),
            str(tmp_path / "garbage.png"),
            str(good),
            str(tmp_path / "truncated.png"),
            str(tmp_path / "empty.jpg"),
            str(tmp_path / "missing.png"),
            str(tmp_path / "nothing_here"),
            "-o",
            str(out),
        ]
    )
    assert code == 1
    assert [p.name for p in out.iterdir()] == ["good_x2.png"]
    err = capsys.readouterr().err
    for name in ("garbage.png", "truncated.png", "empty.jpg", "missing.png", "nothing_here"):
        assert name in err


def test_never_overwrites_an_input(models, tmp_path, rng, capsys):
    image = save_png(tmp_path / "a.png", smooth_image(rng, 8, 8))
    before = image.read_bytes()
    assert main([str(models["plain"]), str(image), "-o", str(tmp_path), "--suffix", ""]) == 1
    assert image.read_bytes() == before
    assert "is never overwritten" in capsys.readouterr().err


def test_two_inputs_with_one_output_name(models, tmp_path, rng, capsys):
    save_png(tmp_path / "a.png", smooth_image(rng, 8, 8))
    save_png(tmp_path / "a.bmp", smooth_image(rng, 6, 6))
    assert main([str(models["plain"]), str(tmp_path), "-o", str(tmp_path / "out")]) == 1
    assert read_png(tmp_path / "out" / "a_x2.png").shape == (12, 12, 3)  # a.bmp, first in sorted order
    assert "already written" in capsys.readouterr().err


@pytest.mark.parametrize("problem", ["no prior", "not a model", "output is a file"])
def test_usage_errors_exit_2(models, tmp_path, rng, capsys, problem):
    image = save_png(tmp_path / "a.png", smooth_image(rng, 8, 8))
    ckpt, out = models["spsa_bare"], tmp_path / "out"
    if problem == "not a model":
        ckpt = tmp_path / "junk.pt"
        ckpt.write_bytes(b"junk")
    elif problem == "output is a file":
        ckpt, out = models["plain"], image
    assert main([str(ckpt), str(image), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert {"no prior": "--prior-dir", "not a model": "junk.pt", "output is a file": "folder"}[problem] in err


def test_fp16_on_cpu_warns_and_runs_float32(models, tmp_path, rng, capsys):
    image = save_png(tmp_path / "a.png", smooth_image(rng, 8, 8))
    assert (
        main([str(models["plain"]), str(image), "-o", str(tmp_path / "half"), "--fp16", "--device", "cpu"])
        == 0
    )
    assert "--fp16" in capsys.readouterr().err
    assert_same_picture(read_png(tmp_path / "half" / "a_x2.png"), reference_sr(models["plain"], image))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_without_cuda(models, tmp_path, rng, capsys):
    image = save_png(tmp_path / "a.png", smooth_image(rng, 8, 8))
    assert main([str(models["plain"]), str(image), "-o", str(tmp_path), "--device", "cuda"]) == 2
    assert "--device cpu" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_on_cuda_close_to_float32(models, tmp_path, rng):
    image = save_png(tmp_path / "a.png", smooth_image(rng, 24, 20))
    for name, flags in (("full", []), ("half", ["--fp16"])):
        assert (
            main([str(models["spsa"]), str(image), "-o", str(tmp_path / name), "--device", "cuda", *flags])
            == 0
        )
    full = read_png(tmp_path / "full" / "a_x4.png").astype(float)
    half = read_png(tmp_path / "half" / "a_x4.png").astype(float)
    assert 10 * np.log10(255**2 / max(((full - half) ** 2).mean(), 1e-12)) > 35


def test_command_line_smoke(models, tmp_path, rng):
    save_png(tmp_path / "a.png", smooth_image(rng, 8, 6))
    done = run_module("fastsr.upscale", str(models["plain"]), "a.png", "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "6×8 → 12×16" in done.stdout
    assert read_png(tmp_path / "out" / "a_x2.png").shape == (16, 12, 3)


@pytest.mark.slow
def test_the_prune_stages_outputs_work_everywhere_a_model_is_taken(tmp_path, rng):
    """python -m fastsr.train prune writes rrdb.pt and rrsb.pt as model files: upscale and eval
    run them, and they load as --pretrained weights of an SPSA generator with the same connections."""
    from fastsr import eval as eval_tool
    from fastsr.models import SPSAGenerator
    from fastsr.models.pruning import load_config
    from fastsr.train.prune import PruneConfig
    from fastsr.train.prune import run as prune

    out = tmp_path / "prune"
    prune(
        PruneConfig(
            iters=3,
            last_k=2,
            num_feat=8,
            num_grow_ch=4,
            num_block=1,
            crop=32,
            batch_size=1,
            log_every=3,
            out=str(out),
            device="cpu",
        )
    )
    image = save_png(tmp_path / "photo.png", smooth_image(rng, 24, 20))
    for name in ("rrdb", "rrsb"):
        assert main([str(out / f"{name}.pt"), str(image), "-o", str(tmp_path / name)]) == 0
        assert read_png(tmp_path / name / "photo_x4.png").shape == (96, 80, 3)
        assert eval_tool.main([str(out / f"{name}.pt"), "--hr", str(image)]) == 0
    connections = load_config(out / "rrsb.json")["connections"]
    g = SPSAGenerator(scale=4, num_feat=8, num_block=1, num_grow_ch=4, connections=connections)
    assert g.load_psnr_weights(out / "rrsb.pt") == [k for k in g.state_dict() if k.startswith("spsa.")]


def test_pixels_are_kept_faithfully(models, tmp_path, rng):
    """16-bit in → 16-bit out (48-bit PNG), RGBA keeps a bicubic alpha, the ICC profile is copied,
    --recursive mirrors the tree, --ext auto keeps the input's format."""
    from PIL import ImageCms

    from fastsr.data.images import ImageFile, read_image_file, write_image_file
    from fastsr.ops import imresize

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tree = tmp_path / "in"
    (tree / "deep").mkdir(parents=True)
    sixteen = (smooth_image(rng, 8, 9).astype(np.uint16) * 257 + rng.integers(0, 257, (8, 9, 3))).astype(
        np.uint16
    )
    write_image_file(tree / "deep" / "sixteen.png", ImageFile(sixteen, icc))
    rgba = np.dstack([smooth_image(rng, 8, 9), np.linspace(0, 255, 72).reshape(8, 9).astype(np.uint8)])
    write_image_file(tree / "alpha.png", ImageFile(rgba))
    Image.fromarray(smooth_image(rng, 8, 9)).save(tree / "photo.tif")
    out = tmp_path / "out"
    assert main([str(models["plain"]), str(tree), "-o", str(out), "--recursive", "--ext", "auto"]) == 0
    got16 = read_image_file(out / "deep" / "sixteen_x2.png")
    assert got16.pixels.dtype == np.uint16 and got16.pixels.shape == (16, 18, 3) and got16.icc == icc
    assert np.any(got16.pixels % 257 != 0)  # not an 8-bit result scaled up
    expected = imresize(torch.from_numpy(rgba[:, :, 3]).float()[None, None] / 255, 2)[0, 0].clamp(0, 1)
    got_alpha = read_image_file(out / "alpha_x2.png").pixels
    assert got_alpha.shape == (16, 18, 4)
    assert np.abs(got_alpha[:, :, 3].astype(int) - (expected * 255).round().byte().numpy()).max() == 0
    assert (out / "photo_x2.tif").is_file()  # --ext auto: TIFF in, TIFF out
    assert main([str(models["plain"]), str(tree), "-o", str(tmp_path / "flat")]) == 0  # without --recursive
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["alpha_x2.png", "photo_x2.png"]


def test_outscale_resizes_the_models_output_by_matlab_bicubic(models, tmp_path, rng):
    from fastsr.inference import Upscaler
    from fastsr.ops import imresize

    image = save_png(tmp_path / "p.png", smooth_image(rng, 10, 12))
    assert main([str(models["plain"]), str(image), "-o", str(tmp_path / "o"), "--outscale", "3.5"]) == 0
    got = read_png(tmp_path / "o" / "p_x3.5.png")
    assert got.shape == (35, 42, 3)
    x2 = Upscaler(models["plain"], device="cpu").upscale(read_png(image).astype(np.float32) / 255)  # ×2
    expected = imresize(torch.from_numpy(x2).permute(2, 0, 1), size=(35, 42)).clamp(0, 1)
    expected = (expected * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(SystemExit) as info:
        main([str(models["plain"]), str(image), "-o", str(tmp_path / "o"), "--outscale", "-1"])
    assert info.value.code == 2
