"""fastsr's RRDBNet against an independent plain-PyTorch copy of BasicSR's RRDBNet layout
(basicsr/archs/rrdbnet_arch.py: torch.cat dense blocks, view/permute pixel_unshuffle), written
here, extended with the RRSB's kept-input lists; and against ESRGAN's original parameter names."""

import json
import math
import os

import pytest
import torch
from rrdb_reference import DENSE, RefRDB, RefRRDB, RefRRDBNet, randomized
from triton_marks import TRITON

from fastsr import RRDB, ResidualDenseBlock, RRDBNet, load_basicsr_state_dict
from fastsr._io import NoDigestWarning
from fastsr.models import SPSAGenerator, load_model

NF, GC, NB = 16, 8, 2  # small widths, two blocks
# Two blocks × three RDBs of kept inputs: all-dense, x_0-only and mixed RDBs.
SPARSE = [
    [[[], [1], [2], [1, 3], [2, 4]], [[], [], [], [], []], DENSE],
    [[[], [], [1], [2, 3], [1, 2, 4]], DENSE, [[], [1], [1, 2], [3], [4]]],
]
# Input sizes per scale: pixel_unshuffle needs H, W divisible by 4 / scale.
SIZES = {4: (12, 10), 2: (12, 10), 1: (12, 8)}


# ---------------------------------------------------------------------------------------------
# Independent reference: BasicSR's layout, torch.cat, optional kept-input lists
# ---------------------------------------------------------------------------------------------


def make_input(scale, batch=2, channels=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, *SIZES[scale], generator=g, dtype=torch.float64)


def make_pair(scale, connections=None, seed=0):
    ref = randomized(RefRRDBNet(3, 3, scale, NF, NB, GC, connections), seed)
    net = RRDBNet(3, 3, scale, NF, NB, GC, connections).double()
    net.load_state_dict(ref.state_dict())
    return ref, net


def esrgan_names(state_dict):
    """BasicSR keys → original ESRGAN keys (xinntao/ESRGAN RRDBNet_arch.py)."""
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "body":  # body.N.rdbK.convJ.p → RRDB_trunk.N.RDBK.convJ.p
            key = ".".join(["RRDB_trunk", parts[1], "RDB" + parts[2][3:]] + parts[3:])
        else:
            renames = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2",
                       "conv_hr": "HRconv"}  # fmt: skip
            key = ".".join([renames.get(parts[0], parts[0])] + parts[1:])
        out[key] = value
    return out


def assert_same(a, b):
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# BasicSR layout
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [4, 2, 1])
def test_matches_basicsr_layout(scale):
    ref, net = make_pair(scale)
    ref_sd, net_sd = ref.state_dict(), net.state_dict()
    assert list(net_sd) == list(ref_sd)
    assert all(net_sd[k].shape == ref_sd[k].shape for k in ref_sd)
    assert "body.1.rdb3.conv5.weight" in net_sd and "conv_hr.bias" in net_sd
    x = make_input(scale)
    out = net(x)
    H, W = SIZES[scale]
    assert out.shape == (2, 3, scale * H, scale * W)
    assert_same(out, ref(x))


