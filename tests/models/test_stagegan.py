"""Stage-GAN's networks against independent references: pix2pix's UnetGenerator,
ResnetGenerator and NLayerDiscriminator (junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py)
rebuilt here from its construction order — in-place activations included — for state-dict keys,
shapes and outputs; parameter counts against the per-layer arithmetic and the totals pix2pix /
CycleGAN print (54.414 M unet_256, 11.378 M resnet_9blocks with InstanceNorm, 2.769 M / 2.765 M
basic D); the PatchGAN's 30×30 output and 70×70 receptive field measured by backprop; the SPSA
U-Net against the pix2pix reference with the SPSA layer hooked in at the documented place."""

import functools
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastsr import SPSA
from fastsr._io import NoDigestWarning
from fastsr.models import (
    NLayerDiscriminator,
    ResnetGenerator,
    StageGAN,
    StageGANUpscaler,
    UnetGenerator,
    init_weights,
)
from fastsr.models.pix2pix import up_conv
from fastsr.ops.imresize import imresize


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These nets are tiny: OpenMP threads buy nothing and, on a busy machine, spin-wait for
    cores (0.2 s → 12 s for the checkpoint test with 2 threads on 2 loaded cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# pix2pix, rebuilt from its construction order (the reference)
# ---------------------------------------------------------------------------------------------


class RefUnetBlock(nn.Module):
    """pix2pix's UnetSkipConnectionBlock: in-place LeakyReLU / ReLU, forward cat([x, model(x)])."""

    def __init__(self, outer, inner, input_nc=None, sub=None, outermost=False, innermost=False,
                 norm=nn.BatchNorm2d, dropout=False):  # fmt: skip
        super().__init__()
        bias = norm is nn.InstanceNorm2d or getattr(norm, "func", None) is nn.InstanceNorm2d
        down = nn.Conv2d(input_nc or outer, inner, 4, 2, 1, bias=bias)
        if outermost:
            up = nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1)
            seq = [down, sub, nn.ReLU(True), up, nn.Tanh()]
        elif innermost:
            up = nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=bias)
            seq = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, norm(outer)]
        else:
            up = nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1, bias=bias)
            seq = [nn.LeakyReLU(0.2, True), down, norm(inner), sub, nn.ReLU(True), up, norm(outer)]
            seq += [nn.Dropout(0.5)] if dropout else []
        self.outermost = outermost
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class RefUnet(nn.Module):
    def __init__(self, in_nc, out_nc, num_downs, ngf=64, norm=nn.BatchNorm2d, dropout=True):
        super().__init__()
        b = RefUnetBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            b = RefUnetBlock(ngf * 8, ngf * 8, sub=b, norm=norm, dropout=dropout)
        b = RefUnetBlock(ngf * 4, ngf * 8, sub=b, norm=norm)
        b = RefUnetBlock(ngf * 2, ngf * 4, sub=b, norm=norm)
        b = RefUnetBlock(ngf, ngf * 2, sub=b, norm=norm)
        self.model = RefUnetBlock(out_nc, ngf, input_nc=in_nc, sub=b, outermost=True, norm=norm)

    def forward(self, x):
        return self.model(x)

    def level(self, k):
        """The block of level k (1 = outermost)."""
        block = self.model
        for _ in range(k - 1):
            block = block.model[1] if block.outermost else block.model[3]
        return block


class RefResnetBlock(nn.Module):
    def __init__(self, dim, norm, dropout, bias):
        super().__init__()
        seq = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm(dim), nn.ReLU(True)]
        seq += [nn.Dropout(0.5)] if dropout else []
        seq += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm(dim)]
        self.conv_block = nn.Sequential(*seq)

    def forward(self, x):
        return x + self.conv_block(x)


class RefResnet(nn.Module):
    def __init__(self, in_nc, out_nc, ngf=64, norm=nn.BatchNorm2d, dropout=False, n_blocks=9):
        super().__init__()
        bias = norm is nn.InstanceNorm2d or getattr(norm, "func", None) is nn.InstanceNorm2d
        seq = [nn.ReflectionPad2d(3), nn.Conv2d(in_nc, ngf, 7, bias=bias), norm(ngf), nn.ReLU(True)]
        for i in range(2):
            m = 2**i
            seq += [nn.Conv2d(ngf * m, ngf * m * 2, 3, 2, 1, bias=bias), norm(ngf * m * 2),
                    nn.ReLU(True)]  # fmt: skip
        seq += [RefResnetBlock(ngf * 4, norm, dropout, bias) for _ in range(n_blocks)]
        for i in range(2):
            m = 2 ** (2 - i)
            seq += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, 2, 1, output_padding=1, bias=bias),
                    norm(ngf * m // 2), nn.ReLU(True)]  # fmt: skip
        seq += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x)


