"""RRDB → RRSB pruning (fastsr.models.pruning): eq. 8 against numpy, the k-means rule against a brute-force
1-D 2-means, the recorder against per-forward DS computed by hand, the config file format."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from fastsr.models.pruning import (
    CONFIG_FORMAT,
    DissimilarityRecorder,
    build_rrsb,
    connection_config,
    dissimilarity,
    load_config,
    prune_layer,
    save_config,
)
from fastsr.ops.dense_block import check_connections, dense_block_reference

NF, GC = 6, 4


# ---------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------


def ds_numpy(features, layer):
    """Eq. 8 by hand in numpy float64; conv5 on channel-mean maps."""
    arrays = [np.asarray(f, dtype=np.float64) for f in features]
    if layer == 5:
        arrays = [a.mean(axis=1) for a in arrays]
    target = arrays[layer]
    dists = [np.sqrt(((arrays[i] - target) ** 2).sum()) for i in range(1, layer)]
    return [d / sum(dists) for d in dists]


def two_means_brute_force(values):
    """Optimal 1-D 2-means: the best split of the sorted values (k-means clusters on a line are
    intervals); returns the kept 1-based indices by the paper's rule."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values)
    best = None
    for cut in range(1, len(values)):
        lo, hi = values[order[:cut]], values[order[cut:]]
        sse = ((lo - lo.mean()) ** 2).sum() + ((hi - hi.mean()) ** 2).sum()
        if best is None or sse < best[0]:
            best = (sse, lo.mean(), hi.mean(), set(order[:cut].tolist()))
    _, m_lo, m_hi, low = best
    if (m_hi - m_lo) / m_hi < 0.05:
        return list(range(1, len(values) + 1))
    return [i + 1 for i in range(len(values)) if i not in low]


def random_features(gen, batch=2, h=5, w=7, nf=NF, gc=GC):
    return (
        [torch.randn(batch, nf, h, w, generator=gen, dtype=torch.float64)]
        + [torch.randn(batch, gc, h, w, generator=gen, dtype=torch.float64) for _ in range(4)]
        + [torch.randn(batch, nf, h, w, generator=gen, dtype=torch.float64)]
    )


# ---------------------------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------------------------


def test_clearly_separated_low_cluster_is_pruned():
    assert prune_layer([0.05, 0.45, 0.06, 0.44]) == [2, 4]
    assert prune_layer([0.1, 0.9]) == [2]
    assert prune_layer([0.3, 0.3, 0.4]) == [3]


def test_means_within_five_percent_keep_everything():
    # clusters {0.245, 0.25} and {0.25 + ε …}: means ≈ 0.2475 and 0.2575, gap ≈ 3.9 % of 0.2575
    assert prune_layer([0.245, 0.26, 0.25, 0.255]) == [1, 2, 3, 4]
    assert prune_layer([0.49, 0.51]) == [1, 2]  # gap 0.02 / 0.51 ≈ 3.9 %


def test_gap_is_relative_to_the_larger_mean_and_five_percent_prunes():
    assert prune_layer([0.96, 1.0]) == [1, 2]  # 4 %
    assert prune_layer([0.95, 1.0]) == [2]  # 5 %: not "less than 5 %"
    assert prune_layer([0.96, 1.0], threshold=0.03) == [2]
    assert prune_layer([0.1, 0.9], threshold=0.0) == [2]


def test_single_empty_and_identical_candidates_are_kept():
    assert prune_layer([]) == []
    assert prune_layer([1.0]) == [1]
    assert prune_layer([1 / 3] * 3) == [1, 2, 3]
    assert prune_layer([0.0, 0.0]) == [1, 2]


@pytest.mark.parametrize("seed", range(20))
def test_rule_matches_brute_force_two_means(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 5))
    values = rng.dirichlet(np.ones(n))
    assert prune_layer(values) == two_means_brute_force(values)


