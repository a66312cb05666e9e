"""SPSAGAN's generator and discriminator against independent references: the generator's wiring
against a functional forward written here over its submodules (RRDB trunk, SPSA layer, ESRGAN's
upsampler), its ×4 no-SPSA layout against fastsr.RRDBNet (itself tested against BasicSR), the
discriminator against BasicSR's VGGStyleDiscriminator layout and forward written out here."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastsr import RRDBNet
from fastsr._io import NoDigestWarning
from fastsr.models import SPSAGenerator, VGGStyleDiscriminator
from fastsr.ops.imresize import imresize

NF, NB, GC, S = 16, 1, 8, 8  # small widths: num_feat, num_block, num_grow_ch, seg_channels
H, W = 8, 8  # LR size
SPARSE = [[[[], [1], [2], [1, 3], [2, 4]], [[], [], [], [], []], None]]  # one RRSB block


def make(scale=4, use_spsa=True, **kwargs):
    kwargs = {"num_feat": NF, "num_block": NB, "num_grow_ch": GC, "seg_channels": S, **kwargs}
    return SPSAGenerator(scale=scale, use_spsa=use_spsa, **kwargs)


def randomized(module, seed=0):
    """Every conv weight N(0, 1/fan_in), bias N(0, 0.1²), float64: no branch hides in a small
    term (the default 0.1-scaled dense blocks would barely move the output)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight[0].numel()))
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return module.double()


def inputs(scale, batch=2, h=H, w=W, seed=1):
    g = torch.Generator().manual_seed(seed)
    lr = torch.rand(batch, 3, h, w, generator=g, dtype=torch.float64)
    prior = torch.rand(batch, S, scale * h, scale * w, generator=g, dtype=torch.float64)
    return lr, prior.softmax(1)


def reference_forward(net, lr, prior):
    """The documented data flow, written with F.conv2d over the net's own submodules."""
    lrelu = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
    conv = lambda m, t: F.conv2d(t, m.weight, m.bias, padding=1)  # noqa: E731
    feat = conv(net.conv_first, lr)
    trunk = feat
    for block in net.body:  # RRDBs: tested against BasicSR in tests/layers/test_rrdb.py
        trunk = block(trunk)
    feat = feat + conv(net.conv_body, trunk)
    if prior is not None:
        feat = net.spsa(feat, prior)  # SPSA layer: tested in tests/layers/test_spsa_layer.py
    for k in range(1, int(math.log2(net.scale)) + 1):
        feat = feat.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest ×2
        feat = lrelu(conv(getattr(net, f"conv_up{k}"), feat))
    return conv(net.conv_last, lrelu(conv(net.conv_hr, feat)))


def with_gamma(net, value):
    with torch.no_grad():
        net.spsa.gamma.fill_(value)
    return net


# ---------------------------------------------------------------------------------------------
# Generator: shapes and wiring
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_spsa", [True, False], ids=["spsa", "no-spsa"])
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_generator_matches_reference_forward(scale, use_spsa):
    net = randomized(make(scale, use_spsa))
    if use_spsa:
        with_gamma(net, 0.7)  # the attention output counts
    lr, prior = inputs(scale)
    prior = prior if use_spsa else None
    out = net(lr, prior)
    assert out.shape == (2, 3, scale * H, scale * W)
    assert [name for name, _ in net.named_children() if name.startswith("conv_up")] == [
        f"conv_up{k}" for k in range(1, int(math.log2(scale)) + 1)
    ]
    torch.testing.assert_close(out, reference_forward(net, lr, prior), rtol=1e-10, atol=1e-10)


def test_generator_odd_sizes_and_heads():
    net = randomized(make(4, heads=2, qk_channels=4))
    with_gamma(net, -0.3)
    lr, prior = inputs(4, batch=3, h=5, w=7)
    out = net(lr, prior)
    assert out.shape == (3, 3, 20, 28)
    torch.testing.assert_close(out, reference_forward(net, lr, prior), rtol=1e-10, atol=1e-10)