class RefPatchGAN(nn.Module):
    def __init__(self, in_nc, ndf=64, n_layers=3, norm=nn.BatchNorm2d):
        super().__init__()
        bias = norm is nn.InstanceNorm2d or getattr(norm, "func", None) is nn.InstanceNorm2d
        seq = [nn.Conv2d(in_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=bias), norm(ndf * mult),
                    nn.LeakyReLU(0.2, True)]  # fmt: skip
        prev, mult = mult, min(2**n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=bias), norm(ndf * mult),
                nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, 1, 1)]  # fmt: skip
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x)


def on_meta(build):
    with torch.device("meta"):
        return build()


def key_shapes(net):
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


def randomized(net, seed=0):
    """Weights with some spread (BatchNorm affine and running statistics included), float64:
    init_weights' 0.02 would leave a deep net's output near 0 and hide wiring errors."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                fan_in = m.weight.shape[1] * m.weight[0, 0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in**0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(1 + 0.5 * torch.rand(m.running_var.shape, generator=g))
    return net.double()


def images(batch, ch, size, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.rand(batch, ch, size, size, generator=g, dtype=torch.float64) - 1


def same_output(ours, ref, *args, train=False, seed=0):
    """Our net's output and the reference's on the same weights; dropout draws seeded alike."""
    ours.train(train), ref.train(train)
    torch.manual_seed(seed)
    a = ours(*args)
    torch.manual_seed(seed)
    b = ref(args[0])
    return a, b


# ---------------------------------------------------------------------------------------------
# Layouts: keys, shapes, parameter counts
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unet256():
    torch.manual_seed(0)
    return UnetGenerator(3, 3)  # unet_256, ngf 64: 54 M parameters


def test_unet256_keys_and_shapes_are_pix2pix(unet256):
    ref = on_meta(lambda: RefUnet(3, 3, 8, 64))
    assert key_shapes(unet256) == key_shapes(ref)
    sd = unet256.state_dict()
    inner = "model.model.1" + ".model.3" * 6  # level 8: the innermost block
    known = {
        "model.model.0.weight": (64, 3, 4, 4),  # outermost down conv, no bias (BatchNorm)
        "model.model.1.model.1.weight": (128, 64, 4, 4),  # level 2 down conv
        "model.model.1.model.2.running_var": (128,),  # level 2 down norm
        "model.model.1.model.5.weight": (256, 64, 4, 4),  # level 2 up conv (transposed: in, out)
        f"{inner}.model.1.weight": (512, 512, 4, 4),  # innermost down conv
        f"{inner}.model.3.weight": (512, 512, 4, 4),  # innermost up conv
        f"{inner}.model.4.weight": (512,),  # innermost up norm
        "model.model.3.weight": (128, 3, 4, 4),  # outermost up conv
        "model.model.3.bias": (3,),  # … the only U-Net conv with a bias under BatchNorm
    }
    for key, shape in known.items():
        assert tuple(sd[key].shape) == shape, key
    assert f"{inner}.model.1.bias" not in sd and "model.model.0.bias" not in sd
    assert sum(p.numel() for p in unet256.parameters()) == 54_413_955  # pix2pix: "54.414 M"


def unet_param_count(in_nc, out_nc, num_downs, ngf):
    """Per-layer arithmetic: 4×4 convs, BatchNorm affine pairs, the outermost up conv's bias."""
    c = [ngf * min(2**i, 8) for i in range(num_downs)]  # level i+1's encoder channels
    total = in_nc * c[0] * 16  # outermost down conv
    total += 2 * c[0] * out_nc * 16 + out_nc  # outermost up conv + bias
    for L in range(1, num_downs):  # levels 2 … num_downs: input c[L-1], encoder c[L]
        innermost = L == num_downs - 1
        total += c[L - 1] * c[L] * 16 + (0 if innermost else 2 * c[L])  # down conv (+ norm)
        total += (1 if innermost else 2) * c[L] * c[L - 1] * 16 + 2 * c[L - 1]  # up conv + norm
    return total


@pytest.mark.parametrize(
    "in_nc, out_nc, num_downs, ngf", [(3, 3, 8, 16), (3, 3, 7, 64), (6, 3, 6, 8), (3, 8, 5, 4)]
)
def test_unet_keys_and_parameter_count_at_other_sizes(in_nc, out_nc, num_downs, ngf):
    ours = on_meta(lambda: UnetGenerator(in_nc, out_nc, num_downs=num_downs, ngf=ngf))
    assert key_shapes(ours) == key_shapes(on_meta(lambda: RefUnet(in_nc, out_nc, num_downs, ngf)))
    expected = unet_param_count(in_nc, out_nc, num_downs, ngf)
    assert sum(p.numel() for p in ours.parameters()) == expected


def test_unet_instance_norm_gives_the_convs_biases_as_pix2pix():
    norm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    ours = on_meta(lambda: UnetGenerator(3, 3, num_downs=6, ngf=8, norm_layer=norm))
    ref = on_meta(lambda: RefUnet(3, 3, 6, 8, norm=norm))
    assert key_shapes(ours) == key_shapes(ref)
    assert "model.model.0.bias" in ours.state_dict()


