"""No tool overwrites what the user made: pointed at their inputs, the model file or an earlier
output, upscale / eval / visualize refuse (existing outputs are replaced only with --overwrite),
and every such refusal is one line. Bytes are compared before and after."""

from __future__ import annotations

import hashlib
from contextlib import redirect_stderr
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastsr import eval as eval_tool
from fastsr import upscale, visualize
from fastsr.data import ColourClusterPrior
from fastsr.inference import save_model
from fastsr.models import SPSAGenerator

TINY = dict(num_feat=16, num_block=1, num_grow_ch=8)


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run(tool, *args) -> tuple[int, str]:
    err = StringIO()
    with redirect_stderr(err):
        code = tool.main([str(a) for a in args])
    return code, err.getvalue()


@pytest.fixture
def work(tmp_path):
    torch.manual_seed(0)
    g = SPSAGenerator(scale=2, **TINY, use_spsa=True).eval()
    save_model(tmp_path / "model.pt", g, ColourClusterPrior(torch.rand(8, 3), 0.1))
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    return tmp_path


def one_error_line(err: str, prog: str) -> str:
    lines = err.strip().splitlines()
    assert lines and all(line.startswith(f"python -m {prog}: error: ") for line in lines), err
    assert "Traceback" not in err
    return lines[0]


def test_upscale_never_replaces_an_input_or_the_model(work):
    before = fingerprint(work)
    # the output folder is the input folder, and the names collide: -o . --suffix ""
    code, err = run(
        upscale, work / "model.pt", work / "a.png", work / "b.png", "-o", work, "--suffix", "", "--overwrite"
    )
    assert code == 1 and err.count("is never overwritten") == 2
    # an output named like the model file
    (work / "m").mkdir()
    save_model(work / "m" / "model_x2.png", SPSAGenerator(scale=2, **TINY).eval())
    model_bytes = (work / "m" / "model_x2.png").read_bytes()
    code, err = run(upscale, work / "m" / "model_x2.png", work / "model.pt", "-o", work / "m", "--overwrite")
    assert (work / "m" / "model_x2.png").read_bytes() == model_bytes
    assert {k: v for k, v in fingerprint(work).items() if not k.startswith("m/")} == before


def test_upscale_replaces_an_earlier_output_only_with_overwrite(work):
    assert run(upscale, work / "model.pt", work / "a.png", "-o", work / "out")[0] == 0
    first = fingerprint(work)
    code, err = run(upscale, work / "model.pt", work / "a.png", "-o", work / "out")
    assert code == 1 and "already exists; pass --overwrite" in err
    assert fingerprint(work) == first
    code, _ = run(upscale, work / "model.pt", work / "a.png", "-o", work / "out", "--overwrite")
    assert code == 0


@pytest.mark.parametrize("suffix", ["/../../escaped", "_x/..", "..", "a\\b"])
def test_suffix_cannot_leave_the_output_folder(work, suffix):
    before = fingerprint(work)
    code, err = run(upscale, work / "model.pt", work / "a.png", "-o", work / "out", "--suffix", suffix)
    assert code == 2
    assert "--suffix must be text appended to a file name" in one_error_line(err, "fastsr.upscale")
    assert fingerprint(work) == before and not (work / "out").exists()


def test_unwritable_output_folder_is_one_line(work):
    code, err = run(upscale, work / "model.pt", work / "a.png", "-o", work / "a.png" / "sub")
    assert code == 2 and "-o" in one_error_line(err, "fastsr.upscale")


@pytest.mark.parametrize("target", ["model.pt", "a.png", "earlier.csv"])
def test_eval_csv_never_replaces_inputs_the_model_or_earlier_results(work, target):
    (work / "earlier.csv").write_text("name\n")
    before = fingerprint(work)
    code, err = run(eval_tool, work / "model.pt", "--hr", work / "a.png", "--csv", work / target)
    assert code == 2 and "--csv" in one_error_line(err, "fastsr.eval")
    assert fingerprint(work) == before
    code, err = run(
        eval_tool, work / "model.pt", "--hr", work / "a.png", "--csv", work / target, "--overwrite"
    )
    if target == "earlier.csv":
        assert code == 0 and (work / target).read_text().startswith("name,width")
    else:
        assert code == 2 and "is never overwritten" in err and fingerprint(work) == before


@pytest.mark.parametrize("target", ["model.pt", "a.png"])
def test_visualize_never_replaces_its_image_or_the_model(work, target):
    before = fingerprint(work)
    for extra in ([], ["--overwrite"]):
        code, err = run(
            visualize,
            "attention",
            work / "model.pt",
            work / "a.png",
            "--pixel",
            "3,3",
            "-o",
            work / target,
            *extra,
        )
        assert code == 2 and "-o" in one_error_line(err, "fastsr.visualize")
    assert fingerprint(work) == before


@pytest.mark.parametrize("bad", ["missing", "text", "checkpoint"])
def test_bad_model_files_are_one_line_naming_what_the_file_is(work, bad):
    from fastsr.train.checkpoint import save_training_state

    path = work / "bad.pt"
    expected = {
        "missing": "does not exist",
        "text": "is not a readable fastsr model file",
        "checkpoint": "is a training checkpoint; pass its run's generator.pt",
    }[bad]
    if bad == "text":
        path.write_text("hello")
    elif bad == "checkpoint":
        save_training_state(path, config={}, iteration=0, models={}, optimizers={}, schedulers={})
    for tool, args in (
        (upscale, [path, work / "a.png", "-o", work / "out"]),
        (eval_tool, [path, "--hr", work / "a.png"]),
        (visualize, ["attention", path, work / "a.png", "--pixel", "1,1", "-o", work / "v.png"]),
    ):
        code, err = run(tool, *args)
        prog = tool.__name__
        assert code == 2 and expected in one_error_line(err, prog), err


def test_a_failing_prior_program_fails_one_image_and_the_batch_goes_on(work):
    """A trusted TorchScript prior that raises (torch.jit.Error) on one image: that image is
    reported, the other is written, exit 1."""

    class Picky(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 1)

        def forward(self, x):
            if x.shape[-1] > 70:
                raise RuntimeError("this prior network takes images up to 70 pixels wide")
            return self.conv(x)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Picky()), str(work / "picky.pt"))
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(work / "wide.png")  # 80 wide at ×2
    code, err = run(
        upscale,
        work / "model.pt",
        work / "a.png",
        work / "wide.png",
        "-o",
        work / "out",
        "--prior-module",
        work / "picky.pt",
        "--trust-prior-code",
    )
    assert code == 1, err
    assert "wide.png" in one_error_line(err, "fastsr.upscale") and "70 pixels wide" in err
    assert (work / "out" / "a_x2.png").is_file() and not (work / "out" / "wide_x2.png").exists()
