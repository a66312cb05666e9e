"""Nothing fastsr loads runs code from the file: every loading entry point, API and command line,
against pickles that create a sentinel file when unpickled, and programs (TorchScript,
torch.export) that fastsr loads only when trusted by name.

The payloads are checked to work (the control tests create the sentinel through plain
``pickle`` / ``torch.load(weights_only=False)`` / ``torch.export.load``), so a loader that
unpickled them would fail these tests.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile import HOW, make_hostile_files
from PIL import Image

from fastsr import RRDBNet, load_basicsr_state_dict
from fastsr.data import ColourClusterPrior
from fastsr.data.priors import ModulePrior, prior_from_spec
from fastsr.inference import load_model, save_model
from fastsr.models import SPSAGenerator, StageGAN, VGG19FeatureExtractor
from fastsr.train.checkpoint import load_training_state

REPO = Path(__file__).resolve().parents[2]
TINY = dict(num_feat=16, num_block=1, num_grow_ch=8)
PICKLES = ("top-level.pt", "nested.pt", "nested-ckpt.pt", "basicsr.pth", "legacy.pt", "raw.pkl", "raw-p0.pkl")
PROGRAMS = ("tampered.pt2", "tampered-ts.pt")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    sentinel = root / "PWNED"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = {how: make_hostile_files(root / how, sentinel, how) for how in HOW}
    assert not sentinel.exists()
    return files, sentinel


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, hostile):
    """A valid SPSA model file, and one whose saved prior spec names the tampered .pt2."""
    root = tmp_path_factory.mktemp("models")
    files, _ = hostile
    torch.manual_seed(0)
    g = SPSAGenerator(scale=2, **TINY, use_spsa=True).eval()
    prior = ColourClusterPrior(torch.rand(8, 3), 0.1)
    good, naming = root / "good.pt", root / "names-program.pt"
    save_model(good, g, prior)

    class NamesProgram:  # what a hostile model file may say: "my prior is this program"
        def spec(self):
            return {"kind": "module", "path": str(files["open"]["tampered.pt2"]), "num_classes": 8}

    save_model(naming, g, NamesProgram())
    image = root / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(image)
    return {"good": good, "names-program": naming, "image": image}


def test_the_payloads_work(hostile, tmp_path):
    """Control: the files do run code when unpickled the unsafe way."""
    files, sentinel = hostile
    for how in HOW:
        for name, load in (
            ("raw.pkl", lambda p: pickle.loads(p.read_bytes())),
            ("nested.pt", lambda p: torch.load(p, weights_only=False)),
            ("legacy.pt", lambda p: torch.load(p, weights_only=False)),
            ("tampered.pt2", lambda p: torch.export.load(str(p))),
        ):
            assert not sentinel.exists()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    load(files[how][name])
            except Exception:  # noqa: BLE001 — the payload runs before the load fails
                pass
            assert sentinel.exists(), f"{how}/{name} did not run its payload: the tests would prove nothing"
            sentinel.unlink()


def _api_entry_points(model_files):
    net = lambda: RRDBNet(3, 3, scale=2, **TINY)  # noqa: E731
    return {
        "load_model": lambda p: load_model(p),
        "load_training_state": lambda p: load_training_state(p),
        "RRDBNet.from_checkpoint": lambda p: RRDBNet.from_checkpoint(p),
        "load_basicsr_state_dict": lambda p: load_basicsr_state_dict(net(), p),
        "SPSAGenerator.from_checkpoint": lambda p: SPSAGenerator.from_checkpoint(p),
        "SPSAGenerator.load_psnr_weights": lambda p: SPSAGenerator(scale=2, **TINY).load_psnr_weights(p),
        "StageGAN.from_checkpoint": lambda p: StageGAN.from_checkpoint(p),
        "VGG19FeatureExtractor": lambda p: VGG19FeatureExtractor(p),
        "ModulePrior.load": lambda p: ModulePrior.load(p),
        "prior_from_spec": lambda p: prior_from_spec({"kind": "module", "path": str(p)}),
        "load_config": lambda p: __import__("fastsr.models.pruning", fromlist=["load_config"]).load_config(p),
    }


ENTRY_POINTS = (
    "load_model",
    "load_training_state",
    "RRDBNet.from_checkpoint",
    "load_basicsr_state_dict",
    "SPSAGenerator.from_checkpoint",
    "SPSAGenerator.load_psnr_weights",
    "StageGAN.from_checkpoint",
    "VGG19FeatureExtractor",
    "ModulePrior.load",
    "prior_from_spec",
    "load_config",
)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_api_loaders_refuse_every_hostile_file(hostile, model_files, entry):
    files, sentinel = hostile
    load = _api_entry_points(model_files)[entry]
    for how in HOW:
        for name in PICKLES + PROGRAMS:
            with pytest.raises(ValueError) as info:
                load(files[how][name])
            message = str(info.value)
            assert files[how][name].name in message, (
                f"{entry}({name}): the error must name the file: {message}"
            )
            assert "weights_only=False" not in message and "\n" not in message
            assert not sentinel.exists(), f"{entry}({how}/{name}) ran the file's code"


def test_programs_are_refused_before_they_are_read(hostile):
    files, sentinel = hostile
    for name, what in (("tampered.pt2", "torch.export"), ("tampered-ts.pt", "TorchScript")):
        with pytest.raises(
            ValueError, match=f"is a {what} program: loading it runs the code.*--trust-prior-code"
        ):
            ModulePrior.load(files["open"][name])
    assert not sentinel.exists()


def test_a_program_named_inside_a_model_file_is_never_loaded_without_trust(hostile, model_files):
    _, sentinel = hostile
    with pytest.raises(
        ValueError,
        match=r"names-program\.pt: its saved prior cannot be used: .*tampered\.pt2 "
        r"is a torch.export program",
    ):
        load_model(model_files["names-program"])
    assert not sentinel.exists()
    # the user's own prior replaces it: the saved one is then never built
    loaded = load_model(model_files["names-program"], prior=ColourClusterPrior(torch.rand(8, 3), 0.1))
    assert loaded.needs_prior
    assert not sentinel.exists()


def _run_tool(module: str, *args: str) -> tuple[int, str]:
    import importlib

    main = importlib.import_module(module).main
    from contextlib import redirect_stderr
    from io import StringIO

    err = StringIO()
    with redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


def _cli_calls(files, model_files, out: Path):
    good, image = str(model_files["good"]), str(model_files["image"])
    calls = []
    for name in PICKLES + PROGRAMS:
        path = str(files[name])
        calls += [
            ("fastsr.upscale", (path, image, "-o", str(out))),
            ("fastsr.eval", (path, "--hr", image)),
            ("fastsr.visualize", ("attention", path, image, "--pixel", "2,2", "-o", str(out / "a.png"))),
            ("fastsr.upscale", (good, image, "-o", str(out), "--prior-module", path)),
            ("fastsr.eval", (good, "--hr", image, "--prior-module", path)),
        ]
    calls.append(("fastsr.upscale", (str(model_files["names-program"]), image, "-o", str(out))))
    calls.append(("fastsr.eval", (str(model_files["names-program"]), "--hr", image)))
    return calls


def test_command_line_tools_refuse_every_hostile_file(hostile, model_files, tmp_path):
    files, sentinel = hostile
    for module, args in _cli_calls(files["exec"], model_files, tmp_path / "out"):
        code, err = _run_tool(module, *args)
        assert code == 2, (module, args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"python -m {module}: error: "), (module, args, err)
        assert "Traceback" not in err and "weights_only" not in err
        assert not sentinel.exists(), f"{module} {args} ran the file's code"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_program_prior_needs_trust_by_name(hostile, model_files, tmp_path):
    """--prior-module with a program: refused (naming the risk and the flag); with
    --trust-prior-code a benign TorchScript prior runs."""
    benign = tmp_path / "seg.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 8, 1)), str(benign))
    args = [
        str(model_files["good"]),
        str(model_files["image"]),
        "-o",
        str(tmp_path / "out"),
        "--prior-module",
        str(benign),
    ]
    code, err = _run_tool("fastsr.upscale", *args)
    assert code == 2 and "runs the code inside it" in err and "--trust-prior-code" in err
    code, err = _run_tool("fastsr.upscale", *args, "--trust-prior-code")
    assert code == 0, err
    assert (tmp_path / "out" / "img_x2.png").is_file()


@pytest.mark.parametrize("module", ["fastsr.upscale", "fastsr.eval"])
def test_hostile_model_file_through_python_m(hostile, model_files, tmp_path, module):
    """The real command line, in a fresh interpreter."""
    files, sentinel = hostile
    args = [str(files["system"]["nested.pt"])] + (
        ["--hr", str(model_files["image"])]
        if module == "fastsr.eval"
        else [str(model_files["image"]), "-o", str(tmp_path / "o")]
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("FASTSR_DEBUG", None)
    done = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "refused to load" in done.stderr
    assert not sentinel.exists()
    # FASTSR_DEBUG=1: the traceback instead of the line (still no code run)
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=dict(env, FASTSR_DEBUG="1"),
        timeout=120,
    )
    assert done.returncode != 0 and "Traceback" in done.stderr
    assert not sentinel.exists()