@pytest.mark.parametrize("connections", [None, SPARSE], ids=["dense", "sparse"])
def test_gradients_match(connections):
    ref, net = make_pair(2, connections)
    x = make_input(2)
    x_ref, x_net = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(2, 3, 24, 20, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    (ref(x_ref) * g).sum().backward()
    (net(x_net) * g).sum().backward()
    assert_same(x_net.grad, x_ref.grad)
    ref_params = dict(ref.named_parameters())
    for name, p in net.named_parameters():
        # A conv whose output no later conv keeps gets no gradient in the cat-based reference
        # (None); the op's backward may report zeros.
        ref_grad = ref_params[name].grad
        expected = torch.zeros_like(p) if ref_grad is None else ref_grad
        grad = torch.zeros_like(p) if p.grad is None else p.grad
        torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("backend", ["auto", "torch", "reference", TRITON])
def test_float32_backends(backend):
    """Float32 on each backend, error against the float64 reference within 2× that of the
    float32 reference plus a small atol (one sparse block; CUDA when there is one)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    connections = SPARSE[:1]
    ref64 = randomized(RefRRDBNet(3, 3, 4, NF, 1, GC, connections), seed=2).to(device)
    ref32 = RefRRDBNet(3, 3, 4, NF, 1, GC, connections).to(device)
    ref32.load_state_dict(ref64.state_dict())
    net = RRDBNet(3, 3, 4, NF, 1, GC, connections, backend=backend).to(device)
    net.load_state_dict(ref64.state_dict())
    x = torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x = x.to(device)
    expected = ref64(x)
    err = (net(x.float()).double() - expected).abs().max().item()
    err_ref = (ref32(x.float()).double() - expected).abs().max().item()
    assert err <= 2 * err_ref + 1e-5, (err, err_ref)


def test_other_channel_counts():
    ref = randomized(RefRRDBNet(1, 2, 2, NF, 1, GC))
    net = RRDBNet(num_in_ch=1, num_out_ch=2, scale=2, num_feat=NF, num_block=1, num_grow_ch=GC)
    net.double().load_state_dict(ref.state_dict())
    x = make_input(2, batch=1, channels=1)
    assert_same(net(x), ref(x))


# ---------------------------------------------------------------------------------------------
# Foreign checkpoints
# ---------------------------------------------------------------------------------------------


def test_esrgan_names_convert():
    ref, _ = make_pair(4, seed=3)
    esrgan = esrgan_names(ref.state_dict())
    assert "RRDB_trunk.1.RDB3.conv5.weight" in esrgan and "HRconv.weight" in esrgan
    net = RRDBNet(3, 3, 4, NF, NB, GC).double()
    load_basicsr_state_dict(net, esrgan)
    x = make_input(4)
    assert_same(net(x), ref(x))


def test_wrappers_and_module_prefix(tmp_path):
    ref, _ = make_pair(4, seed=3)
    x = make_input(4)
    expected = ref(x)
    sd = ref.state_dict()
    other = {k: torch.zeros_like(v) for k, v in sd.items()}
    prefixed = {"module." + k: v for k, v in esrgan_names(sd).items()}
    for checkpoint in (
        {"params": sd},
        {"params_ema": sd, "params": other},  # params_ema is preferred
        {"params_ema": {"module." + k: v for k, v in sd.items()}},
        prefixed,
    ):
        net = RRDBNet(3, 3, 4, NF, NB, GC).double()
        result = load_basicsr_state_dict(net, checkpoint)
        assert not result.missing_keys and not result.unexpected_keys
        assert_same(net(x), expected)
    path = tmp_path / "net_g.pth"
    torch.save({"params_ema": sd}, path)
    net = RRDBNet(3, 3, 4, NF, NB, GC).double()
    load_basicsr_state_dict(net, path)
    assert_same(net(x), expected)


def test_load_errors_list_keys():
    ref, _ = make_pair(4)
    sd = ref.state_dict()
    net = RRDBNet(3, 3, 4, NF, NB, GC).double()

    extra = dict(sd, **{"conv_extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unknown keys \['conv_extra.weight'\]"):
        load_basicsr_state_dict(net, extra)
    result = load_basicsr_state_dict(net, extra, strict=False)
    assert result.unexpected_keys == ["conv_extra.weight"]

    missing = {k: v for k, v in sd.items() if not k.startswith("conv_hr.")}
    with pytest.raises(ValueError, match=r"missing keys \['conv_hr.weight', 'conv_hr.bias'\]"):
        load_basicsr_state_dict(net, missing)

    three_blocks = RRDBNet(3, 3, 4, NF, 3, GC).double()  # 30 missing keys: the list is cut short
    listed = r"missing keys \['body.2.rdb1.conv1.weight'.*and 18 more\] \(30\)"
    with pytest.raises(ValueError, match=listed):
        load_basicsr_state_dict(three_blocks, sd)

    sparse = RRDBNet(3, 3, 4, NF, NB, GC, SPARSE).double()
    with pytest.raises(ValueError, match=r"shapes do not match.*body.0.rdb1.conv3.weight"):
        load_basicsr_state_dict(sparse, sd)

    with pytest.raises(ValueError, match="do not hold tensors"):
        load_basicsr_state_dict(net, {"optimizers": [], "iter": 5})


# ---------------------------------------------------------------------------------------------
# Sparse connections (RRSB)
# ---------------------------------------------------------------------------------------------


def test_explicit_dense_equals_none():
    dense = [[DENSE] * 3] * NB
    explicit = RRDBNet(3, 3, 4, NF, NB, GC, dense).double()
    default = RRDBNet(3, 3, 4, NF, NB, GC).double()
    explicit.load_state_dict(default.state_dict())  # same keys and shapes
    x = make_input(4)
    assert_same(explicit(x), default(x))
    assert explicit.is_dense and explicit.config()["connections"] is None
    assert "connections=[" not in repr(explicit)


def test_sparse_in_channels_and_outputs():
    ref, net = make_pair(2, SPARSE, seed=7)
    for n, block in enumerate(SPARSE):
        for k, kept in enumerate(block):
            rdb = getattr(net.body[n], f"rdb{k + 1}")
            for j, kept_j in enumerate(kept):
                conv = getattr(rdb, f"conv{j + 1}")
                assert conv.in_channels == NF + GC * len(kept_j)
                assert conv.out_channels == (NF if j == 4 else GC)
    assert net.connections == SPARSE and not net.is_dense
    assert "connections=[[], [1], [2], [1, 3], [2, 4]]" in repr(net)
    x = make_input(2)
    assert_same(net(x), ref(x))


def test_rdb_features_and_rrdb():
    kept = [[], [], [1], [1, 2], [3]]
    rdb = ResidualDenseBlock(NF, GC, kept).double()
    ref = RefRDB(NF, GC, kept).double()
    ref.load_state_dict(rdb.state_dict())
    x = torch.randn(2, NF, 5, 7, dtype=torch.float64)
    feats, ref_feats = rdb.features(x), ref.features(x)
    assert [f.shape[1] for f in feats] == [NF, GC, GC, GC, GC, NF]
    for a, b in zip(feats, ref_feats):
        assert_same(a, b)
    assert_same(rdb(x), ref(x))

    rrdb = RRDB(NF, GC, [kept, None, DENSE]).double()
    ref_rrdb = RefRRDB(NF, GC, [kept, None, DENSE]).double()
    ref_rrdb.load_state_dict(rrdb.state_dict())
    assert rrdb.connections == [kept, DENSE, DENSE]
    assert_same(rrdb(x), ref_rrdb(x))


def test_connections_are_normalised():
    rdb = ResidualDenseBlock(NF, GC, [(), (1,), [2, 1], (3, 1), [4]])
    assert rdb.connections == [[], [1], [1, 2], [1, 3], [4]]
    net = RRDBNet(3, 3, 4, NF, NB, GC, [None, [None, DENSE, [[], [], [], [], []]]])
    assert net.connections[0] == [DENSE] * 3
    assert net.connections[1] == [DENSE, DENSE, [[], [], [], [], []]]


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def test_checkpoint_round_trip_keeps_sparse_config(tmp_path):
    net = randomized(RRDBNet(3, 3, 2, NF, NB, GC, SPARSE), seed=11)
    path = tmp_path / "rrsb.pth"
    net.save(path)
    assert os.listdir(tmp_path) == ["rrsb.pth"]

    config = net.config()
    assert config == {"num_in_ch": 3, "num_out_ch": 3, "scale": 2, "num_feat": NF,
                      "num_block": NB, "num_grow_ch": GC, "connections": SPARSE}  # fmt: skip
    assert json.loads(json.dumps(config)) == config

    loaded = RRDBNet.from_checkpoint(path)
    assert loaded.config() == config and loaded.connections == SPARSE
    assert next(loaded.parameters()).dtype == torch.float64
    x = make_input(2)
    assert_same(loaded(x), net(x))
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format", "kind", "config", "params", "prior", "digest"}  # "params": BasicSR's key
    assert (raw["format"], raw["kind"], raw["prior"]) == ("fastsr.model/1", "rrdbnet", None)
    assert_same(RRDBNet.from_checkpoint(raw, backend="reference")(x), net(x))
    assert load_model(path).config() == config  # any model file, whatever its kind

    # fastsr 0.1's layout, {config, params} without a tag, still loads
    torch.save({"config": config, "params": net.state_dict()}, tmp_path / "old.pth")
    with pytest.warns(NoDigestWarning):
        assert_same(RRDBNet.from_checkpoint(tmp_path / "old.pth")(x), net(x))
    (tmp_path / "old.pth").unlink()

    net.save(str(path))  # overwriting is fine too
    assert os.listdir(tmp_path) == ["rrsb.pth"]


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "net.pth"
    net = RRDBNet(3, 3, 4, NF, 1, GC)
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        net.save(path)
    assert os.listdir(tmp_path) == []  # no target, no temporary file

    monkeypatch.setattr(torch, "save", real_save)
    net.save(path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        RRDBNet(3, 3, 4, NF, 1, GC).save(path)
    assert os.listdir(tmp_path) == ["net.pth"] and path.read_bytes() == before  # old one intact


def test_from_checkpoint_rejects_foreign_files():
    ref, _ = make_pair(4)
    x = make_input(4)
    assert_same(RRDBNet.from_checkpoint({"params_ema": ref.state_dict()})(x), ref(x))  # BasicSR's: detected
    with pytest.raises(ValueError, match=r"unknown keys \['conv_extra.weight'\]"):
        RRDBNet.from_checkpoint(
            {"params_ema": dict(ref.state_dict(), **{"conv_extra.weight": torch.zeros(1)})}
        )
    bad = {"config": dict(RRDBNet(num_block=1).config(), width=3), "params": {}}
    with pytest.raises(ValueError, match=r"does not build a RRDBNet.*'width'"):
        RRDBNet.from_checkpoint(bad)
    spsa = SPSAGenerator(scale=4, num_feat=NF, num_block=1, num_grow_ch=GC, use_spsa=False)
    with pytest.raises(ValueError, match="holds a 'spsagan' generator, not an RRDBNet"):
        RRDBNet.from_checkpoint(
            {
                "format": "fastsr.model/1",
                "kind": "spsagan",
                "config": spsa.config(),
                "params": spsa.state_dict(),
            }
        )


# ---------------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("connections", [None, [[], [], [1], [2], [1, 2, 3]]], ids=["dense", "sparse"])
def test_esrgan_initialisation(connections):
    torch.manual_seed(0)
    rdb = ResidualDenseBlock(64, 32, connections)
    for _ in range(2):  # at construction, and again after reset_parameters
        for j in range(1, 6):
            conv = getattr(rdb, f"conv{j}")
            w = conv.weight
            fan_in = w.shape[1] * 9
            expected_std = 0.1 * math.sqrt(2.0 / fan_in)  # kaiming_normal, a = 0, fan_in
            n = w.numel()  # ≥ 32 · 64 · 9: sample std within ~1.5% (3σ ≈ 3 / sqrt(2n))
            assert abs(w.std().item() / expected_std - 1) < 4 / math.sqrt(2 * n) + 0.005
            assert abs(w.mean().item()) < 4 * expected_std / math.sqrt(n)
            assert torch.count_nonzero(conv.bias) == 0
        before = rdb.conv1.weight.clone()
        rdb.reset_parameters()
        assert not torch.equal(before, rdb.conv1.weight)


def test_net_initialisation_scales_only_dense_blocks():
    torch.manual_seed(0)
    net = RRDBNet(3, 3, 4, 64, 1, 32)
    conv = net.body[0].rdb2.conv3
    assert abs(conv.weight.std().item() / (0.1 * math.sqrt(2 / (128 * 9))) - 1) < 0.05
    # PyTorch's default conv init (kaiming_uniform, a = √5): std = 1 / sqrt(3 · fan_in)
    w = net.conv_body.weight
    assert abs(w.std().item() * math.sqrt(3 * 64 * 9) - 1) < 0.05
    assert torch.count_nonzero(net.conv_body.bias) > 0


# ---------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [3, 8, 0, 2.0, True])
def test_bad_scale(scale):
    with pytest.raises(ValueError, match=r"scale must be one of \(1, 2, 4\)"):
        RRDBNet(scale=scale, num_block=1)


@pytest.mark.parametrize(
    "connections, message",
    [
        ([[DENSE] * 3], r"connections must be None or one entry per block: num_block \(2\).*got 1 entry"),
        ([[DENSE] * 3, [DENSE] * 2], r"connections\[1\] must be None or 3 per-RDB .*got 2 entries"),
        ([[DENSE] * 3, [DENSE, DENSE, DENSE[:4]]], r"connections\[1\]\[2\] \(rdb3\): connections must be 5 lists"),
        ([[DENSE, [[], [2], [], [], []], DENSE], None], r"connections\[0\]\[1\] \(rdb2\): connections\[1\] \(conv2\)"),
        ([[DENSE] * 3, 7], r"connections\[1\] must be None or 3 per-RDB .*got 7"),
        (DENSE, r"num_block \(2\)"),
    ],
)  # fmt: skip
def test_bad_connections(connections, message):
    with pytest.raises(ValueError, match=message):
        RRDBNet(3, 3, 4, NF, NB, GC, connections)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="num_feat must be a positive int; got 0"):
        RRDBNet(num_feat=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        ResidualDenseBlock(NF, GC, backend="cuda")
    net = RRDBNet(3, 3, 1, NF, 1, GC)
    with pytest.raises(ValueError, match=r"divisible by 4 for scale 1.*\(1, 3, 12, 10\)"):
        net(torch.rand(1, 3, 12, 10))
    with pytest.raises(ValueError, match=r"C = num_in_ch = 3; got shape \(1, 4, 12, 8\)"):
        net(torch.rand(1, 4, 12, 8))