def test_spsa_layer_settings():
    net = make(8, heads=2)
    assert net.spsa.prior_stride == 8 and net.spsa.transform.kernel_size == (8, 8)
    assert net.spsa.qk_channels == NF // 8 == net.qk_channels and net.spsa.heads == 2
    assert net.spsa.channels == NF and net.spsa.seg_channels == S
    assert make(4, use_spsa=False).spsa is None


def test_x4_without_spsa_is_basicsr_rrdbnet():
    """Same keys in the same order and shapes as RRDBNet (BasicSR's), and the same output."""
    ref = randomized(RRDBNet(3, 3, 4, NF, 2, GC, None), seed=3)
    net = make(4, use_spsa=False, num_block=2).double()
    ref_sd, net_sd = ref.state_dict(), net.state_dict()
    assert list(net_sd) == list(ref_sd)
    assert all(net_sd[k].shape == ref_sd[k].shape for k in ref_sd)
    net.load_state_dict(ref_sd)
    lr, _ = inputs(4)
    torch.testing.assert_close(net(lr), ref(lr), rtol=1e-10, atol=1e-10)


def test_spsa_keys_are_the_only_extra_keys():
    plain, spsa = set(make(4, use_spsa=False).state_dict()), set(make(4).state_dict())
    extra = spsa - plain
    assert plain < spsa and extra and all(k.startswith("spsa.") for k in extra)
    assert {"spsa.gamma", "spsa.alpha", "spsa.transform.weight", "spsa.alpha_initialized"} <= extra


def test_global_skip_adds_matlab_bicubic():
    net = make(4, global_skip=True).double()
    with torch.no_grad():  # the learned branch outputs 0: only the skip is left
        net.conv_last.weight.zero_()
        net.conv_last.bias.zero_()
    lr, prior = inputs(4)
    torch.testing.assert_close(net(lr, prior), imresize(lr, 4), rtol=1e-12, atol=1e-12)


def test_sparse_connections_build_rrsb_blocks():
    net = make(2, connections=SPARSE)
    assert not net.is_dense
    assert net.body[0].rdb2.conv5.in_channels == NF  # x_0 only
    assert net.config()["connections"] == [
        [[[], [1], [2], [1, 3], [2, 4]], [[], [], [], [], []], [[], [1], [1, 2], [1, 2, 3], [1, 2, 3, 4]]]
    ]


def test_backends_agree():
    lr, prior = inputs(2)
    outs = []
    for backend in ("reference", "torch"):
        torch.manual_seed(0)
        net = randomized(make(2, backend=backend))
        outs.append(with_gamma(net, 0.5)(lr, prior))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Generator: initialisation and gradients
# ---------------------------------------------------------------------------------------------


def test_esrgan_initialisation():
    torch.manual_seed(0)
    net = SPSAGenerator(scale=8, num_feat=64, num_block=1, num_grow_ch=32)
    w = net.body[0].rdb3.conv5.weight  # kaiming_normal(fan_in) · 0.1, bias 0
    assert abs(w.std().item() / (0.1 * math.sqrt(2 / (w.shape[1] * 9))) - 1) < 0.05
    assert torch.count_nonzero(net.body[0].rdb3.conv5.bias) == 0
    for conv in (net.conv_up3, net.conv_body):  # PyTorch's default: std = 1 / sqrt(3 · fan_in)
        assert abs(conv.weight.std().item() * math.sqrt(3 * 64 * 9) - 1) < 0.05
    assert net.spsa.gamma.item() == 0.0


