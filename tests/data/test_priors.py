"""fastsr.data.priors against maps written here, a float64 NumPy softmax, known k-means answers
and the same conv computed by hand."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastsr.data import (
    OST_CLASSES,
    ColourClusterPrior,
    ModulePrior,
    NpyFolderPrior,
    PriorSource,
    prior_from_spec,
)


def test_ost_classes():
    assert OST_CLASSES == ("background", "sky", "water", "grass", "mountain", "building", "plant", "animal")


# ---------------------------------------------------------------------------------------------
# NpyFolderPrior
# ---------------------------------------------------------------------------------------------


def _maps(s, h, w, seed):
    logits = np.random.default_rng(seed).normal(size=(s, h, w))
    e = np.exp(logits)
    return (e / e.sum(0)).astype(np.float32)


def test_npy_folder_prior(tmp_path):
    a, b = _maps(8, 23, 30, 0), _maps(8, 20, 20, 1)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b.astype(np.float16))
    prior = NpyFolderPrior(tmp_path)
    out = prior(torch.rand(1, 3, 20, 28), ["a"])  # stored map 3 × 2 larger: cropped top-left
    assert out.shape == (1, 8, 20, 28) and out.dtype == torch.float32
    torch.testing.assert_close(out[0], torch.from_numpy(a[:, :20, :28]), rtol=0, atol=0)
    out = prior(torch.rand(2, 3, 20, 20, dtype=torch.float64), ["b", "a"])
    assert out.dtype == torch.float64
    torch.testing.assert_close(
        out[0], torch.from_numpy(b.astype(np.float16).astype(np.float64)), rtol=0, atol=0
    )
    torch.testing.assert_close(out.sum(1), torch.ones(2, 20, 20, dtype=torch.float64), rtol=0, atol=2e-3)


def test_npy_folder_prior_errors(tmp_path):
    np.save(tmp_path / "a.npy", _maps(8, 20, 20, 0))
    np.save(tmp_path / "four.npy", _maps(4, 20, 20, 0))
    prior = NpyFolderPrior(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing\.npy"):
        prior(torch.rand(1, 3, 20, 20), ["missing"])
    with pytest.raises(ValueError, match=r"four\.npy must be \(S=8, H, W\); got shape \(4, 20, 20\)"):
        prior(torch.rand(1, 3, 20, 20), ["four"])
    with pytest.raises(ValueError, match=r"a\.npy must be \(8, 24…39, 20…35\)"):
        prior(torch.rand(1, 3, 24, 20), ["a"])  # stored map smaller than the input
    with pytest.raises(ValueError, match=r"a\.npy must be \(8, 4…19, 4…19\)"):
        prior(torch.rand(1, 3, 4, 4), ["a"])  # far larger: not a mod crop
    with pytest.raises(ValueError, match="names must list the 2 image stems"):
        prior(torch.rand(2, 3, 20, 20), ["a"])
    with pytest.raises(ValueError, match="names must list"):
        prior(torch.rand(1, 3, 20, 20))
    with pytest.raises(ValueError, match=r"mr must be a floating \(B, 3, H, W\)"):
        prior(torch.rand(3, 20, 20), ["a"])
    with pytest.raises(FileNotFoundError, match="folder"):
        NpyFolderPrior(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------
# ColourClusterPrior
# ---------------------------------------------------------------------------------------------

COLOURS = np.array([[0.9, 0.1, 0.1], [0.1, 0.2, 0.8], [0.95, 0.95, 0.9]])  # red, blue, near-white


def _blocks(seed=0, noise=0.0):
    """(3, 30, 30): three vertical stripes of COLOURS, plus Gaussian noise."""
    img = (
        np.repeat(COLOURS[:, None, :], 10, axis=0).reshape(30, 3).T[:, None, :].repeat(30, axis=1)
    )  # (3, 30, 30)
    img = img + noise * np.random.default_rng(seed).normal(size=img.shape)
    return torch.from_numpy(img).float()


def _reference(mr, centroids, temperature):
    """softmax_k(−‖x − μ_k‖² / T) in float64 NumPy."""
    x = mr.double().numpy()[:, None]  # (B, 1, 3, H, W)
    mu = np.asarray(centroids, np.float64)[None, :, :, None, None]  # (1, S, 3, 1, 1)
    z = -((x - mu) ** 2).sum(2) / temperature  # (B, S, H, W)
    z -= z.max(1, keepdims=True)
    return torch.from_numpy(np.exp(z) / np.exp(z).sum(1, keepdims=True))


def test_colour_prior_finds_known_colours():
    prior = ColourClusterPrior.fit([_blocks(), _blocks()], num_classes=3, seed=0)
    # pure colours: the centroids are the colours, sorted by luma (blue, red, near-white)
    order = np.argsort(COLOURS @ [0.299, 0.587, 0.114])
    torch.testing.assert_close(prior.centroids, torch.tensor(COLOURS[order]).float(), rtol=0, atol=1e-6)
    assert prior.temperature == pytest.approx(1e-4)  # zero distance to the nearest centroid → floor


def test_colour_prior_probabilities():
    images = [_blocks(seed, noise=0.05).clamp(0, 1) for seed in range(3)]
    prior = ColourClusterPrior.fit(images, num_classes=5, seed=1, max_pixels=1000)
    assert prior.num_classes == 5 and 0 < prior.temperature < 0.05
    mr = torch.rand(2, 3, 9, 11)
    out = prior(mr)
    assert out.shape == (2, 5, 9, 11)
    torch.testing.assert_close(out.sum(1), torch.ones(2, 9, 11), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        out.double(), _reference(mr, prior.centroids, prior.temperature), rtol=0, atol=1e-5
    )
    # a pixel of centroid k's colour is assigned to k
    pure = prior.centroids.T[None, :, :, None]  # (1, 3, S, 1)
    assert torch.equal(prior(pure).argmax(1).flatten(), torch.arange(5))
    # soft but not uniform on the data it was fit on
    peak = prior(images[0][None]).max(1).values.mean()
    assert 0.5 < peak < 1


def test_colour_prior_deterministic_for_a_seed():
    images = torch.rand(2, 3, 40, 40)
    a = ColourClusterPrior.fit(images, seed=3, max_pixels=500)
    b = ColourClusterPrior.fit(images, seed=3, max_pixels=500)
    assert a.spec() == b.spec()
    assert torch.equal(a(images), b(images))
    c = ColourClusterPrior.fit(images, seed=4, max_pixels=500, temperature=0.5)
    assert c.temperature == 0.5 and not torch.equal(c.centroids, a.centroids)


def test_colour_prior_errors():
    with pytest.raises(ValueError, match=r"centroids must be \(S, 3\)"):
        ColourClusterPrior(torch.rand(4, 2), 0.1)
    with pytest.raises(ValueError, match="temperature must be a positive"):
        ColourClusterPrior(torch.rand(4, 3), 0.0)
    with pytest.raises(ValueError, match="at least num_classes = 8 distinct colours"):
        ColourClusterPrior.fit([_blocks()], num_classes=8)
    with pytest.raises(ValueError, match=r"images\[0\] must be a floating \(3, H, W\)"):
        ColourClusterPrior.fit([torch.zeros(3, 4, 4, dtype=torch.uint8)])


# ---------------------------------------------------------------------------------------------
# ModulePrior
# ---------------------------------------------------------------------------------------------


def _conv(num_classes=4, stride=1):
    torch.manual_seed(0)
    return nn.Conv2d(3, num_classes, 3, stride=stride, padding=1)


def test_module_prior_logits_and_input_range():
    conv = _conv()
    prior = ModulePrior(conv, 4, input_range=(-1, 1))
    mr = torch.rand(2, 3, 12, 10)
    expected = F.conv2d(2 * mr - 1, conv.weight, conv.bias, padding=1).softmax(1)
    torch.testing.assert_close(prior(mr), expected)
    assert not prior(mr.requires_grad_()).requires_grad  # priors are inputs, never trained through


def test_module_prior_probabilities_resized():
    conv = _conv(stride=2)
    prior = ModulePrior(nn.Sequential(conv, nn.Softmax(dim=1)), 4, outputs="probabilities")
    mr = torch.rand(1, 3, 12, 10)
    half = F.conv2d(mr, conv.weight, conv.bias, stride=2, padding=1).softmax(1)  # (1, 4, 6, 5)
    out = prior(mr)
    assert out.shape == (1, 4, 12, 10)
    torch.testing.assert_close(out, F.interpolate(half, size=(12, 10), mode="bilinear", align_corners=False))
    torch.testing.assert_close(out.sum(1), torch.ones(1, 12, 10))


def test_module_prior_errors():
    with pytest.raises(ValueError, match="outputs must be one of"):
        ModulePrior(_conv(), 4, outputs="scores")
    with pytest.raises(ValueError, match="input_range"):
        ModulePrior(_conv(), 4, input_range=(1, 0))
    with pytest.raises(ValueError, match=r"module must return \(B=1, S=8, h, w\) logits; got \(1, 4, 6, 6\)"):
        ModulePrior(_conv(), 8)(torch.rand(1, 3, 6, 6))
    with pytest.raises(ValueError, match="no spec"):
        ModulePrior(_conv(), 4).spec()


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_module_prior_torchscript_round_trip(tmp_path):
    conv = _conv(8)
    torch.jit.save(torch.jit.script(conv), str(tmp_path / "seg.pt"))
    with pytest.raises(ValueError, match=r"seg\.pt is a TorchScript program: loading it runs the code"):
        ModulePrior.load(tmp_path / "seg.pt", 8, input_range=(-1, 1))  # programs need trust by name
    with pytest.raises(ValueError, match="trust-prior-code"):
        prior_from_spec({"kind": "module", "path": str(tmp_path / "seg.pt")})
    prior = ModulePrior.load(tmp_path / "seg.pt", 8, input_range=(-1, 1), trust_code=True)
    mr = torch.rand(1, 3, 7, 9)
    expected = F.conv2d(2 * mr - 1, conv.weight, conv.bias, padding=1).softmax(1)
    torch.testing.assert_close(prior(mr), expected)
    spec = json.loads(json.dumps(prior.spec()))
    assert spec == {
        "kind": "module",
        "path": str(tmp_path / "seg.pt"),
        "num_classes": 8,
        "input_range": [-1.0, 1.0],
        "outputs": "logits",
    }
    rebuilt = prior_from_spec(spec, trust_code=True)
    assert isinstance(rebuilt, ModulePrior)
    torch.testing.assert_close(rebuilt(mr), expected)
    minimal = prior_from_spec(
        {"kind": "module", "path": str(tmp_path / "seg.pt")}, trust_code=True
    )  # defaults: 8, [0, 1], logits
    torch.testing.assert_close(minimal(mr), F.conv2d(mr, conv.weight, conv.bias, padding=1).softmax(1))
    assert minimal.to("cpu") is minimal
    with pytest.raises(FileNotFoundError, match=r"prior module .*missing\.pt does not exist"):
        ModulePrior.load(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    with pytest.raises(
        ValueError,
        match=r"bad\.pt must be a Stage-GAN model file, a TorchScript file or a "
        r"torch.export program; got a file of another kind",
    ):
        ModulePrior.load(tmp_path / "bad.pt", trust_code=True)


def test_module_prior_torch_export_round_trip(tmp_path):
    conv = _conv(8)
    mr = torch.rand(2, 3, 7, 9)
    dims = {"input": {0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}}
    torch.export.save(torch.export.export(conv, (mr,), dynamic_shapes=dims), str(tmp_path / "seg.pt2"))
    with pytest.raises(ValueError, match=r"seg\.pt2 is a torch.export program: loading it runs the code"):
        prior_from_spec({"kind": "module", "path": str(tmp_path / "seg.pt2")})
    prior = prior_from_spec(
        {"kind": "module", "path": str(tmp_path / "seg.pt2"), "input_range": [-1, 1]}, trust_code=True
    )
    for x in (mr, torch.rand(1, 3, 5, 6)):
        torch.testing.assert_close(
            prior(x), F.conv2d(2 * x - 1, conv.weight, conv.bias, padding=1).softmax(1)
        )
    (tmp_path / "bad.pt2").write_bytes(b"not a zip")  # the suffix does not make it a program
    with pytest.raises(ValueError, match=r"bad\.pt2 must be a Stage-GAN model file.*another kind"):
        ModulePrior.load(tmp_path / "bad.pt2", trust_code=True)


# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------


def test_prior_from_spec_round_trips(tmp_path):
    np.save(tmp_path / "a.npy", _maps(8, 6, 6, 0))
    mr = torch.rand(1, 3, 6, 6)
    sources = [NpyFolderPrior(tmp_path), ColourClusterPrior.fit(torch.rand(3, 30, 30), seed=0)]
    for source in sources:
        assert isinstance(source, PriorSource)
        spec = json.loads(json.dumps(source.spec()))
        rebuilt = prior_from_spec(spec)
        assert type(rebuilt) is type(source) and rebuilt.spec() == spec
        torch.testing.assert_close(rebuilt(mr, ["a"]), source(mr, ["a"]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="'kind' one of"):
        prior_from_spec({"kind": "oracle"})
    with pytest.raises(ValueError, match=r"needs \('centroids', 'temperature'\); missing \['temperature'\]"):
        prior_from_spec({"kind": "colour_clusters", "centroids": [[0, 0, 0]]})
