"""`python -m fastsr.train`: nothing a user made is lost, no file runs code, and user errors are
one line with exit 2.

For every trainer (spsagan, stagegan, prune): a second fresh run into a run folder is refused and
leaves every file byte-identical; ``--overwrite`` deletes only the earlier run's artefacts; a run
folder that is (or holds, or lies inside) an input is refused even with ``--overwrite``; a
validation image too small to score is refused before training; the checkpoint is written before
the validation of the same iteration. Hostile files (pickles whose unpickling creates a sentinel
file, a TorchScript prior without ``--trust-prior-code``) are refused in one line, the sentinel
never created. Nets and runs are the trainer tests' tiny ones.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastsr.data import sample_image_paths
from fastsr.train import prune as prune_stage
from fastsr.train import spsagan as spsagan_stage
from fastsr.train import stagegan as stagegan_stage
from fastsr.train.__main__ import main
from fastsr.train.checkpoint import load_training_state

REPO = Path(__file__).resolve().parents[2]
SPSAGAN = [
    "spsagan",
    "--num-feat",
    "8",
    "--num-block",
    "1",
    "--num-grow-ch",
    "4",
    "--crop",
    "32",
    "--batch-size",
    "2",
    "--log-every",
    "1",
    "--val-every",
    "1000",
    "--save-every",
    "1000",
    "--threads",
    "1",
    "--ema",
    "0.9",
    "--iters",
    "2",
    "--device",
    "cpu",
]
STAGEGAN = [
    "stagegan",
    "--ngf",
    "8",
    "--ndf",
    "8",
    "--n-blocks",
    "2",
    "--size",
    "32",
    "--val-size",
    "32",
    "--num-classes",
    "4",
    "--iters",
    "1",
    "--log-every",
    "1",
    "--threads",
    "1",
    "--device",
    "cpu",
]
PRUNE = [
    "prune",
    "--iters",
    "2",
    "--last-k",
    "1",
    "--num-block",
    "1",
    "--num-feat",
    "8",
    "--num-grow-ch",
    "4",
    "--crop",
    "32",
    "--batch-size",
    "2",
    "--log-every",
    "2",
    "--device",
    "cpu",
]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


class Payload:
    """Unpickling this creates ``sentinel`` (``builtins.open(sentinel, "w")``)."""

    def __init__(self, sentinel: Path):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (builtins.open, (self.sentinel, "w"))


def smooth_image(path: Path, side: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    channels = [
        0.5
        + 0.15
        * sum(
            np.sin(2 * np.pi * (a * xx + b * yy) + rng.uniform(0, 6))
            for a, b in rng.uniform(0.5, 3, size=(3, 2))
        )
        for _ in range(3)
    ]
    Image.fromarray((np.clip(np.stack(channels, -1), 0, 1) * 255).round().astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    for i in range(2):
        smooth_image(folder / f"img{i}.png", 64, i)
    return folder


def spsagan_args(image_dir: Path, out: Path, *extra) -> list[str]:
    return [
        *SPSAGAN,
        "--train-dir",
        str(image_dir),
        "--val-dir",
        str(image_dir),
        "--out",
        str(out),
        *map(str, extra),
    ]


def fingerprint(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def call(argv: list, capsys) -> tuple[int, str]:
    """main(argv) → (exit status, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_error_line(err: str, stage: str) -> str:
    """The single line of a user error (and nothing else on stderr)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    prefix = f"python -m fastsr.train {stage}: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix) :]


@pytest.fixture(scope="module")
def psnr_generator(image_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("psnr") / "run"
    assert main(spsagan_args(image_dir, out)) == 0
    return out / "generator.pt"


def test_the_payload_runs_code_when_unpickled(tmp_path):
    """Control: the payload does create its sentinel through an unrestricted load."""
    sentinel = tmp_path / "PWNED"
    torch.save({"x": Payload(sentinel)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert sentinel.exists()


# ---------------------------------------------------------------------------------------------
# Run folders
# ---------------------------------------------------------------------------------------------


def stage_args(stage: str, image_dir: Path, out: Path) -> list[str]:
    if stage == "spsagan":
        return spsagan_args(image_dir, out)
    return [*(STAGEGAN if stage == "stagegan" else PRUNE), "--out", str(out)]


@pytest.mark.parametrize("stage", ["spsagan", "stagegan", "prune"])
def test_a_second_run_is_refused_and_overwrite_deletes_only_the_runs_own_files(
    stage, image_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    args = stage_args(stage, image_dir, out)
    assert call(args, capsys)[0] == 0
    # the user's own files, one of them inside an artefact folder, and leftovers an overwrite removes
    (out / "notes.txt").write_text("mine")
    leftovers = [out / ".summary.json.abc123.tmp"]
    if stage != "prune":
        (out / "samples").mkdir(exist_ok=True)
        (out / "samples" / "mine.png").write_bytes(b"my picture")
        leftovers.append(out / "samples" / "iter_0099999.png")  # a sample of the earlier, longer run
    for p in leftovers:
        p.write_bytes(b"old")
    before = fingerprint(out)

    code, err = call(args, capsys)
    line = one_error_line(err, stage)
    assert code == 2 and "already holds files" in line and "--overwrite" in line
    assert (f"--resume {out}" in line) == (stage != "prune")
    assert fingerprint(out) == before  # byte-identical

    code, err = call([*args, "--overwrite"], capsys)
    assert code == 0, err
    after = fingerprint(out)
    assert after["notes.txt"] == before["notes.txt"]
    if stage != "prune":
        assert after["samples/mine.png"] == before["samples/mine.png"]
        assert load_training_state(out)["iteration"] == (2 if stage == "spsagan" else 1)
    assert not any(p.exists() for p in leftovers)
    assert "summary.json" in after


def test_out_naming_an_existing_file_is_refused(image_dir, tmp_path, capsys):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    code, err = call(spsagan_args(image_dir, target, "--overwrite"), capsys)
    assert code == 2 and "is an existing file" in one_error_line(err, "spsagan")
    assert target.read_text() == "keep me"


@pytest.fixture
def nested(tmp_path) -> Path:
    """tmp/a/hr holding two images (a copy of the module's folder): a/ holds an input folder."""
    hr = tmp_path / "a" / "hr"
    hr.mkdir(parents=True)
    for i in range(2):
        smooth_image(hr / f"img{i}.png", 64, i)
    return hr


@pytest.mark.parametrize("where, relation", [("hr", "is"), ("hr/run", "lies inside"), ("", "holds")])
def test_spsagan_refuses_a_run_folder_at_its_inputs_even_with_overwrite(nested, where, relation, capsys):
    root = nested.parent
    out = root / where if where else root
    before = fingerprint(root)
    code, err = call(spsagan_args(nested, out, "--overwrite"), capsys)
    line = one_error_line(err, "spsagan")
    assert code == 2 and f"{relation} the --train-dir folder" in line and "even with --overwrite" in line
    assert fingerprint(root) == before and not (root / "hr" / "run").exists()


def test_spsagan_refuses_to_overwrite_its_pretrained_generator(image_dir, psnr_generator, capsys):
    run_dir = psnr_generator.parent
    before = fingerprint(run_dir)
    for pretrained in (psnr_generator, run_dir):  # the file, or its run folder (→ its generator.pt)
        code, err = call(
            spsagan_args(
                image_dir,
                run_dir,
                "--stage",
                "gan",
                "--random-vgg",
                "--pretrained",
                pretrained,
                "--overwrite",
            ),
            capsys,
        )
        assert (
            code == 2 and "--pretrained" in one_error_line(err, "spsagan") and "would be overwritten" in err
        )
    assert fingerprint(run_dir) == before


def test_stagegan_refuses_its_data_folder_as_run_folder(tmp_path, capsys):
    data = tmp_path / "ab"
    data.mkdir()
    smooth_image(data / "pair.png", 64, 0)
    before = fingerprint(data)
    code, err = call(
        [*STAGEGAN, "--data", "ab", "--data-dir", data, "--val-dir", data, "--out", data, "--overwrite"],
        capsys,
    )
    assert code == 2 and "is the --data-dir folder" in one_error_line(err, "stagegan")
    assert fingerprint(data) == before


def test_prune_refuses_the_sample_folder_as_run_folder(tmp_path, monkeypatch, capsys):
    samples = tmp_path / "samples"
    samples.mkdir()
    for i in range(2):
        smooth_image(samples / f"s{i}.png", 64, i)
    monkeypatch.setattr(prune_stage, "sample_image_paths", lambda split: sorted(samples.iterdir()))
    before = fingerprint(samples)
    code, err = call([*PRUNE, "--out", samples, "--overwrite"], capsys)
    assert code == 2 and "is the embedded sample photographs' folder" in one_error_line(err, "prune")
    assert fingerprint(samples) == before


# ---------------------------------------------------------------------------------------------
# Start-up checks, and the checkpoint before validation
# ---------------------------------------------------------------------------------------------


def test_a_validation_image_too_small_to_score_is_refused_before_training(image_dir, tmp_path, capsys):
    val = tmp_path / "val"
    val.mkdir()
    smooth_image(val / "big.png", 64, 0)
    smooth_image(val / "tiny.png", 16, 1)  # ×4: 16 < 2·4 + 11 = 19
    out = tmp_path / "run"
    args = [*spsagan_args(image_dir, out), "--val-dir", val, "--iters", "100000"]
    code, err = call(args, capsys)
    line = one_error_line(err, "spsagan")
    assert code == 2 and f"'tiny' (--val-dir {val}) is 16×16" in line and "≥ 2·4 + 11 = 19" in line
    assert not out.exists()  # nothing written: no checkpoint, no logs


def test_prune_refuses_a_validation_image_too_small_to_score(tmp_path, monkeypatch, capsys):
    (tmp_path / "val").mkdir()
    smooth_image(tmp_path / "val" / "tiny.png", 16, 1)
    train = sample_image_paths("train")
    monkeypatch.setattr(
        prune_stage,
        "sample_image_paths",
        lambda split: train if split == "train" else [tmp_path / "val" / "tiny.png"],
    )
    code, err = call([*PRUNE, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "validation image 'tiny' is 16×16" in one_error_line(err, "prune")
    assert not (tmp_path / "run").exists()


def test_a_loose_checkpoint_resumes_only_into_a_new_out(psnr_generator, tmp_path, capsys):
    """<folder>/last.pt names no run folder: its parent's parent is the user's (here tmp_path)."""
    loose = tmp_path / "downloads" / "last.pt"
    loose.parent.mkdir()
    loose.write_bytes((psnr_generator.parent / "checkpoints" / "last.pt").read_bytes())
    (tmp_path / "train.csv").write_text("the user's own\n")
    before = fingerprint(tmp_path)
    code, err = call(["spsagan", "--resume", loose, "--iters", "3"], capsys)
    assert code == 2 and "pass --out" in one_error_line(err, "spsagan")
    code, err = call(["spsagan", "--resume", loose, "--iters", "3", "--out", tmp_path], capsys)
    assert code == 2 and "already holds files" in one_error_line(err, "spsagan")
    assert fingerprint(tmp_path) == before
    assert call(["spsagan", "--resume", loose, "--iters", "3", "--out", tmp_path / "resumed"], capsys)[0] == 0
    assert load_training_state(tmp_path / "resumed")["iteration"] == 3
    assert fingerprint(tmp_path).items() >= before.items()


@pytest.mark.parametrize("stage", ["psnr", "gan"])
@pytest.mark.parametrize("fault", ["missing", "misshaped"])
def test_npy_priors_of_every_image_are_checked_before_training(
    stage, fault, image_dir, psnr_generator, tmp_path, capsys
):
    priors = tmp_path / "priors"
    priors.mkdir()
    np.save(priors / "img0.npy", np.full((8, 64, 64), 1 / 8, dtype=np.float32))
    if fault == "misshaped":
        np.save(priors / "img1.npy", np.full((8, 60, 64), 1 / 8, dtype=np.float32))
    gan = ["--stage", "gan", "--random-vgg", "--pretrained", psnr_generator] if stage == "gan" else []
    out = tmp_path / "run"
    code, err = call(spsagan_args(image_dir, out, "--prior", "npy", "--prior-dir", priors, *gan), capsys)
    line = one_error_line(err, "spsagan")
    assert code == 2 and str(priors / "img1.npy") in line
    assert ("not found" if fault == "missing" else "got shape (8, 60, 64)") in line
    assert not out.exists()


def test_the_main_job_refuses_an_earlier_one_before_training(tmp_path, monkeypatch):
    def no_training(cfg):
        raise AssertionError("a stage started")

    monkeypatch.setattr(spsagan_stage, "run", no_training)
    (tmp_path / "psnr").mkdir()
    (tmp_path / "psnr" / "generator.pt").write_bytes(b"earlier")
    with pytest.raises(ValueError, match="already holds files"):
        spsagan_stage.run_demo(str(tmp_path))
    assert (tmp_path / "psnr" / "generator.pt").read_bytes() == b"earlier"


@pytest.mark.parametrize("stage", ["spsagan", "stagegan"])
def test_the_checkpoint_is_written_before_the_validation_of_its_iteration(
    stage, image_dir, tmp_path, monkeypatch
):
    def failing_validation(*args, **kwargs):
        raise RuntimeError("validation failed")

    module = spsagan_stage if stage == "spsagan" else stagegan_stage
    monkeypatch.setattr(module, "validate", failing_validation)
    out = tmp_path / "run"
    args = [*stage_args(stage, image_dir, out), "--iters", "2", "--val-every", "2", "--save-every", "2"]
    with pytest.raises(RuntimeError, match="validation failed"):  # a failure while training: its traceback
        main(args)
    assert load_training_state(out)["iteration"] == 2
    assert (out / "generator.pt").is_file()


# ---------------------------------------------------------------------------------------------
# User errors: one line, exit 2
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "missing resume",
        "missing pretrained",
        "non-JSON connections",
        "empty data folder",
        "device tpu",
        "device cuda:99",
        "overwrite with resume",
        "out under a file",
    ],
)
def test_user_errors_are_one_line(case, image_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "c.json").write_text("{not json")
    argv, expected = {
        "missing resume": (["spsagan", "--resume", tmp_path / "nowhere"], "no training checkpoint"),
        "missing pretrained": (
            spsagan_args(
                image_dir,
                tmp_path / "r",
                "--stage",
                "gan",
                "--random-vgg",
                "--pretrained",
                tmp_path / "nope.pt",
            ),
            "does not exist",
        ),
        "non-JSON connections": (
            spsagan_args(image_dir, tmp_path / "r", "--connections", tmp_path / "c.json"),
            "c.json",
        ),
        "empty data folder": (spsagan_args(empty, tmp_path / "r"), f"--train-dir {empty} holds no images"),
        "device tpu": (
            spsagan_args(image_dir, tmp_path / "r", "--device", "tpu"),
            "device must be cpu, cuda",
        ),
        "device cuda:99": ([*STAGEGAN, "--device", "cuda:99", "--out", tmp_path / "r"], "cuda:99"),
        "overwrite with resume": (["spsagan", "--resume", tmp_path, "--overwrite"], "pass one of them"),
        "out under a file": (
            spsagan_args(image_dir, tmp_path / "c.json" / "r"),
            "c.json is a file, not a folder",
        ),
    }[case]
    code, err = call(argv, capsys)
    assert code == 2 and expected in one_error_line(err, argv[0])
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("damage", ["shapes", "no extra"])
def test_a_checkpoint_that_does_not_fit_is_one_line(damage, psnr_generator, tmp_path, capsys):
    from fastsr._io import save_state

    state = load_training_state(psnr_generator.parent)
    if damage == "shapes":
        state["models"]["generator"] = {k: v[..., :1] for k, v in state["models"]["generator"].items()}
    else:
        del state["extra"]
    save_state(
        tmp_path / "odd" / "checkpoints" / "last.pt", state
    )  # a valid digest: the content is as written
    code, err = call(["spsagan", "--resume", tmp_path / "odd"], capsys)
    line = one_error_line(err, "spsagan")
    assert code == 2 and str(tmp_path / "odd") in line
    assert ("does not fit this run" if damage == "shapes" else "holds no prior spec") in line


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    argv = ["spsagan", "--resume", str(tmp_path / "nowhere")]
    with pytest.raises(FileNotFoundError, match="no training checkpoint"):
        main(["--debug", *argv])
    with pytest.raises(FileNotFoundError):
        main([*argv, "--debug"])
    monkeypatch.setenv("FASTSR_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(argv)


# ---------------------------------------------------------------------------------------------
# Hostile files
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def evil(tmp_path) -> tuple[dict[str, Path], Path]:
    """Pickles that create ``sentinel`` when unpickled: a training checkpoint (as a file and in a
    run folder), a generator file, a VGG19 state dict."""
    sentinel = tmp_path / "PWNED"
    payload = Payload(sentinel)
    run_dir = tmp_path / "evil-run"
    (run_dir / "checkpoints").mkdir(parents=True)
    checkpoint = {
        "format": "fastsr.train/1",
        "config": {},
        "iteration": 1,
        "models": {},
        "optimizers": {},
        "schedulers": {},
        "rng": [{"numpy": payload}],
        "extra": {},
    }
    torch.save(checkpoint, run_dir / "checkpoints" / "last.pt")
    files = {
        "checkpoint": tmp_path / "evil-ckpt.pt",
        "run": run_dir,
        "generator": tmp_path / "evil-g.pt",
        "vgg": tmp_path / "evil-vgg.pth",
    }
    torch.save(checkpoint, files["checkpoint"])
    torch.save(
        {
            "format": "fastsr.model/1",
            "kind": "spsagan",
            "config": {"scale": 4},
            "state_dict": {"conv_first.weight": payload},
            "prior": None,
        },
        files["generator"],
    )
    torch.save({"features.0.weight": payload}, files["vgg"])
    return files, sentinel


@pytest.mark.parametrize("flag", ["--resume file", "--resume folder", "--pretrained", "--vgg-weights"])
def test_hostile_pickles_are_refused_in_one_line(flag, evil, image_dir, psnr_generator, tmp_path, capsys):
    files, sentinel = evil
    gan = ["--stage", "gan", "--random-vgg"]
    argv = {
        "--resume file": ["spsagan", "--resume", files["checkpoint"]],
        "--resume folder": ["spsagan", "--resume", files["run"]],
        "--pretrained": spsagan_args(image_dir, tmp_path / "r", *gan, "--pretrained", files["generator"]),
        "--vgg-weights": spsagan_args(
            image_dir,
            tmp_path / "r",
            "--stage",
            "gan",
            "--pretrained",
            psnr_generator,
            "--vgg-weights",
            files["vgg"],
        ),
    }[flag]
    code, err = call(argv, capsys)
    line = one_error_line(err, "spsagan")
    assert code == 2 and "refused to load" in line and "weights_only" not in line
    assert not sentinel.exists()
    assert not (tmp_path / "r").exists()


def test_a_hostile_checkpoint_through_a_real_command_line(evil):
    files, sentinel = evil
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTSR_DEBUG")}
    done = subprocess.run(
        [sys.executable, "-m", "fastsr.train", "spsagan", "--resume", str(files["checkpoint"])],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "refused to load" in one_error_line(done.stderr, "spsagan")
    assert not sentinel.exists()


@pytest.fixture(scope="module")
def torchscript_prior(tmp_path_factory) -> Path:
    """A benign TorchScript prior: (B, 3, H, W) → (B, 8, H, W) logits."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ts") / "prior.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 8, 1)), str(path))
    return path


def test_a_torchscript_prior_needs_trust_and_a_resume_asks_again(
    torchscript_prior, image_dir, tmp_path, monkeypatch, capsys
):
    sentinel = tmp_path / "LOADED"
    real_load = torch.jit.load

    def recording_load(*args, **kwargs):  # loading a program runs its author's code: record it
        sentinel.touch()
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", recording_load)
    out = tmp_path / "run"
    args = spsagan_args(image_dir, out, "--prior", "module", "--prior-module", torchscript_prior)
    code, err = call(args, capsys)
    line = one_error_line(err, "spsagan")
    assert code == 2 and "TorchScript program" in line and "--trust-prior-code" in line
    assert not sentinel.exists() and not out.exists()

    assert call([*args, "--trust-prior-code"], capsys)[0] == 0  # trusted: it loads and runs
    assert sentinel.exists() and load_training_state(out)["extra"]["prior"]["kind"] == "module"
    sentinel.unlink()

    # the permission is this invocation's, never the saved run's: a resume must give it again
    code, err = call(["spsagan", "--resume", out, "--iters", "3"], capsys)
    assert code == 2 and "--trust-prior-code" in one_error_line(err, "spsagan")
    assert not sentinel.exists() and load_training_state(out)["iteration"] == 2
    assert call(["spsagan", "--resume", out, "--iters", "3", "--trust-prior-code"], capsys)[0] == 0
    assert load_training_state(out)["iteration"] == 3


def test_a_hostile_pickle_named_as_prior_module_is_refused(evil, image_dir, tmp_path, capsys):
    files, sentinel = evil
    code, err = call(
        spsagan_args(
            image_dir,
            tmp_path / "r",
            "--prior",
            "module",
            "--prior-module",
            files["generator"],
            "--trust-prior-code",
        ),
        capsys,
    )
    assert code == 2 and "refused to load" in one_error_line(err, "spsagan")
    assert not sentinel.exists()


def test_raw_pickle_payload_is_refused_as_resume(tmp_path, capsys):
    sentinel = tmp_path / "PWNED"
    path = tmp_path / "raw.pkl"
    path.write_bytes(pickle.dumps(Payload(sentinel), protocol=2))
    code, err = call(["stagegan", "--resume", path], capsys)
    assert code == 2 and str(path) in one_error_line(err, "stagegan")
    assert not sentinel.exists()