def test_gradients_reach_every_parameter():
    net = randomized(make(4))
    with_gamma(net, 0.5)
    lr, prior = inputs(4)
    net(lr, prior)  # first forward initialises α; the next one trains it
    net.zero_grad()
    (net(lr, prior) ** 2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert {"spsa.gamma", "spsa.alpha", "spsa.f_seg.weight"} <= {n for n, _ in net.named_parameters()}


# ---------------------------------------------------------------------------------------------
# PSNR-pretrained weights into the SPSA generator
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["state_dict", "save_file", "basicsr", "wrapped"])
def test_psnr_weights_load_and_spsa_starts_as_identity(form, tmp_path):
    psnr = randomized(make(4, use_spsa=False), seed=5)
    gen = make(4).double()
    if form == "state_dict":
        source = psnr.state_dict()
    elif form == "save_file":
        source = tmp_path / "psnr.pth"
        psnr.save(source)
    elif form == "wrapped":  # {"state_dict": …} as fastsr 0.1's model files hold it
        source = {"format": "fastsr.model/1", "config": psnr.config(), "state_dict": psnr.state_dict()}
    else:  # BasicSR checkpoint: params_ema preferred, DDP prefixes
        source = {"params_ema": {f"module.{k}": v for k, v in psnr.state_dict().items()},
                  "params": {}}  # fmt: skip
    left = gen.load_psnr_weights(source)
    assert left and all(k.startswith("spsa.") for k in left)
    assert set(left) == {k for k in gen.state_dict() if k.startswith("spsa.")}
    lr, prior = inputs(4)
    assert torch.equal(gen(lr, prior), psnr(lr))  # γ = 0: exactly the PSNR network


def test_psnr_weights_errors_leave_the_model_unchanged(tmp_path):
    gen = make(4).double()
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    spsa_file = tmp_path / "spsa.pth"
    make(4).double().save(spsa_file)
    with pytest.raises(ValueError, match=r"spsa\.gamma.*already has an SPSA layer"):
        gen.load_psnr_weights(spsa_file)
    with pytest.raises(ValueError, match=r"missing keys \['conv_up2.weight'"):
        gen.load_psnr_weights(make(2, use_spsa=False).double().state_dict())
    with pytest.raises(ValueError, match=r"unexpected keys \['conv_up3.weight'"):
        gen.load_psnr_weights(make(8, use_spsa=False).double().state_dict())
    with pytest.raises(ValueError, match="shapes do not match"):
        gen.load_psnr_weights(make(4, use_spsa=False, num_feat=8).state_dict())
    after = gen.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    net = randomized(make(2, connections=SPARSE, heads=2, qk_channels=4, global_skip=True))
    with_gamma(net, 0.25)
    lr, prior = inputs(2)
    out = net(lr, prior)  # initialises α
    path = tmp_path / "sub" / "gen.pth"
    net.save(path)
    raw = torch.load(path, weights_only=True)
    assert (raw["format"], raw["kind"]) == ("fastsr.model/1", "spsagan") and raw["config"] == net.config()
    # fastsr 0.1's SPSAGenerator.save layout still loads
    old = tmp_path / "old.pth"
    torch.save(
        {"format": "fastsr.spsagan.generator/1", "config": raw["config"], "params": raw["params"]}, old
    )
    with pytest.warns(NoDigestWarning):
        torch.testing.assert_close(SPSAGenerator.from_checkpoint(old)(lr, prior), out, rtol=1e-10, atol=1e-10)
    back = SPSAGenerator.from_checkpoint(path, backend="reference")
    assert back.config() == net.config() and back.backend == "reference"
    assert back.conv_first.weight.dtype == torch.float64
    assert bool(back.spsa.alpha_initialized) and back.spsa.alpha.item() == net.spsa.alpha.item()
    torch.testing.assert_close(back(lr, prior), out, rtol=1e-10, atol=1e-10)
    assert not list(path.parent.glob(".*.tmp"))
    assert back.needs_prior and not make(4, use_spsa=False).needs_prior


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "gen.pth"
    make(4, use_spsa=False).save(path)
    old = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        make(4).save(path)
    assert path.read_bytes() == old and not list(tmp_path.glob(".*.tmp"))


