"""fastsr.SPSA against the paper's equations (section 3.1, eqs. 1–7), written here in plain torch
from the layer's weights: 1×1 convs as matrix products, the k×k stride-k transform conv as a
product over non-overlapping patches, all L×L attention matrices materialised."""

import copy

import pytest
import torch
from torch import nn

from fastsr import SPSA

# (B, C, S, H, W): odd feature maps (H·W = 35, 12), batch > 1.
SHAPES = [(2, 16, 8, 5, 7), (1, 8, 3, 3, 4)]


def make_inputs(B, C, S, H, W, k, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    seg = torch.rand(B, S, k * H, k * W, generator=g, dtype=dtype).softmax(1)  # class probabilities
    return x, seg


def make_layer(C, S, dtype=torch.float64, seed=0, **kwargs):
    torch.manual_seed(seed)
    return SPSA(C, S, **kwargs).to(dtype)


def transform_conv(layer, seg):
    """Conv(m_seg) of eq. 3 as a patch product: (B, S, kH, kW) → (B, C, H·W)."""
    k = layer.prior_stride
    B, S, Hk, Wk = seg.shape
    H, W = Hk // k, Wk // k
    patches = seg.reshape(B, S, H, k, W, k).permute(0, 2, 4, 1, 3, 5).reshape(B, H * W, S * k * k)
    weight = layer.transform.weight.to(seg.dtype).reshape(-1, S * k * k)  # (C, S·k·k)
    bias = layer.transform.bias.to(seg.dtype)
    return (patches @ weight.T + bias).transpose(1, 2)  # (B, C, N)


def paper_spsa(layer, x, seg):
    """Eqs. 1–7 with materialised N×N matrices, differentiable in the layer's parameters.
    Returns (x + γ·o, β_fea, β_seg, β), the matrices (B, heads, N_query j, N_key i)."""
    B, C, H, W = x.shape
    n_heads, N = layer.heads, H * W
    dt = x.dtype

    def proj(conv, t):  # 1×1 conv W t, split into heads: (B, C_in, N) → (B, heads, D, N)
        w = conv.weight.to(dt)[:, :, 0, 0]
        return (w @ t).reshape(B, n_heads, -1, N)

    xf = x.reshape(B, C, N)
    conv = transform_conv(layer, seg)
    z = layer.alpha.to(dt) * conv  # eq. 3
    s_fea = torch.einsum("bhdi,bhdj->bhji", proj(layer.f_fea, xf), proj(layer.g_fea, xf))
    s_seg = torch.einsum("bhdi,bhdj->bhji", proj(layer.f_seg, z), proj(layer.g_seg, z))
    beta_fea = torch.softmax(layer.scale * s_fea, dim=-1)  # eq. 2, over keys i
    beta_seg = torch.softmax(layer.scale * s_seg, dim=-1)  # eq. 4
    w_seg = (beta_seg - beta_fea).abs() / (beta_seg + beta_fea)  # eq. 5
    beta = w_seg * beta_seg + (1 - w_seg) * beta_fea  # eq. 6
    beta = beta / beta.sum(-1, keepdim=True)
    o = torch.einsum("bhji,bhci->bhcj", beta, proj(layer.h, xf))  # eq. 7
    out = x + layer.gamma.to(dt) * o.reshape(B, C, H, W)
    return out, beta_fea, beta_seg, beta


def set_gamma(layer, value):
    with torch.no_grad():
        layer.gamma.fill_(value)


# -- shapes and identity ------------------------------------------------------------------------


@pytest.mark.parametrize("B,C,S,H,W", SHAPES)
@pytest.mark.parametrize("k", [4, 1, 2])
def test_output_shape_and_identity_at_init(B, C, S, H, W, k):
    layer = make_layer(C, S, prior_stride=k)
    x, seg = make_inputs(B, C, S, H, W, k)
    out = layer(x, seg)
    assert out.shape == (B, C, H, W) and out.dtype == x.dtype
    assert torch.equal(out, x)  # γ = 0: the layer starts as the identity


def test_default_qk_channels():
    assert SPSA(64, 8).qk_channels == 8
    assert SPSA(4, 8).qk_channels == 1
    assert SPSA(64, 8, qk_channels=16).f_fea.out_channels == 16


# -- against the paper's equations ----------------------------------------------------------------


@pytest.mark.parametrize("B,C,S,H,W", SHAPES)
@pytest.mark.parametrize("k", [4, 1])
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_matches_paper_float64(B, C, S, H, W, k, heads, backend):
    layer = make_layer(C, S, qk_channels=4, heads=heads, prior_stride=k, backend=backend)
    set_gamma(layer, 1.0)
    x, seg = make_inputs(B, C, S, H, W, k)
    out = layer(x, seg)
    expected = paper_spsa(layer, x, seg)[0]
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert (out - x).abs().max() > 1e-2  # the attention term is really there


@pytest.mark.parametrize("heads", [1, 2])
def test_float32_error_within_torch_error(heads):
    """flash-attention's rule: error vs float64 ≤ 2× the same-precision torch error + atol."""
    B, C, S, H, W = SHAPES[0]
    layer = make_layer(C, S, dtype=torch.float32, qk_channels=4, heads=heads, scale=0.5)
    set_gamma(layer, 1.0)
    x, seg = make_inputs(B, C, S, H, W, 4, dtype=torch.float32)
    out = layer(x, seg)
    exact = paper_spsa(layer, x.double(), seg.double())[0]
    torch_err = (paper_spsa(layer, x, seg)[0].double() - exact).abs().max()
    assert (out.double() - exact).abs().max() <= 2 * torch_err + 1e-5


# -- α --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["train", "eval", "no_grad"])
def test_alpha_initialised_on_first_forward_only(mode):
    B, C, S, H, W = SHAPES[0]
    layer = make_layer(C, S)
    layer.train(mode == "train")
    x, seg = make_inputs(B, C, S, H, W, 4)
    assert not layer.alpha_initialized and layer.alpha.item() == 1.0
    with torch.set_grad_enabled(mode != "no_grad"):
        layer(x, seg)
    expected = x.abs().mean() / transform_conv(layer, seg).abs().mean()  # paper: mean L1 ratio
    torch.testing.assert_close(layer.alpha.detach(), expected, rtol=1e-12, atol=0)
    assert layer.alpha_initialized.item()

    first = layer.alpha.item()
    x2, seg2 = make_inputs(B, C, S, H, W, 4, seed=1)
    layer(3 * x2, seg2)
    assert layer.alpha.item() == first


def test_alpha_with_zero_prior_conv_stays_one():
    layer = make_layer(16, 8)
    with torch.no_grad():
        layer.transform.weight.zero_()
        layer.transform.bias.zero_()
    x, seg = make_inputs(*SHAPES[0], 4)
    layer(x, seg)
    assert layer.alpha.item() == 1.0 and torch.isfinite(layer.alpha)


def test_state_dict_round_trip_keeps_alpha():
    B, C, S, H, W = SHAPES[0]
    layer = make_layer(C, S, heads=2)
    set_gamma(layer, 0.7)
    x, seg = make_inputs(B, C, S, H, W, 4)
    out = layer(x, seg)
    state = layer.state_dict()
    assert state["alpha_initialized"].item()

    fresh = make_layer(C, S, heads=2, seed=1)
    fresh.load_state_dict(state)
    x2, seg2 = make_inputs(B, C, S, H, W, 4, seed=1)
    out2 = fresh(5 * x2, seg2)  # would re-initialise α to a different value
    assert fresh.alpha.item() == layer.alpha.item()
    torch.testing.assert_close(out2, paper_spsa(layer, 5 * x2, seg2)[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fresh(x, seg), out, rtol=0, atol=0)


def test_loading_an_uninitialised_state_and_reset_parameters_reinitialise():
    B, C, S, H, W = SHAPES[0]
    x, seg = make_inputs(B, C, S, H, W, 4)
    x2, seg2 = make_inputs(B, C, S, H, W, 4, seed=1)
    blank = make_layer(C, S).state_dict()

    layer = make_layer(C, S)
    layer(x2, seg2)
    layer.load_state_dict(blank)
    assert not layer.alpha_initialized
    layer(x, seg)
    torch.testing.assert_close(layer.alpha.detach(), x.abs().mean() / transform_conv(layer, seg).abs().mean())

    set_gamma(layer, 1.0)
    layer.reset_parameters()
    assert layer.gamma.item() == 0.0 and layer.alpha.item() == 1.0
    assert not layer.alpha_initialized
    layer(x2, seg2)
    torch.testing.assert_close(
        layer.alpha.detach(), x2.abs().mean() / transform_conv(layer, seg2).abs().mean()
    )


# -- errors ---------------------------------------------------------------------------------------


def test_wrong_prior_size_names_seg_and_shapes():
    layer = make_layer(16, 8)
    x, _ = make_inputs(*SHAPES[0], 4)  # x: (2, 16, 5, 7)
    with pytest.raises(ValueError, match=r"seg .*\(2, 8, 20, 28\).*got \(2, 8, 5, 7\)"):
        layer(x, torch.rand(2, 8, 5, 7, dtype=x.dtype))  # a prior_stride=1 prior
    with pytest.raises(ValueError, match=r"seg .*\(2, 8, 20, 28\).*got \(2, 8, 21, 28\)"):
        layer(x, torch.rand(2, 8, 21, 28, dtype=x.dtype))
    with pytest.raises(ValueError, match=r"seg .*\(2, 8, 20, 28\).*got \(1, 8, 20, 28\)"):
        layer(x, torch.rand(1, 8, 20, 28, dtype=x.dtype))  # batch mismatch


def test_wrong_inputs_give_clear_errors():
    layer = make_layer(16, 8)
    x, seg = make_inputs(*SHAPES[0], 4)
    with pytest.raises(ValueError, match=r"x must be \(B, C, H, W\) with C = 16; got 8 channels"):
        layer(x[:, :8], seg)
    with pytest.raises(ValueError, match=r"seg must be .* with S = 8; got 3 channels"):
        layer(x, seg[:, :3])
    with pytest.raises(ValueError, match=r"x must be \(B, C, H, W\); got shape \(16, 5, 7\)"):
        layer(x[0], seg)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        layer(x.long(), seg)
    with pytest.raises(TypeError, match="seg must have x's dtype"):
        layer(x, seg.float())
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        layer(x.numpy(), seg)


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"qk_channels \(3\) must be divisible by heads \(2\)"):
        SPSA(16, 8, qk_channels=3, heads=2)
    with pytest.raises(ValueError, match=r"channels \(18\) must be divisible by heads \(4\)"):
        SPSA(18, 8, qk_channels=4, heads=4)
    with pytest.raises(ValueError, match="prior_stride must be a positive int; got 0"):
        SPSA(16, 8, prior_stride=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        SPSA(16, 8, backend="cuda")


def test_empty_batch():
    layer = make_layer(16, 8)
    x, seg = make_inputs(*SHAPES[0], 4)
    out = layer(x[:0], seg[:0])
    assert out.shape == (0, 16, 5, 7) and not layer.alpha_initialized


# -- gradients ------------------------------------------------------------------------------------


@pytest.mark.parametrize("heads", [1, 2])
def test_gradients_reach_every_parameter_and_input(heads):
    B, C, S, H, W = SHAPES[0]
    layer = make_layer(C, S, qk_channels=4, heads=heads)
    x, seg = make_inputs(B, C, S, H, W, 4)
    layer(x, seg)  # initialise α
    set_gamma(layer, 0.5)
    x.requires_grad_(True)
    seg.requires_grad_(True)
    weight = torch.randn(B, C, H, W, dtype=x.dtype, generator=torch.Generator().manual_seed(3))
    (layer(x, seg) * weight).sum().backward()

    # Independent gradients: autograd through the plain-torch equations with the same leaves.
    ref = copy.deepcopy(layer)
    ref.zero_grad()
    xr, segr = x.detach().clone().requires_grad_(True), seg.detach().clone().requires_grad_(True)
    params = dict(ref.named_parameters())
    (paper_spsa(ref, xr, segr)[0] * weight).sum().backward()

    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name
        torch.testing.assert_close(p.grad, params[name].grad, rtol=1e-8, atol=1e-10, msg=name)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(seg.grad, segr.grad, rtol=1e-8, atol=1e-10)
    assert seg.grad.abs().max() > 0


# -- attention maps -------------------------------------------------------------------------------


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("k", [4, 1])
def test_attention_maps_match_materialised_rows(heads, k):
    B, C, S, H, W = SHAPES[0]
    layer = make_layer(C, S, qk_channels=4, heads=heads, prior_stride=k)
    x, seg = make_inputs(B, C, S, H, W, k)
    pixels = [(0, 0), (4, 6), (2, 3), (2, 3)]
    with torch.no_grad():
        maps = layer.attention_maps(x, seg, pixels=pixels)
    assert layer.alpha_initialized  # like a forward
    _, beta_fea, beta_seg, beta = paper_spsa(layer, x, seg)
    rows = [r * W + c for r, c in pixels]
    for key, full in (("feature", beta_fea), ("segmentation", beta_seg), ("combined", beta)):
        got = maps[key]
        assert got.shape == (B, heads, len(pixels), H, W), key
        ones = torch.ones(B, heads, len(pixels), dtype=x.dtype)
        torch.testing.assert_close(got.sum((-1, -2)), ones, msg=key)
        torch.testing.assert_close(got.flatten(-2), full[:, :, rows], msg=key)


def test_attention_maps_pixel_errors():
    layer = make_layer(16, 8)
    x, seg = make_inputs(*SHAPES[0], 4)
    with pytest.raises(ValueError, match=r"pixels must lie in the 5×7 feature map.*got \(5, 0\)"):
        layer.attention_maps(x, seg, pixels=[(5, 0)])
    with pytest.raises(ValueError, match="pixels must name at least one"):
        layer.attention_maps(x, seg, pixels=[])
    with pytest.raises(TypeError, match="pixels must be a sequence of"):
        layer.attention_maps(x, seg, pixels=[3])


# -- torch.compile --------------------------------------------------------------------------------


class SmallNet(nn.Module):
    def __init__(self, C=16, S=8):
        super().__init__()
        self.head = nn.Conv2d(3, C, 3, padding=1)
        self.attn = SPSA(C, S, qk_channels=4, heads=2)
        self.tail = nn.Conv2d(C, 3, 3, padding=1)

    def forward(self, img, seg):
        return self.tail(self.attn(self.head(img), seg))


def _net_and_batches(eager_first):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = SmallNet()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 3, 6, 5, generator=g), torch.rand(2, 8, 24, 20, generator=g))]
    batches.append((torch.randn(2, 3, 6, 5, generator=g), torch.rand(2, 8, 24, 20, generator=g)))
    if eager_first:  # the documented alternative: one eager forward, then compile
        with torch.no_grad():
            model(*batches[1])
    with torch.no_grad():
        model.attn.gamma.fill_(0.5)
    return model, copy.deepcopy(model), batches


