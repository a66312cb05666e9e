"""python -m fastsr.export: a torch.export program with dynamic H and W that reproduces the
model, and safetensors that read back as the same model file."""

from __future__ import annotations

import pytest
import torch

from fastsr.data import ColourClusterPrior
from fastsr.export import main
from fastsr.inference import load_model as load_with_prior
from fastsr.inference import save_model
from fastsr.models import RRDBNet, SPSAGenerator, StageGAN, StageGANUpscaler, load_model


@pytest.fixture
def files(tmp_path):
    torch.manual_seed(0)
    rrdb = RRDBNet(3, 3, 2, 8, 1, 4).eval()  # ×2: pixel-unshuffle, inputs a multiple of 2
    rrdb.save(tmp_path / "rrdb.pt")
    spsa = SPSAGenerator(scale=2, num_feat=8, num_block=1, num_grow_ch=4).eval()
    with torch.no_grad():
        spsa.spsa.gamma.fill_(1.0)
        spsa(torch.rand(1, 3, 6, 6), torch.rand(1, 8, 12, 12).softmax(1))  # α from one batch
    save_model(tmp_path / "spsa.pt", spsa, ColourClusterPrior(torch.rand(8, 3), 0.1))
    StageGANUpscaler(StageGAN(scale=4, image_size=32, ngf=4, n_blocks=1)).save(tmp_path / "sg.pt")
    return tmp_path


def test_programs_have_dynamic_sizes_and_reproduce_the_model(files):
    assert main([str(files / "rrdb.pt"), "-o", str(files / "rrdb.pt2")]) == 0
    program = torch.export.load(str(files / "rrdb.pt2")).module()
    net = load_model(files / "rrdb.pt")
    for h, w in ((6, 10), (12, 4)):
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            torch.testing.assert_close(program(x), net(x), rtol=1e-5, atol=1e-5)
    assert main([str(files / "spsa.pt"), "-o", str(files / "spsa.pt2")]) == 0
    program = torch.export.load(str(files / "spsa.pt2")).module()
    g = load_model(files / "spsa.pt")
    lr, prior = torch.rand(1, 3, 5, 7), torch.rand(1, 8, 10, 14).softmax(1)
    with torch.no_grad():
        torch.testing.assert_close(program(lr, prior), g(lr, prior), rtol=1e-5, atol=1e-5)


def test_safetensors_read_back_as_the_same_model_file(files):
    assert main([str(files / "spsa.pt"), "-o", str(files / "spsa.safetensors")]) == 0
    a, b = load_with_prior(files / "spsa.pt"), load_with_prior(files / "spsa.safetensors")
    assert b.kind == "spsagan" and b.prior.spec() == a.prior.spec()
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.generator.state_dict().values(), b.generator.state_dict().values())
    )
    st = pytest.importorskip("safetensors.torch")  # other readers see the weights
    assert st.load_file(str(files / "spsa.safetensors")).keys() == a.generator.state_dict().keys()


def test_outputs_and_unsupported_exports_are_one_line_errors(files, capsys):
    assert main([str(files / "rrdb.pt"), "-o", str(files / "rrdb.pt")]) == 2
    assert "never overwritten" in capsys.readouterr().err
    (files / "x.pt2").write_text("mine")
    assert main([str(files / "rrdb.pt"), "-o", str(files / "x.pt2")]) == 2
    assert "already exists" in capsys.readouterr().err and (files / "x.pt2").read_text() == "mine"
    assert main([str(files / "sg.pt"), "-o", str(files / "sg.pt2")]) == 2
    assert "exports as safetensors only" in capsys.readouterr().err
    assert main([str(files / "sg.pt"), "-o", str(files / "sg.safetensors")]) == 0
    assert main([str(files / "rrdb.pt"), "-o", str(files / "x.onnx")]) == 2
    assert "--format must be one of" in capsys.readouterr().err


def test_the_console_script_dispatches_to_every_tool(capsys):
    from fastsr.__main__ import COMMANDS
    from fastsr.__main__ import main as fastsr_main

    assert fastsr_main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in COMMANDS)
    assert fastsr_main(["upscal"]) == 2 and "COMMAND must be one of" in capsys.readouterr().err
    for name in COMMANDS:
        with pytest.raises(SystemExit) as info:
            fastsr_main([name, "--help"])
        assert info.value.code == 0 and "usage:" in capsys.readouterr().out