def test_from_checkpoint_rejects_foreign_files(tmp_path):
    rrdb = tmp_path / "rrdb.pth"
    RRDBNet(3, 3, 4, NF, NB, GC).save(rrdb)  # a model file, of another kind
    with pytest.raises(ValueError, match="holds a 'rrdbnet' generator, not an SPSAGenerator"):
        SPSAGenerator.from_checkpoint(rrdb)
    assert SPSAGenerator(scale=4, num_feat=NF, num_block=NB, num_grow_ch=GC).load_psnr_weights(
        rrdb
    )  # its weights fit
    with pytest.raises(ValueError, match=r"not an ESRGAN / Real-ESRGAN RRDBNet: unknown keys \['spsa\."):
        SPSAGenerator.from_checkpoint(make(4).state_dict())  # a bare state dict has no config
    bad = {
        "format": "fastsr.model/1",
        "kind": "spsagan",
        "config": {**make(4).config(), "depth": 3},
        "params": {},
    }
    with pytest.raises(ValueError, match=r"unknown keys \['depth'\]"):
        SPSAGenerator.from_checkpoint(bad)


# ---------------------------------------------------------------------------------------------
# Generator: bad arguments and inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 3, 16, 4.0, True])
def test_bad_scale(scale):
    with pytest.raises(ValueError, match=r"scale must be one of \(2, 4, 8\)"):
        make(scale)


def test_bad_arguments():
    with pytest.raises(ValueError, match="in_ch must equal out_ch"):
        make(4, in_ch=1, out_ch=3, global_skip=True)
    with pytest.raises(ValueError, match="num_feat must be a positive int"):
        make(4, num_feat=0)
    with pytest.raises(TypeError, match="use_spsa must be a bool"):
        make(4, use_spsa=1)
    with pytest.raises(ValueError, match="backend must be one of"):
        make(4, backend="cuda")
    with pytest.raises(ValueError, match="connections must be None or one entry per block"):
        make(4, connections=[None, None])


def test_bad_inputs():
    net = make(4).double()
    lr, prior = inputs(4)
    with pytest.raises(ValueError, match=r"prior is required.*\(2, 8, 32, 32\)"):
        net(lr)
    with pytest.raises(ValueError, match=r"prior must be .* = \(2, 8, 32, 32\).*got \(2, 8, 16, 16\)"):
        net(lr, prior[..., :16, :16])
    with pytest.raises(ValueError, match=r"got \(2, 7, 32, 32\)"):
        net(lr, prior[:, :7])
    with pytest.raises(TypeError, match="prior must have lr's dtype"):
        net(lr, prior.float())
    with pytest.raises(ValueError, match="lr must be .* in_ch = 3"):
        net(lr[:, :1], prior)
    with pytest.raises(ValueError, match="no SPSA layer"):
        make(4, use_spsa=False).double()(lr, prior)


# ---------------------------------------------------------------------------------------------
# Discriminator: BasicSR's layout and forward
# ---------------------------------------------------------------------------------------------


def basicsr_parameter_names(stages):
    """BasicSR's VGGStyleDiscriminator parameter names (conv5 only at 256), in order."""
    names = ["conv0_0.weight", "conv0_0.bias", "conv0_1.weight", "bn0_1.weight", "bn0_1.bias"]
    for k in range(1, stages):
        names += [f"conv{k}_0.weight", f"bn{k}_0.weight", f"bn{k}_0.bias"]
        names += [f"conv{k}_1.weight", f"bn{k}_1.weight", f"bn{k}_1.bias"]
    return names + ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"]