def test_rule_rejects_bad_values():
    with pytest.raises(ValueError, match="ds_values"):
        prune_layer([0.5, float("nan")])
    with pytest.raises(ValueError, match="ds_values"):
        prune_layer([-0.1, 1.1])
    with pytest.raises(ValueError, match="threshold"):
        prune_layer([0.1, 0.9], threshold=1.5)


# ---------------------------------------------------------------------------------------------
# Eq. 8
# ---------------------------------------------------------------------------------------------


def test_dissimilarity_of_a_copy_is_zero():
    gen = torch.Generator().manual_seed(0)
    feats = random_features(gen)
    feats[3] = feats[2].clone()  # x_2 = x_3 → DS_{2→3} = 0, DS_{1→3} = 1
    feats[4] = feats[1].clone()  # x_1 = x_4 → DS_{1→4} = 0
    ds = dissimilarity(feats)
    assert ds[1] == [] and ds[2] == [1.0]
    assert ds[3] == [1.0, 0.0]
    assert ds[4][0] == 0.0
    np.testing.assert_allclose(ds[4], ds_numpy(feats, 4), rtol=1e-12)


def test_dissimilarity_on_constant_maps_by_hand():
    # x_1 = 1, x_2 = 2, x_3 = 4, x_4 = 7 everywhere (gc wide): ‖x_i − x_l‖ = |c_i − c_l| · √n
    shape = (2, GC, 3, 3)
    consts = {1: 1.0, 2: 2.0, 3: 4.0, 4: 7.0}
    feats = [torch.zeros(2, NF, 3, 3)] + [torch.full(shape, consts[i]) for i in range(1, 5)]
    feats.append(torch.full((2, NF, 3, 3), 5.0))  # x_5: channel mean 5
    ds = dissimilarity(feats)
    np.testing.assert_allclose(ds[3], [3 / 5, 2 / 5])
    np.testing.assert_allclose(ds[4], [6 / 14, 5 / 14, 3 / 14])
    np.testing.assert_allclose(ds[5], [4 / 10, 3 / 10, 1 / 10, 2 / 10])


@pytest.mark.parametrize("batch,h,w", [(1, 4, 4), (3, 5, 7)])
def test_dissimilarity_matches_numpy(batch, h, w):
    gen = torch.Generator().manual_seed(batch)
    feats = random_features(gen, batch, h, w)
    ds = dissimilarity(feats)
    for layer in range(2, 6):
        np.testing.assert_allclose(ds[layer], ds_numpy(feats, layer), rtol=1e-12)
        assert sum(ds[layer]) == pytest.approx(1.0)


def test_conv5_compares_channel_mean_maps_of_different_widths():
    gen = torch.Generator().manual_seed(1)
    feats = random_features(gen, nf=10, gc=3)
    # x_5 (10 channels) with x_2's channel-mean map (3 channels) but otherwise unrelated channels
    noise = torch.randn(2, 10, 5, 7, generator=gen, dtype=torch.float64)
    feats[5] = feats[2].mean(dim=1, keepdim=True) + noise - noise.mean(dim=1, keepdim=True)
    ds = dissimilarity(feats)
    assert ds[5][1] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(ds[5], ds_numpy(feats, 5), rtol=1e-12, atol=1e-12)
    # invariant to permuting any tensor's channels
    feats[5] = feats[5][:, torch.randperm(10, generator=gen)]
    feats[3] = feats[3][:, torch.randperm(3, generator=gen)]
    np.testing.assert_allclose(dissimilarity(feats)[5], ds[5], rtol=1e-12, atol=1e-12)


def test_dissimilarity_degenerate_and_bad_inputs():
    x = torch.ones(1, GC, 2, 2)
    feats = [torch.ones(1, NF, 2, 2)] + [x] * 4 + [torch.ones(1, NF, 2, 2)]
    ds = dissimilarity(feats)  # every candidate equals x_l: 0/0 → uniform
    assert ds[4] == [1 / 3] * 3 and ds[5] == [0.25] * 4
    assert prune_layer(ds[4]) == [1, 2, 3]
    with pytest.raises(ValueError, match="features must be"):
        dissimilarity(feats[:5])
    bad = list(feats)
    bad[2] = torch.ones(1, GC + 1, 2, 2)
    with pytest.raises(ValueError, match=r"features\[1\]"):
        dissimilarity(bad)