def test_resnet_9blocks_keys_and_shapes_are_pix2pix():
    ours = on_meta(lambda: ResnetGenerator(3, 3))
    assert key_shapes(ours) == key_shapes(on_meta(lambda: RefResnet(3, 3)))
    sd = ours.state_dict()
    known = {
        "model.1.weight": (64, 3, 7, 7),
        "model.4.weight": (128, 64, 3, 3),
        "model.7.weight": (256, 128, 3, 3),
        "model.10.conv_block.1.weight": (256, 256, 3, 3),
        "model.18.conv_block.6.running_mean": (256,),
        "model.19.weight": (256, 128, 3, 3),  # transposed: (in, out, k, k)
        "model.22.weight": (128, 64, 3, 3),
        "model.26.weight": (3, 64, 7, 7),
        "model.26.bias": (3,),
    }
    for key, shape in known.items():
        assert tuple(sd[key].shape) == shape, key
    # Per layer: 7×7, two downs, 9 × two 3×3 at 4ngf, two ups, 7×7 (+ bias); BatchNorm pairs.
    ngf, convs = 64, 3 * 64 * 49 + 64 * 128 * 9 + 128 * 256 * 9 + 18 * 256 * 256 * 9
    convs += 256 * 128 * 9 + 128 * 64 * 9 + 64 * 3 * 49 + 3
    norm_channels = ngf + 2 * ngf + 4 * ngf + 18 * 4 * ngf + 2 * ngf + ngf
    assert sum(p.numel() for p in ours.parameters()) == convs + 2 * norm_channels
    # CycleGAN's resnet_9blocks (InstanceNorm: biases instead of affine pairs): "11.378 M"
    inorm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    cyclegan = on_meta(lambda: ResnetGenerator(3, 3, norm_layer=inorm))
    assert sum(p.numel() for p in cyclegan.parameters()) == convs + norm_channels == 11_378_179


def test_resnet_dropout_and_padding_variants_keys():
    for kw, ref_kw in (({"use_dropout": True}, {"dropout": True}), ({"n_blocks": 6},) * 2):
        ours = on_meta(lambda: ResnetGenerator(3, 3, ngf=8, **kw))
        assert key_shapes(ours) == key_shapes(on_meta(lambda: RefResnet(3, 3, 8, **ref_kw)))
    zero = ResnetGenerator(3, 3, ngf=8, n_blocks=1, padding_type="zero")
    assert [type(m).__name__ for m in zero.model[10].conv_block] == [
        "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d"
    ]  # fmt: skip
    assert zero.model[10].conv_block[0].padding == (1, 1)


def test_patchgan_keys_parameter_count_and_30x30_output():
    ours = NLayerDiscriminator(6)
    assert key_shapes(ours) == key_shapes(on_meta(lambda: RefPatchGAN(6)))
    sd = ours.state_dict()
    known = {
        "model.0.weight": (64, 6, 4, 4),
        "model.0.bias": (64,),
        "model.2.weight": (128, 64, 4, 4),
        "model.3.weight": (128,),
        "model.8.weight": (512, 256, 4, 4),
        "model.9.running_var": (512,),
        "model.11.weight": (1, 512, 4, 4),
        "model.11.bias": (1,),
    }
    for key, shape in known.items():
        assert tuple(sd[key].shape) == shape, key
    # conv1 (+bias) · three convs without bias, each + BatchNorm pair · last conv (+bias)
    count = (6 * 64 * 16 + 64) + (64 * 128 * 16 + 256) + (128 * 256 * 16 + 512)
    count += (256 * 512 * 16 + 1024) + (512 * 16 + 1)
    assert sum(p.numel() for p in ours.parameters()) == count == 2_768_705  # pix2pix: "2.769 M"
    inorm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    cyclegan = NLayerDiscriminator(3, norm_layer=inorm)  # CycleGAN's D_A: "2.765 M"
    assert sum(p.numel() for p in cyclegan.parameters()) == 2_764_737
    with torch.no_grad():
        assert ours(torch.randn(2, 6, 256, 256)).shape == (2, 1, 30, 30)
    assert ours.output_size(256) == 30


def test_patchgan_receptive_field_is_70():
    d = randomized(NLayerDiscriminator(3, ndf=8)).eval()  # eval: BatchNorm couples no pixels
    x = torch.randn(1, 3, 128, 128, dtype=torch.float64, requires_grad=True)
    out = d(x)
    assert out.shape == (1, 1, 14, 14) and d.output_size(128) == 14
    out[0, 0, 7, 7].backward()
    seen = x.grad[0].abs().sum(0) > 0
    rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70
    # output pixel i sees input rows [8i − 23, 8i + 46]: back through the two stride-1 convs
    # ([i − 1, i + 2] each) and three stride-2 ones ([2j − 1, 2j + 2] each)
    assert rows.min() == cols.min() == 8 * 7 - 23


