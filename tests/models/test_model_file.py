"""The one model-file format: every generator writes fastsr.model/1 through its kind in the one
table, reads back bit for bit, and every older layout still reads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastsr._io import NoDigestWarning
from fastsr.models import (
    KINDS,
    MODEL_FORMAT,
    RRDBNet,
    SPSAGenerator,
    StageGAN,
    StageGANUpscaler,
    load_model,
    read_model_file,
    save_model,
)
from fastsr.models.kinds import kind_of

TINY = dict(num_feat=8, num_block=1, num_grow_ch=4)


def generators() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "rrdbnet": RRDBNet(3, 3, scale=4, **TINY),
        "spsagan": SPSAGenerator(scale=2, **TINY, use_spsa=True),
        "stagegan": StageGANUpscaler(StageGAN(scale=4, image_size=32, ngf=4, n_blocks=1)),
    }


def test_the_table_and_the_classes_agree():
    assert set(KINDS) == {"rrdbnet", "spsagan", "stagegan"}
    for kind, cls in KINDS.items():
        assert cls.MODEL_KIND == kind
    with pytest.raises(TypeError, match="one of fastsr's generators"):
        kind_of(nn.Conv2d(1, 1, 1))

    class Sub(RRDBNet):
        pass

    with pytest.raises(TypeError, match="got Sub"):  # could not be read back as what it is
        kind_of(Sub(3, 3, **TINY))


@pytest.mark.parametrize("kind", ["rrdbnet", "spsagan", "stagegan"])
def test_every_generator_round_trips_through_one_format(tmp_path, kind):
    g = generators()[kind].eval()
    path = tmp_path / f"{kind}.pt"
    g.save(path)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format", "kind", "config", "params", "prior", "digest"}
    assert (raw["format"], raw["kind"]) == (MODEL_FORMAT, kind)
    file = read_model_file(path)
    assert file.kind == kind and file.layout == MODEL_FORMAT and file.config == g.config()
    back = load_model(path)
    assert type(back) is type(g) and not back.training
    assert back.state_dict().keys() == g.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), g.state_dict().values()))
    assert back.needs_prior == (kind == "spsagan")
    # the generator interface: forward(lr, prior=None)
    lr = torch.rand(1, 3, 8, 8)
    prior = torch.rand(1, 8, 16, 16).softmax(1) if back.needs_prior else None
    with torch.no_grad():
        assert torch.equal(back(lr, prior), g(lr, prior))
    if not back.needs_prior:
        with pytest.raises(ValueError, match="prior"):
            back(lr, torch.rand(1, 8, 32, 32))


def test_save_model_keeps_the_prior_spec(tmp_path):
    g = generators()["spsagan"]
    spec = {
        "kind": "colour_clusters",
        "centroids": [[0.0, 0.0, 0.0]] * 8,
        "temperature": 0.1,
        "num_classes": 8,
    }
    save_model(tmp_path / "g.pt", g, spec)
    assert read_model_file(tmp_path / "g.pt").prior == spec


def test_older_layouts_still_read(tmp_path):
    g = generators()
    old = {
        "RRDBNet.save": {"config": g["rrdbnet"].config(), "params": g["rrdbnet"].state_dict()},
        "SPSAGenerator.save": {
            "format": "fastsr.spsagan.generator/1",
            "config": g["spsagan"].config(),
            "params": g["spsagan"].state_dict(),
        },
        "StageGAN.save": {
            "format": "fastsr.stagegan/1",
            "config": g["stagegan"].net.config(),
            "params": g["stagegan"].net.state_dict(),
        },
        "fastsr.model/1": {
            "format": MODEL_FORMAT,
            "kind": "spsagan",
            "config": g["spsagan"].config(),
            "state_dict": g["spsagan"].state_dict(),
            "prior": None,
        },  # fastsr 0.1's trainers
    }
    for layout, state in old.items():
        path = tmp_path / "old.pt"
        torch.save(state, path)
        with pytest.warns(NoDigestWarning):
            file = read_model_file(path)
        assert file.layout == layout
        with pytest.warns(NoDigestWarning):
            model = load_model(path)
        expected = g[file.kind]
        assert all(
            torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values())
        )


@pytest.mark.filterwarnings("ignore::fastsr._io.NoDigestWarning")
@pytest.mark.parametrize(
    "state, message",
    [
        ({"format": "fastsr.train/1"}, "is a training checkpoint; pass its run's generator.pt"),
        ({"format": "fastsr.rrsb/1"}, "is an RRSB connection config"),
        ({"params_ema": {"w": torch.zeros(1)}}, "BasicSR checkpoint"),
        ({"w": torch.zeros(1)}, "bare state dict"),
        ({"format": MODEL_FORMAT, "kind": "vdsr", "config": {}, "params": {}}, "unknown model kind 'vdsr'"),
        ({"format": MODEL_FORMAT, "kind": "rrdbnet", "params": {}}, "needs a 'config' dict and 'params'"),
        (
            {"format": MODEL_FORMAT, "kind": "rrdbnet", "config": {}, "params": {"w": 1}},
            "'params' must hold tensors",
        ),
        ({"format": "other/1"}, "must be a 'fastsr.model/1' model file; got format 'other/1'"),
    ],
)
def test_what_is_not_a_model_file_is_named(tmp_path, state, message):
    path = tmp_path / "x.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=message) as info:
        read_model_file(path)
    assert "x.pt" in str(info.value)


@pytest.mark.filterwarnings("ignore::fastsr._io.NoDigestWarning")
def test_config_and_params_that_do_not_fit_are_errors(tmp_path):
    g = generators()["rrdbnet"]
    torch.save(
        {
            "format": MODEL_FORMAT,
            "kind": "rrdbnet",
            "config": {**g.config(), "num_feat": 16},
            "params": g.state_dict(),
            "prior": None,
        },
        tmp_path / "x.pt",
    )
    with pytest.raises(ValueError, match=r"x\.pt: its params do not fit its config"):
        load_model(tmp_path / "x.pt")