def _check_alpha(model, eager, batches, eager_first):
    """α matches eager and came from the first batch the model saw, not from a later one."""
    assert model.attn.alpha_initialized.item()
    assert model.attn.alpha.item() == pytest.approx(eager.attn.alpha.item(), rel=1e-6)
    img, seg = batches[1] if eager_first else batches[0]
    with torch.no_grad():
        expected = eager.head(img).abs().mean() / eager.attn.transform(seg).abs().mean()
    assert model.attn.alpha.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("eager_first", [True, False], ids=["eager-init", "compiled-init"])
def test_torch_compile_fullgraph_forward_matches_eager(eager_first):
    """α's initialisation runs eagerly before compiling, or inside the compiled graph itself."""
    model, eager, batches = _net_and_batches(eager_first)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        for img, seg in batches:  # the second call runs without α's initialisation
            torch.testing.assert_close(compiled(img, seg), eager(img, seg), rtol=1e-4, atol=1e-5)
    _check_alpha(model, eager, batches, eager_first)


def _grads(model, img, seg):
    img = img.clone().requires_grad_(True)
    out = model(img, seg)
    out.square().sum().backward()
    grads = {n.removeprefix("_orig_mod."): p.grad.clone() for n, p in model.named_parameters()}
    return out.detach(), img.grad, grads


@pytest.mark.slow
@pytest.mark.parametrize("eager_first", [True, False], ids=["eager-init", "compiled-init"])
def test_torch_compile_fullgraph_backward_matches_eager(eager_first):
    model, eager, batches = _net_and_batches(eager_first)
    compiled = torch.compile(model, fullgraph=True)
    for img, seg in batches:
        model.zero_grad()
        eager.zero_grad()
        out_c, dimg_c, grads_c = _grads(compiled, img, seg)
        out_e, dimg_e, grads_e = _grads(eager, img, seg)
        torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(dimg_c, dimg_e, rtol=1e-4, atol=1e-5)
        for name in grads_e:
            torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-4, atol=1e-5, msg=name)
    _check_alpha(model, eager, batches, eager_first)