@pytest.mark.parametrize("n_layers, size, out", [(1, 64, 30), (2, 64, 14), (4, 256, 14)])
def test_patchgan_other_depths(n_layers, size, out):
    d = NLayerDiscriminator(3, ndf=4, n_layers=n_layers)
    assert key_shapes(d) == key_shapes(on_meta(lambda: RefPatchGAN(3, 4, n_layers)))
    with torch.no_grad():
        assert d(torch.randn(1, 3, size, size)).shape == (1, 1, out, out)
    assert d.output_size(size) == out


# ---------------------------------------------------------------------------------------------
# Forward against the pix2pix reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("size, num_downs", [(256, 8), (64, 6), (128, 5)])
def test_unet_forward_matches_pix2pix(size, num_downs, train):
    ours = randomized(UnetGenerator(3, 2, num_downs=num_downs, ngf=4))
    ref = RefUnet(3, 2, num_downs, 4).double()
    ref.load_state_dict(ours.state_dict())  # strict: pix2pix's keys load as they are
    x = images(2, 3, size)
    a, b = same_output(ours, ref, x, train=train)
    assert a.shape == (2, 2, size, size)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert a.abs().max() < 1  # tanh
    assert torch.equal(x, images(2, 3, size))  # the input is never rewritten in place


def test_pix2pix_in_place_skip_quirk_changes_nothing():
    """pix2pix's in-place LeakyReLU rewrites x before cat([x, model(x)]) reads it, so its skip
    carries LeakyReLU(x); the parent's ReLU makes that the same as x (our out-of-place skip)."""
    ref = randomized(RefUnet(3, 3, 5, 4, dropout=False)).eval()
    plain = RefUnet(3, 3, 5, 4, dropout=False).double().eval()
    plain.load_state_dict(ref.state_dict())
    for m in plain.modules():
        if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
            m.inplace = False
    x = images(1, 3, 32)
    skips = []
    ref.level(3).register_forward_hook(lambda m, args, out: skips.append(out[:, :8].clone()))
    torch.testing.assert_close(ref(x), plain(x), rtol=1e-12, atol=1e-14)
    assert skips[0].min() < 0 and skips[0].min() > -1  # the skip did carry a LeakyReLU


def test_unet_dropout_modules():
    def dropouts(**kw):
        net = UnetGenerator(3, 3, ngf=2, **kw)
        return [m.p for m in net.modules() if isinstance(m, nn.Dropout)]

    assert dropouts() == [0.5] * 3  # unet_256
    assert dropouts(num_downs=6) == [0.5] and dropouts(num_downs=5) == []
    assert dropouts(use_dropout=False) == []
    net = UnetGenerator(3, 3, ngf=2)  # on the ngf·8 middle levels 5, 6, 7
    has = [isinstance(b.model[-1], nn.Dropout) for b in net.levels]
    assert has == [False] * 4 + [True] * 3 + [False]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("kw", [{}, {"use_dropout": True}, {"n_blocks": 2, "padding_type": "zero"}])
def test_resnet_forward_matches_pix2pix(kw, train):
    ours = randomized(ResnetGenerator(3, 3, ngf=4, **kw))
    ref_kw = {"dropout": kw.get("use_dropout", False), "n_blocks": kw.get("n_blocks", 9)}
    ref = RefResnet(3, 3, 4, **ref_kw).double()
    if kw.get("padding_type") == "zero":  # pix2pix's zero padding: the convs' own padding 1
        for block in ref.model[10:12]:
            seq = [m for m in block.conv_block if not isinstance(m, nn.ReflectionPad2d)]
            for m in seq:
                if isinstance(m, nn.Conv2d):
                    m.padding = (1, 1)
            block.conv_block = nn.Sequential(*seq)
    ref.load_state_dict(ours.state_dict())
    x = images(2, 3, 64)
    a, b = same_output(ours, ref, x, train=train)
    assert a.shape == (2, 3, 64, 64)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_generator_shapes_at_256():
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        assert ResnetGenerator(3, 3, ngf=8).eval()(x).shape == (1, 3, 256, 256)
        assert UnetGenerator(3, 5, ngf=8).eval()(x).shape == (1, 5, 256, 256)


def test_patchgan_forward_matches_pix2pix():
    ours = randomized(NLayerDiscriminator(6, ndf=8))
    ref = RefPatchGAN(6, 8).double()
    ref.load_state_dict(ours.state_dict())
    for train in (False, True):
        a, b = same_output(ours, ref, images(2, 6, 64), train=train)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------------