# ---------------------------------------------------------------------------------------------
# Recorder, on a stand-in with the RRDBNet layout (body[b].rdb1 … rdb3 with `features`)
# ---------------------------------------------------------------------------------------------


class TinyRDB(nn.Module):
    def __init__(self, nf, gc, connections=None):
        super().__init__()
        self.connections = check_connections(connections)
        self.convs = nn.ModuleList(
            nn.Conv2d(nf + gc * len(kept), gc if layer < 4 else nf, 3, padding=1)
            for layer, kept in enumerate(self.connections)
        )

    def _params(self):
        return [c.weight for c in self.convs], [c.bias for c in self.convs]

    def features(self, x):
        return dense_block_reference(x, *self._params(), self.connections, return_features=True)

    def forward(self, x):
        return dense_block_reference(x, *self._params(), self.connections)


class TinyRRDB(nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = TinyRDB(nf, gc), TinyRDB(nf, gc), TinyRDB(nf, gc)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class TinyNet(nn.Module):
    def __init__(self, nf=NF, gc=GC, num_block=2):
        super().__init__()
        self.conv_first = nn.Conv2d(3, nf, 3, padding=1)
        self.body = nn.Sequential(*[TinyRRDB(nf, gc) for _ in range(num_block)])
        self.conv_last = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, x):
        return self.conv_last(self.body(self.conv_first(x)))

    def ds_by_hand(self, x):
        """[block][rdb][conv] DS of one forward, following the data through the blocks."""
        out = []
        with torch.no_grad():
            h = self.conv_first(x)
            for rrdb in self.body:
                block, y = [], h
                for rdb in (rrdb.rdb1, rrdb.rdb2, rrdb.rdb3):
                    feats = rdb.features(y)
                    block.append([ds_numpy(feats, layer) if layer > 1 else [] for layer in range(1, 6)])
                    y = rdb(y)
                out.append(block)
                h = rrdb(h)
        return out


def _hooks(net):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())


def test_recorder_averages_the_last_k_forwards():
    torch.manual_seed(0)
    net = TinyNet()
    inputs = [torch.randn(2, 3, 6, 5) for _ in range(5)]
    with DissimilarityRecorder(net, last_k=3) as rec:
        for x in inputs:
            net(x).sum().backward()  # training-style forwards; recording must not break autograd
    assert rec.count == 5 and len(rec.samples) == 3
    expected = np.mean(
        [
            np.concatenate([np.ravel(v) for b in net.ds_by_hand(x) for r in b for v in r if v])
            for x in inputs[-3:]
        ],
        axis=0,
    )
    got = rec.average()
    assert len(got) == 2 and all(len(b) == 3 for b in got)
    assert all([len(layer) for layer in rdb] == [0, 1, 2, 3, 4] for b in got for rdb in b)
    flat = np.concatenate([np.ravel(v) for b in got for r in b for v in r if v])
    np.testing.assert_allclose(flat, expected, rtol=1e-5)


def test_recorder_leaves_gradients_alone_and_detaches_cleanly():
    torch.manual_seed(0)
    net = TinyNet(num_block=1)
    x = torch.randn(2, 3, 4, 4)
    net(x).square().sum().backward()
    reference = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    rec = DissimilarityRecorder(net, last_k=2).attach()
    assert rec.attached and _hooks(net) == 2 + 3
    net(x).square().sum().backward()
    for p, g in zip(net.parameters(), reference):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)
    rec.detach()
    assert not rec.attached and _hooks(net) == 0
    net(x)
    assert rec.count == 1
    rec.detach()  # idempotent