def basicsr_discriminator_forward(d, x, stages, pooled=False):
    """BasicSR's forward, written with F.* over d's parameters (BatchNorm in training mode)."""
    lrelu = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
    bn = lambda t, m: F.batch_norm(t, None, None, m.weight, m.bias, training=True, eps=1e-5)  # noqa: E731
    feat = lrelu(F.conv2d(x, d.conv0_0.weight, d.conv0_0.bias, padding=1))
    feat = lrelu(bn(F.conv2d(feat, d.conv0_1.weight, stride=2, padding=1), d.bn0_1))
    for k in range(1, stages):
        feat = lrelu(bn(F.conv2d(feat, getattr(d, f"conv{k}_0").weight, padding=1), getattr(d, f"bn{k}_0")))
        feat = lrelu(
            bn(F.conv2d(feat, getattr(d, f"conv{k}_1").weight, stride=2, padding=1), getattr(d, f"bn{k}_1"))
        )
    if pooled:
        feat = feat.mean((2, 3))
    feat = lrelu(F.linear(feat.reshape(feat.shape[0], -1), d.linear1.weight, d.linear1.bias))
    return F.linear(feat, d.linear2.weight, d.linear2.bias)


def test_discriminator_128_matches_basicsr_names_and_shapes():
    d = VGGStyleDiscriminator(3, 64, 128)
    params = dict(d.named_parameters())
    assert list(params) == basicsr_parameter_names(5)
    assert params["conv0_0.weight"].shape == (64, 3, 3, 3)
    assert params["conv1_1.weight"].shape == (128, 128, 4, 4)
    assert params["conv3_0.weight"].shape == (512, 256, 3, 3)
    assert params["conv4_1.weight"].shape == (512, 512, 4, 4)
    assert params["linear1.weight"].shape == (100, 64 * 8 * 4 * 4)
    assert params["linear2.weight"].shape == (1, 100)
    assert d.conv0_1.bias is None and d.conv2_0.bias is None
    assert {k for k in d.state_dict() if "running" in k or "num_batches" in k}  # BN buffers


@pytest.mark.parametrize("size,stages,side", [(128, 5, 4), (256, 6, 4), (96, 5, 3), (192, 6, 3), (64, 5, 2)])
def test_discriminator_fixed_sizes(size, stages, side):
    torch.manual_seed(0)
    d = VGGStyleDiscriminator(3, 4, size).double()
    assert list(dict(d.named_parameters())) == basicsr_parameter_names(stages)
    assert d.linear1.in_features == 4 * 8 * side * side
    x = torch.rand(3, 3, size, size, dtype=torch.float64)
    out = d(x)
    assert out.shape == (3, 1)
    torch.testing.assert_close(out, basicsr_discriminator_forward(d, x, stages), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shape", [(2, 32, 32), (3, 48, 80), (2, 100, 64)])
def test_discriminator_pooled_any_size(shape):
    torch.manual_seed(0)
    d = VGGStyleDiscriminator(3, 4, None).double()
    assert list(dict(d.named_parameters())) == basicsr_parameter_names(5)
    assert d.linear1.in_features == 4 * 8
    x = torch.rand(shape[0], 3, *shape[1:], dtype=torch.float64)
    out = d(x)
    assert out.shape == (shape[0], 1)
    torch.testing.assert_close(out, basicsr_discriminator_forward(d, x, 5, pooled=True), rtol=1e-9, atol=1e-9)


def test_discriminator_bad_sizes():
    for size in (100, 16, 0, 128.0):
        with pytest.raises(ValueError, match="input_size must be a multiple of 32"):
            VGGStyleDiscriminator(3, 8, size)
    d = VGGStyleDiscriminator(3, 8, 128)
    with pytest.raises(ValueError, match=r"x must be 128×128.*got 96×96"):
        d(torch.rand(2, 3, 96, 96))
    with pytest.raises(ValueError, match=r"got 128×96"):
        d(torch.rand(2, 3, 128, 96))
    with pytest.raises(ValueError, match="in_ch = 3"):
        d(torch.rand(2, 1, 128, 128))
    with pytest.raises(ValueError, match=r"at least 32×32.*got 32×16"):
        VGGStyleDiscriminator(3, 8, None)(torch.rand(2, 3, 32, 16))