def test_init_statistics(unet256):
    convs = [m for m in unet256.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    w = torch.cat([m.weight.flatten() for m in convs])  # 54 M samples
    assert abs(w.mean().item()) < 1e-4 and abs(w.std().item() - 0.02) < 2e-4
    assert all(m.bias is None or not m.bias.any() for m in convs)
    bns = [m for m in unet256.modules() if isinstance(m, nn.BatchNorm2d)]
    g = torch.cat([m.weight for m in bns]).detach()  # 5 k samples
    assert abs(g.mean().item() - 1) < 2e-3 and abs(g.std().item() - 0.02) < 2e-3
    assert not torch.cat([m.bias for m in bns]).any()
    for net in (ResnetGenerator(3, 3, ngf=16), NLayerDiscriminator(6, ndf=16)):
        convs = [m for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)]
        w = torch.cat([m.weight.flatten() for m in convs])
        assert abs(w.std().item() - 0.02) < 1e-3


def test_init_weights_follows_pix2pix_rules():
    net = nn.Sequential(nn.Conv2d(3, 64, 3), nn.ConvTranspose2d(64, 64, 3), nn.Linear(64, 64),
                        nn.BatchNorm2d(64), nn.InstanceNorm2d(64, affine=True))  # fmt: skip
    assert init_weights(net, gain=0.05) is net
    for m in net[:3]:
        assert abs(m.weight.std().item() - 0.05) < 5e-3 and not m.bias.any()
    assert abs(net[3].weight.mean().item() - 1) < 0.03 and net[3].weight.std() > 0.03
    assert torch.equal(net[4].weight, torch.ones(64))  # pix2pix matches "BatchNorm2d" only
    with pytest.raises(ValueError, match="gain must be a positive number"):
        init_weights(net, gain=0)


def test_reset_parameters_reinitialises():
    net = ResnetGenerator(3, 3, ngf=4, n_blocks=1)
    with torch.no_grad():
        net.model[1].weight.fill_(3.0)
    net.reset_parameters()
    assert net.model[1].weight.abs().max() < 0.2


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def test_input_size_checks():
    unet = UnetGenerator(3, 3, num_downs=6, ngf=2)
    with pytest.raises(ValueError, match=r"multiples of 64 \(num_downs=6 halvings\); got 96×64"):
        unet(torch.randn(1, 3, 96, 64))
    with pytest.raises(ValueError, match=r"C = 3; got shape \(1, 4, 64, 64\)"):
        unet(torch.randn(1, 4, 64, 64))
    with pytest.raises(TypeError, match="floating-point"):
        unet(torch.zeros(1, 3, 64, 64, dtype=torch.long))
    resnet = ResnetGenerator(3, 3, ngf=2, n_blocks=1)
    with pytest.raises(ValueError, match="multiples of 4"):
        resnet(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match="at least 8×8"):
        resnet(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="at least 24×24"):
        NLayerDiscriminator(3, ndf=2)(torch.randn(1, 3, 20, 40))
    assert NLayerDiscriminator(3, ndf=2)(torch.randn(1, 3, 24, 24)).shape == (1, 1, 1, 1)


def test_constructor_checks():
    with pytest.raises(ValueError, match="num_downs must be an int ≥ 5"):
        UnetGenerator(3, 3, num_downs=4)
    with pytest.raises(ValueError, match=r"spsa_level must be an int in \[0, num_downs − 1\] = "):
        UnetGenerator(3, 3, num_downs=6, spsa_level=6, seg_channels=3)
    with pytest.raises(ValueError, match="seg_channels must be positive with spsa_level=2"):
        UnetGenerator(3, 3, num_downs=6, spsa_level=2)
    with pytest.raises(ValueError, match="used only with spsa_level > 0"):
        UnetGenerator(3, 3, num_downs=6, seg_channels=3)
    with pytest.raises(ValueError, match="padding_type must be one of"):
        ResnetGenerator(3, 3, padding_type="circular")
    with pytest.raises(ValueError, match="n_blocks must be a non-negative int"):
        ResnetGenerator(3, 3, n_blocks=-1)
    with pytest.raises(ValueError, match="ndf must be a positive int"):
        NLayerDiscriminator(3, ndf=0)


# ---------------------------------------------------------------------------------------------
# SPSA U-Net (beyond the paper)
# ---------------------------------------------------------------------------------------------

S = 4  # prior channels


def spsa_unet(level, seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"num_downs": 6, "ngf": 4, **kw}
    return UnetGenerator(3, 3, spsa_level=level, seg_channels=S, **kw)


def prior(batch, size, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, S, size, size, generator=g, dtype=torch.float64).softmax(1)