def test_recorder_errors():
    with pytest.raises(RuntimeError, match="no DS recorded"):
        DissimilarityRecorder(TinyNet(), last_k=2).average()
    with pytest.raises(ValueError, match="last_k"):
        DissimilarityRecorder(TinyNet(), last_k=0)
    with pytest.raises(TypeError, match="body"):
        DissimilarityRecorder(nn.Conv2d(3, 3, 1), last_k=2)


# ---------------------------------------------------------------------------------------------
# Config file
# ---------------------------------------------------------------------------------------------


def hand_ds():
    separated = [[], [1.0], [0.1, 0.9], [0.05, 0.45, 0.5], [0.3, 0.3, 0.02, 0.38]]
    close = [[], [1.0], [0.49, 0.51], [0.33, 0.33, 0.34], [0.25, 0.25, 0.25, 0.25]]
    return [[separated, close, separated], [close, close, separated]]


def test_connection_config_applies_the_rule_per_conv():
    cfg = connection_config(hand_ds(), num_feat=NF, num_grow_ch=GC)
    assert cfg["format"] == CONFIG_FORMAT and cfg["num_block"] == 2
    assert cfg["rule"]["threshold"] == 0.05 and cfg["rule"]["kmeans"]["n_clusters"] == 2
    sparse = [[], [1], [2], [2, 3], [1, 2, 4]]
    dense = [[], [1], [1, 2], [1, 2, 3], [1, 2, 3, 4]]
    assert cfg["connections"] == [[sparse, dense, sparse], [dense, dense, sparse]]
    assert cfg["ds"] == hand_ds()


def test_config_round_trip(tmp_path):
    cfg = connection_config(hand_ds(), num_feat=NF, num_grow_ch=GC)
    path = save_config(tmp_path / "run" / "rrsb.json", cfg)
    assert json.loads(path.read_text()) == cfg
    assert load_config(path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["rrsb.json"]  # no temporary left behind


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda c: c.pop("connections"), "missing field 'connections'"),
        (lambda c: c.update(format="fastsr.rrsb/0"), "'format'"),
        (lambda c: c.update(num_feat=0), "'num_feat'"),
        (lambda c: c.update(num_block=3), "num_block = 3"),
        (lambda c: c.update(rule={}), "'rule'"),
        (lambda c: c["connections"][1][2].__setitem__(3, [1, 4]), r"connections\[1\]\[2\].*conv4"),
        (lambda c: c["connections"][0].pop(), r"connections\[0\]"),
        (lambda c: c["ds"][0][1].__setitem__(2, [0.5]), r"'ds'\[0\]\[1\]\[2\]"),
    ],
)
def test_load_config_names_the_bad_field(tmp_path, edit, match):
    cfg = json.loads(json.dumps(connection_config(hand_ds(), num_feat=NF, num_grow_ch=GC)))
    edit(cfg)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match):
        load_config(path)
    with pytest.raises(ValueError, match=match):
        save_config(tmp_path / "out.json", cfg)
    assert not (tmp_path / "out.json").exists()


def test_load_config_rejects_non_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"x\.json is not a JSON connection config"):
        load_config(path)


def test_build_rrsb_conv_inputs_follow_the_config():
    rrdb = pytest.importorskip("fastsr.models.rrdbnet")
    cfg = connection_config(hand_ds(), num_feat=NF, num_grow_ch=GC)
    net = build_rrsb(cfg)
    assert isinstance(net, rrdb.RRDBNet) and len(net.body) == 2
    for b, rrdb_block in enumerate(net.body):
        for r, name in enumerate(("rdb1", "rdb2", "rdb3")):
            rdb = getattr(rrdb_block, name)
            kept = cfg["connections"][b][r]
            assert [list(k) for k in rdb.connections] == kept
            for layer in range(1, 6):
                conv = getattr(rdb, f"conv{layer}")
                assert conv.in_channels == NF + GC * len(kept[layer - 1])
                assert conv.out_channels == (GC if layer < 5 else NF)
    assert net(torch.randn(1, 3, 4, 4)).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="num_feat"):
        build_rrsb(cfg, num_feat=8)
