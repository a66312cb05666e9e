"""VGG19FeatureExtractor against a synthetic torchvision-format vgg19 state dict (torchvision's
key names and shapes, random values) and a forward written here with F.conv2d / F.relu /
F.max_pool2d over torchvision's layer list."""

import pytest
import torch
import torch.nn.functional as F

from fastsr.models import VGG19FeatureExtractor
from fastsr.models.vgg import VGG19_LAYERS

# torchvision's vgg19 ("E") configuration: conv widths, "M" = 2×2 max-pool.
CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
       512, 512, 512, 512, "M"]  # fmt: skip
# ImageNet's statistics as the extractor stores them (float32 buffers; .double() widens them)
MEAN = torch.tensor([0.485, 0.456, 0.406]).double().view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).double().view(1, 3, 1, 1)


def torchvision_vgg19_state_dict(seed=0):
    """Keys and shapes of torchvision.models.vgg19().state_dict(), random values. The classifier
    (ignored by the extractor) is a stride-0 view, so its 4096 × 25088 weight costs one float."""
    g = torch.Generator().manual_seed(seed)
    state, index, in_ch = {}, 0, 3
    for v in CFG:
        if v == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = (
            torch.randn(v, in_ch, 3, 3, generator=g) * (2 / (9 * in_ch)) ** 0.5
        )
        state[f"features.{index}.bias"] = 0.1 * torch.randn(v, generator=g)
        index, in_ch = index + 2, v  # conv, ReLU
    for i, (n_out, n_in) in zip((0, 3, 6), ((4096, 512 * 7 * 7), (4096, 4096), (1000, 4096))):
        state[f"classifier.{i}.weight"] = torch.zeros(1).expand(n_out, n_in)
        state[f"classifier.{i}.bias"] = torch.zeros(1).expand(n_out)
    return state


def reference_features(state, x, last):
    """torchvision's vgg19.features[: last + 1] on ImageNet-normalised x, with F.*."""
    x = (x - MEAN) / STD
    index = 0
    for v in CFG:
        if index > last:
            break
        if v == "M":
            x = F.max_pool2d(x, 2, 2)
            index += 1
            continue
        w, b = state[f"features.{index}.weight"], state[f"features.{index}.bias"]
        x = F.conv2d(x, w.double(), b.double(), padding=1)
        if index + 1 <= last:
            x = F.relu(x)
        index += 2
    return x


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    state = torchvision_vgg19_state_dict()
    path = tmp_path_factory.mktemp("vgg") / "vgg19-synthetic.pth"
    torch.save(state, path)
    return path, state


def test_layer_indices_are_torchvision():
    assert len(VGG19_LAYERS) == 37
    assert VGG19_LAYERS[0] == "conv1_1" and VGG19_LAYERS[4] == "pool1"
    assert VGG19_LAYERS[34] == "conv5_4" and VGG19_LAYERS[35] == "relu5_4"
    assert VGG19_LAYERS[36] == "pool5" and VGG19_LAYERS[25] == "conv4_4"


def test_conv5_4_matches_reference(vgg_file):
    path, state = vgg_file
    vgg = VGG19FeatureExtractor(path).double()
    assert len(vgg.features) == 35  # truncated after conv5_4, before its ReLU
    assert set(vgg.state_dict()) == {k for k in state if k.startswith("features.")}
    x = torch.rand(2, 3, 32, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = vgg(x)
    assert out.shape == (2, 512, 2, 3)
    assert (out < 0).any()  # before the ReLU
    torch.testing.assert_close(out, reference_features(state, x, 34), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("layer,index,shape", [("relu2_2", 8, (128, 16, 16)), ("pool3", 18, (256, 4, 4))])
def test_other_layers_and_truncated_dicts(vgg_file, layer, index, shape):
    path, state = vgg_file
    # a state dict already cut to the features, and a features Sequential's own "N.*" keys
    truncated = {k: v for k, v in state.items() if k.startswith("features.")}
    bare = {k[len("features.") :]: v for k, v in truncated.items()}
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = reference_features(state, x, index)
    for weights in (path, truncated, bare):
        vgg = VGG19FeatureExtractor(weights, layer=layer).double()
        out = vgg(x)
        assert out.shape == (1, *shape)
        torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


def test_without_input_norm(vgg_file):
    path, state = vgg_file
    vgg = VGG19FeatureExtractor(path, layer="conv1_2", use_input_norm=False).double()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(vgg(x), reference_features(state, x * STD + MEAN, 2))


def test_frozen_and_always_eval(vgg_file):
    path, _ = vgg_file
    vgg = VGG19FeatureExtractor(path, layer="relu3_1")
    assert not any(p.requires_grad for p in vgg.parameters())
    assert not vgg.training
    vgg.train()
    assert not vgg.training and not any(m.training for m in vgg.modules())
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    vgg(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())


def test_random_weights_warn():
    with pytest.warns(UserWarning, match="perceptual loss built on it is weak"):
        vgg = VGG19FeatureExtractor(None, layer="relu1_2")
    assert vgg(torch.rand(1, 3, 8, 8)).shape == (1, 64, 8, 8)


def test_loading_errors_name_the_file_and_keys(tmp_path, vgg_file):
    _, state = vgg_file
    missing_file = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        VGG19FeatureExtractor(missing_file)
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth is not a readable VGG19 weights file"):
        VGG19FeatureExtractor(garbage)

    cut = tmp_path / "cut.pth"
    torch.save({k: v for k, v in state.items() if k != "features.34.weight"}, cut)
    with pytest.raises(ValueError, match=r"cut.pth.*missing keys \['features.34.weight'\]"):
        VGG19FeatureExtractor(cut)
    VGG19FeatureExtractor(cut, layer="relu5_3")  # conv5_4 is cut off there anyway

    bn = tmp_path / "vgg19_bn.pth"  # vgg19_bn's BatchNorm at index 1: not vgg19's layout
    torch.save({**state, "features.1.running_mean": torch.zeros(64)}, bn)
    with pytest.raises(ValueError, match=r"vgg19_bn.pth.*unexpected keys \['features.1.running_mean'\]"):
        VGG19FeatureExtractor(bn)

    wrong = tmp_path / "wrong.pth"
    torch.save({**state, "features.0.weight": torch.zeros(32, 3, 3, 3)}, wrong)
    with pytest.raises(ValueError, match=r"wrong.pth.*features.0.weight: file \(32, 3, 3, 3\)"):
        VGG19FeatureExtractor(wrong)

    listed = tmp_path / "list.pth"
    torch.save([1, 2], listed)
    with pytest.raises(ValueError, match="list.pth.*must be a state dict"):
        VGG19FeatureExtractor(listed)


def test_bad_layer_and_inputs():
    with pytest.raises(ValueError, match="layer must be one of"):
        VGG19FeatureExtractor(None, layer="conv6_1")
    with pytest.warns(UserWarning):
        vgg = VGG19FeatureExtractor(None, layer="conv3_1")
    with pytest.raises(ValueError, match=r"at least 4×4 \(2 max-pools before conv3_1\); got 2×8"):
        vgg(torch.rand(1, 3, 2, 8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        vgg(torch.rand(1, 1, 8, 8))