def set_gamma(net, value):
    with torch.no_grad():
        net.spsa.gamma.fill_(value)
    return net


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_spsa_sits_on_the_encoder_output_at_depth_k(level):
    net = randomized(spsa_unet(level))
    assert isinstance(net.spsa, SPSA) and net.spsa.prior_stride == 2**level
    prefix = "model." + ("model.1." if level > 1 else "") + "model.3." * max(level - 2, 0)
    spsa_keys = [k for k in net.state_dict() if ".spsa." in k]
    assert spsa_keys and all(k.startswith(prefix + "spsa.") for k in spsa_keys)
    # every other key is pix2pix's, so a pix2pix checkpoint loads, leaving only spsa.* missing
    ref = RefUnet(3, 3, 6, 4).double()
    assert [k for k in net.state_dict() if k not in spsa_keys] == list(ref.state_dict())
    missing, unexpected = net.load_state_dict(ref.state_dict(), strict=False)
    assert sorted(missing) == sorted(spsa_keys) and unexpected == []

    seen = []
    net.spsa.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    set_gamma(randomized(net, seed=3), 0.7).eval()
    x, p = images(2, 3, 64), prior(2, 64)
    out = net(x, p)
    assert out.shape == (2, 3, 64, 64)
    assert seen == [(2, 4 * min(2 ** (level - 1), 8), 64 >> level, 64 >> level)]
    # The reference: pix2pix's U-Net on the same weights with the same SPSA layer applied to
    # level k+1's input — the features that go down and into its skip.
    ref.load_state_dict({k: v for k, v in net.state_dict().items() if k not in spsa_keys})
    ref.eval().level(level + 1).register_forward_pre_hook(lambda m, args: (net.spsa(args[0], p),))
    with torch.no_grad():
        torch.testing.assert_close(out, ref(x), rtol=1e-10, atol=1e-12)
        assert not torch.allclose(out, net(x, prior(2, 64, seed=5)))  # the prior matters


def test_spsa_is_the_identity_at_init():
    net = spsa_unet(3).double()
    assert net.spsa.gamma.item() == 0
    plain = UnetGenerator(3, 3, num_downs=6, ngf=4).double()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if ".spsa." not in k})
    ref = RefUnet(3, 3, 6, 4).double()
    ref.load_state_dict(plain.state_dict())
    x, p = images(2, 3, 64), prior(2, 64)
    for train in (True, False):  # dropout on (seeded alike) and off
        a, b = same_output(net, ref, x, p, train=train)
        torch.manual_seed(0)
        assert torch.equal(a, plain.train(train)(x))
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert net.spsa.alpha_initialized  # the first forward set α


def test_spsa_gradients_reach_the_layer():
    net = spsa_unet(2).double()
    x, p = images(2, 3, 64), prior(2, 64)
    net(x, p).square().mean().backward()
    assert net.spsa.gamma.grad is not None and net.spsa.gamma.grad.abs() > 0  # γ = 0 can move
    net.zero_grad()
    set_gamma(net, 0.5)(x, p).square().mean().backward()
    for name, param in net.spsa.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert net.model.model[0].weight.grad.abs().sum() > 0


def test_spsa_prior_checks():
    net = spsa_unet(2)
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"prior is required.*\(1, 4, 64, 64\)"):
        net(x)
    with pytest.raises(ValueError, match=r"= \(1, 4, 64, 64\) .*got \(1, 4, 32, 32\)"):
        net(x, torch.rand(1, S, 32, 32))
    with pytest.raises(TypeError, match="prior must have x's dtype"):
        net(x, torch.rand(1, S, 64, 64, dtype=torch.float64))
    with pytest.raises(ValueError, match="no SPSA layer"):
        UnetGenerator(3, 3, num_downs=6, ngf=2)(x, torch.rand(1, S, 64, 64))


# ---------------------------------------------------------------------------------------------
# StageGAN
# ---------------------------------------------------------------------------------------------


def small_stagegan(**kw):
    kw = {"image_size": 64, "ngf": 4, "n_blocks": 2, **kw}
    return StageGAN(**kw)


@pytest.mark.parametrize(
    "kw",
    [
        {"scale": 4},
        {"scale": 8},
        {"scale": 8, "map_mode": "onehot", "map_channels": 8},
        {"scale": 4, "spsa_level": 3},
        {"scale": 4, "map_mode": "onehot", "map_channels": 5, "spsa_level": 2, "qk_channels": 4, "heads": 2},
    ],
    ids=["x4", "x8", "x8-onehot", "x4-spsa", "x4-onehot-spsa"],
)
def test_stagegan_forward(kw):
    net = randomized(small_stagegan(**kw)).eval()
    M = net.map_channels
    assert net.stage0.in_ch == 3 and net.stage0.out_ch == M
    assert net.stage1.in_ch == 3 + M and net.stage1.out_ch == 3 and net.stage2.in_ch == 3
    mr = images(2, 3, 64)
    if net.spsa_level:
        set_gamma(net.stage1, 0.5)
    with torch.no_grad():
        out = net(mr)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "map": (2, M, 64, 64), "stage1": (2, 3, 64, 64), "stage2": (2, 3, 64, 64)
    }  # fmt: skip
    assert out["stage1"].abs().max() < 1 and out["stage2"].abs().max() < 1
    if net.map_mode == "colour":
        assert out["map"].abs().max() < 1
        cond = out["map"]
    else:  # logits, no tanh; stage 1 reads their softmax
        assert isinstance(net.stage0.model.model[-1], nn.Identity)
        cond = F.softmax(out["map"], dim=1)
    # wiring, written out over the stages
    with torch.no_grad():
        stage1 = net.stage1(torch.cat([mr, cond], 1), cond if net.spsa_level else None)
        torch.testing.assert_close(out["stage1"], stage1, rtol=0, atol=0)
        torch.testing.assert_close(out["stage2"], net.stage2(stage1), rtol=0, atol=0)
    assert net.config()["scale"] == kw["scale"]
    d = net.discriminator_in_channels
    assert d == {"stage0": 3 + M, "stage1": 6 + M, "stage2": 6}
    with torch.no_grad():
        d1 = NLayerDiscriminator(d["stage1"], ndf=4).double()
        logits = d1(torch.cat([mr, cond, out["stage1"]], 1))
    assert logits.shape == (2, 1, 6, 6)


@pytest.mark.parametrize(
    "image_size, num_downs, expected",
    [(256, None, 8), (512, None, 8), (128, None, 7), (64, None, 6), (96, None, 5), (256, 6, 6)],
)
def test_stagegan_num_downs(image_size, num_downs, expected):
    net = on_meta(lambda: StageGAN(image_size=image_size, num_downs=num_downs, ngf=2, n_blocks=0))
    assert net.num_downs == net.stage0.num_downs == net.stage1.num_downs == expected


def test_stagegan_checks():
    with pytest.raises(ValueError, match="multiple of 2\\*\\*5 = 32.*got 48"):
        StageGAN(image_size=48)
    with pytest.raises(ValueError, match="multiple of 2\\*\\*num_downs = 128"):
        StageGAN(image_size=64, num_downs=7)
    with pytest.raises(ValueError, match="scale must be one of"):
        StageGAN(scale=3)
    with pytest.raises(ValueError, match="map_mode must be one of"):
        StageGAN(map_mode="color")
    with pytest.raises(ValueError, match="map_channels must be ≥ 2 in 'onehot'"):
        StageGAN(map_mode="onehot", map_channels=1)
    with pytest.raises(ValueError, match="used only with spsa_level > 0"):
        StageGAN(qk_channels=8)
    net = small_stagegan()
    with pytest.raises(ValueError, match=r"mr must have H and W positive multiples of 64"):
        net(torch.randn(1, 3, 64, 80))


def test_stagegan_save_load_roundtrip(tmp_path):
    net = small_stagegan(scale=8, map_mode="onehot", map_channels=6, spsa_level=2)
    set_gamma(net.stage1, 0.3)
    net.train()(torch.rand(2, 3, 64, 64) * 2 - 1)  # moves BatchNorm statistics, sets SPSA's α
    path = tmp_path / "ckpt" / "stagegan.pth"
    net.save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["stagegan.pth"]  # no temp left
    raw = torch.load(path, weights_only=True)
    assert (raw["format"], raw["kind"]) == ("fastsr.model/1", "stagegan")
    assert raw["config"] == {**net.config(), "batch_stats": True, "seed": 0}  # StageGANUpscaler's
    assert isinstance(StageGANUpscaler.from_checkpoint(path), StageGANUpscaler)
    old = tmp_path / "old.pth"  # fastsr 0.1's StageGAN.save layout: the container's own keys
    torch.save({"format": "fastsr.stagegan/1", "config": net.config(), "params": net.state_dict()}, old)
    with pytest.warns(NoDigestWarning):
        old_net = StageGAN.from_checkpoint(old)
    for loaded in (StageGAN.from_checkpoint(path), StageGAN.from_checkpoint(raw), old_net):
        assert loaded.config() == net.config()
        for (k, a), (k2, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
            assert k == k2 and torch.equal(a, b), k
        assert loaded.stage1.spsa.alpha_initialized and loaded.stage1.spsa._alpha_ready
        mr = torch.rand(1, 3, 64, 64) * 2 - 1
        net.eval(), loaded.eval()
        with torch.no_grad():
            for key, value in net(mr).items():
                assert torch.equal(value, loaded(mr)[key]), key
    net.double().save(path)
    assert StageGAN.from_checkpoint(path).stage2.model[1].weight.dtype == torch.float64
    with pytest.raises(ValueError, match="not of a network fastsr knows"):
        StageGAN.from_checkpoint({"params": {}})


def test_stagegan_runs_under_autocast_with_spsa():
    """Under autocast stage 0's map comes out in bfloat16 while mr stays float32: the stage-1
    input and the SPSA prior get mr's dtype."""
    net = small_stagegan(spsa_level=3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert out["stage2"].shape == (1, 3, 64, 64) and torch.isfinite(out["stage2"]).all()


# ---------------------------------------------------------------------------------------------
# Beyond the paper: resize-convolutions and residual stages
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [4, 3])
def test_resize_conv_is_nearest_then_3x3_and_treats_every_phase_alike(kernel):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 5, 7, generator=g, dtype=torch.float64)
    up = up_conv(6, 4, upsample="resize", kernel=kernel, bias=True).double()
    conv = up[1]
    reference = F.conv2d(x.repeat_interleave(2, 2).repeat_interleave(2, 3), conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(up(x), reference, rtol=0, atol=1e-12)
    # A constant input: every interior output pixel is the same (no 2 × 2 phase pattern), while
    # a stride-2 transposed conv whose kernel is no multiple of 2 (3×3) or of random weights
    # (4×4) gives the four phases different sums of taps.
    flat = torch.ones(1, 6, 8, 8, dtype=torch.float64)
    inner = up(flat)[..., 1:-1, 1:-1]
    assert torch.allclose(inner, inner[..., :1, :1].expand_as(inner), rtol=0, atol=1e-12)
    tconv = up_conv(6, 4, upsample="transpose", kernel=kernel, bias=True).double()
    nn.init.normal_(tconv.weight, generator=g)
    t_inner = tconv(flat)[..., 2:-2, 2:-2]
    assert tuple(tconv(flat).shape[-2:]) == (16, 16)
    assert not torch.allclose(t_inner[..., 0::2, 0::2], t_inner[..., 1::2, 1::2])


def test_resize_upsampling_keys_and_shapes():
    unet = UnetGenerator(3, 3, num_downs=5, ngf=4, upsample="resize")
    keys = set(unet.state_dict())
    assert "model.model.3.1.weight" in keys and "model.model.3.weight" not in keys  # the outermost up conv
    assert unet(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    resnet = ResnetGenerator(3, 3, ngf=4, n_blocks=1, upsample="resize")
    assert isinstance(resnet.model[11], nn.Sequential) and "model.14.1.weight" in resnet.state_dict()
    assert resnet(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)
    paper = {k for k in UnetGenerator(3, 3, num_downs=5, ngf=4).state_dict()}
    assert {
        re.sub(r"\.(\d+)\.1\.(weight|bias)$", r".\1.\2", k) for k in keys
    } == paper  # only the up convs move
    with pytest.raises(ValueError, match="upsample must be one of"):
        UnetGenerator(3, 3, num_downs=5, upsample="bilinear")
    with pytest.raises(ValueError, match="upsample must be one of"):
        StageGAN(image_size=64, ngf=4, upsample="pixelshuffle")


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_residual_stages_start_as_bicubic_and_learn(upsample):
    net = small_stagegan(residual=True, upsample=upsample)
    mr = torch.rand(1, 3, 64, 64) * 2 - 1
    out = net(mr)
    assert torch.equal(out["stage1"], mr) and torch.equal(out["stage2"], mr)  # the last convs start at 0
    lr = torch.rand(1, 3, 16, 16)
    bicubic = imresize(lr, 4).clamp(0, 1)
    torch.testing.assert_close(StageGANUpscaler(net)(lr), bicubic, rtol=0, atol=1e-6)
    # The zeroed convs still learn, and after one step the gradients reach the whole network.
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    hr = torch.rand(1, 3, 64, 64) * 2 - 1
    for _ in range(2):
        opt.zero_grad()
        out = net(mr)
        (F.l1_loss(out["stage1"], hr) + F.l1_loss(out["stage2"], hr)).backward()
        opt.step()
    first_convs = (net.stage1.model.model[0], net.stage2.model[1])
    assert all(conv.weight.grad.abs().sum() > 0 for conv in first_convs)
    net.eval()  # no dropout draws, running statistics: the same network at each call
    with torch.no_grad():
        out = net(mr)
    # wiring, written out: each stage adds its network's output to its input image
    stage1 = mr + net.stage1(torch.cat([mr, out["map"]], 1))
    torch.testing.assert_close(out["stage1"], stage1, rtol=0, atol=0)
    torch.testing.assert_close(out["stage2"], stage1 + net.stage2(stage1), rtol=0, atol=0)
    assert not torch.equal(out["stage2"], mr)


def test_model_files_keep_the_network_choices_and_older_files_load_as_the_paper(tmp_path):
    net = small_stagegan(residual=True, upsample="resize")
    path = tmp_path / "g.pt"
    net.save(path)
    loaded = StageGAN.from_checkpoint(path)
    assert (loaded.residual, loaded.upsample) == (True, "resize") and loaded.config() == net.config()
    paper = small_stagegan()
    config = {k: v for k, v in paper.config().items() if k not in ("residual", "upsample")}
    old = tmp_path / "old.pt"  # written before these options existed
    torch.save({"format": "fastsr.stagegan/1", "config": config, "params": paper.state_dict()}, old)
    with pytest.warns(NoDigestWarning):
        old_net = StageGAN.from_checkpoint(old)
    assert (old_net.residual, old_net.upsample) == (False, "transpose")
