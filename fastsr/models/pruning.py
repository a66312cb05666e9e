"""RRDB → RRSB connection pruning (SPSAGAN paper, §3.2, eq. 8).

A dense block's conv l reads [x_0, x_1, …, x_{l−1}]. SPSAGAN measures how different each
candidate input x_i (i = 1 … l−1) is from the layer's own output x_l,

    DS_{i→l} = ‖x_i − x_l‖₂ / Σ_{p=1}^{l−1} ‖x_p − x_l‖₂                      (eq. 8)

averages it over the last iterations of a trained RRDB network, and, per layer, splits the
l − 1 values into two clusters with k-means: the connections in the cluster with the smaller mean
are dropped (x_i resembles x_l, so feeding it to conv l adds little), unless the two means differ
by less than 5 % — then every connection is kept. x_0 is always kept.

The pipeline, top-down:

    DissimilarityRecorder(net, last_k)   forward hooks → DS per iteration, window of the last K
    prune_layer(ds_values)               the k-means rule for one layer → kept x_i indices
    connection_config(ds_average, …)     the whole net → JSON-serialisable RRSB config
    save_config / load_config            atomic write; validation naming the offending field
    build_rrsb(cfg)                      an RRDBNet with the config's sparse connections

Nested layouts follow fastsr.ops.dense_block: per dense block, five lists indexed by conv
(conv1 … conv5). ``ds[b][r][l − 1][j]`` is DS_{j+1→l} of dense block ``rdb{r+1}`` in
``body[b]``; ``connections[b][r][l − 1]`` lists the kept x_i (i ≥ 1) of conv l. conv1 has no
candidate, so both lists are empty there.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fastsr._io import atomic_write
from fastsr.layers.rrdb import check_net_connections
from fastsr.ops.dense_block import NUM_CONVS, check_connections

__all__ = [
    "CONFIG_FORMAT",
    "DEFAULT_THRESHOLD",
    "KMEANS_PARAMS",
    "DissimilarityRecorder",
    "build_rrsb",
    "connection_config",
    "dissimilarity",
    "load_config",
    "prune_layer",
    "save_config",
]

CONFIG_FORMAT = "fastsr.rrsb/1"
DEFAULT_THRESHOLD = 0.05
KMEANS_PARAMS = {"n_clusters": 2, "n_init": 10, "random_state": 0}
RDB_NAMES = ("rdb1", "rdb2", "rdb3")
# Candidates per conv: conv l has x_1 … x_{l−1}.
NUM_CANDIDATES = tuple(range(NUM_CONVS))  # (0, 1, 2, 3, 4)


# ---------------------------------------------------------------------------------------------
# Eq. 8
# ---------------------------------------------------------------------------------------------


def _channel_mean(x: Tensor) -> Tensor:
    """(B, C, H, W) → (B, H, W): the channel-mean map, comparable across channel counts."""
    return x.mean(dim=1)


def dissimilarity(features: Sequence[Tensor]) -> dict[int, list[float]]:
    """DS_{i→l} of eq. 8 for one dense block.

    Args:
        features: [x_0, x_1, …, x_5] as ``dense_block_reference(..., return_features=True)`` or
            ``ResidualDenseBlock.features`` give them: x_0 (B, nf, H, W), x_1 … x_4
            (B, gc, H, W), x_5 (B, nf, H, W) = conv5's output before the 0.2 residual scaling.

    Returns:
        {l: [DS_{1→l}, …, DS_{l−1→l}]} for l = 1 … 5; conv1 has no candidate (``[]``).

    Norms are Frobenius norms over the whole tensor, batch included (one number per iteration,
    not a mean of per-image ratios). Computed in float64.

    conv5 and unequal widths: x_5 has nf channels, its candidates x_1 … x_4 have gc, so
    ‖x_i − x_5‖ is undefined. For conv5 (always, also when nf == gc, so the definition does not
    change with the widths) every tensor is first reduced to its channel-mean map
    m(x) = x.mean(dim=1), (B, H, W), and eq. 8 is applied to those maps:
    DS_{i→5} = ‖m(x_i) − m(x_5)‖ / Σ_p ‖m(x_p) − m(x_5)‖. Why this reduction: the channels of
    different convs have no correspondence (any pairing of x_5's channel c with x_i's channel c,
    zero-padding, or grouping would be arbitrary, and permuting a conv's output channels — with
    the next conv's input weights — leaves the network unchanged), so the comparison must be
    invariant to permuting each tensor's channels. The only linear reductions over channels with
    that invariance are multiples of the channel sum; the mean (rather than the sum) puts an
    nf-wide and a gc-wide tensor on the same per-channel scale. It keeps the spatial structure
    (where x_i and x_5 respond) and eq. 8's form: DS is still a ratio of L2 distances, so the
    k-means rule needs no change. Layers 2 … 4 use the paper's norm on the full tensors.

    Degenerate case: if every candidate equals x_l (Σ = 0), the ratio is 0/0; each candidate
    then gets 1 / (l − 1) (all equally similar), which the pruning rule keeps.
    """
    if len(features) != NUM_CONVS + 1:
        raise ValueError(
            f"features must be [x_0, …, x_{NUM_CONVS}] ({NUM_CONVS + 1} tensors); got {len(features)}"
        )
    ds: dict[int, list[float]] = {1: []}
    for layer in range(2, NUM_CONVS + 1):
        target = features[layer]
        candidates = features[1:layer]
        if layer == NUM_CONVS:
            target = _channel_mean(target)
            candidates = [_channel_mean(x) for x in candidates]
        dists = []
        for i, x in enumerate(candidates, start=1):
            if x.shape != target.shape:
                raise ValueError(
                    f"features[{i}] must have the shape of features[{layer}] {tuple(target.shape)}"
                    f" to be compared with it; got {tuple(x.shape)}"
                )
            dists.append(torch.linalg.vector_norm((x - target).double()).item())
        total = math.fsum(dists)
        if total == 0.0:
            ds[layer] = [1.0 / len(dists)] * len(dists)
        else:
            ds[layer] = [d / total for d in dists]
    return ds


# ---------------------------------------------------------------------------------------------
# Measurement on a network
# ---------------------------------------------------------------------------------------------


def _dense_blocks(net: nn.Module) -> list[list[nn.Module]]:
    """[block][rdb] → ResidualDenseBlock of an RRDBNet (``net.body[b].rdb1 … rdb3``)."""
    body = getattr(net, "body", None)
    if not isinstance(body, nn.Sequential):
        raise TypeError(f"net must be an RRDBNet with an nn.Sequential `body`; got {type(net).__name__}")
    blocks = []
    for b, rrdb in enumerate(body):
        rdbs = [getattr(rrdb, name, None) for name in RDB_NAMES]
        if any(rdb is None or not hasattr(rdb, "features") for rdb in rdbs):
            raise TypeError(f"net.body[{b}] must have rdb1, rdb2, rdb3 with a `features` method")
        blocks.append(rdbs)
    return blocks


class DissimilarityRecorder:
    """Records eq. 8 on every dense block of an RRDBNet, one sample per forward of the net.

    Usage::

        with DissimilarityRecorder(net, last_k=100) as rec:   # attaches hooks
            for _ in range(100):
                loss = l1(net(lr), hr); ...                  # each forward records one sample
        ds = rec.average()                                    # [block][rdb][conv] → DS list

    A forward hook on each dense block recomputes its features from the block's input with
    ``block.features(x0)`` under ``torch.no_grad`` (detached; the training graph is untouched)
    and computes DS with batch-aggregated norms. A pre-hook on the net opens a sample, a hook
    after it closes it; the last ``last_k`` complete samples are kept (a running window) and
    ``average()`` is their mean. Recording recomputes every block once, so attach it only for
    the iterations you measure; ``detach()`` (or leaving the ``with``) removes every hook, after
    which the forward costs exactly what it did before. Forwards run while attached all count —
    detach before validation.
    """

    def __init__(self, net: nn.Module, last_k: int):
        if int(last_k) < 1:
            raise ValueError(f"last_k must be ≥ 1; got {last_k}")
        self.net = net
        self.last_k = int(last_k)
        self.blocks = _dense_blocks(net)
        self.samples: deque[np.ndarray] = deque(maxlen=self.last_k)  # flat DS vectors
        self.count = 0  # samples recorded in total
        self._current: list[list[dict[int, list[float]] | None]] | None = None
        self._handles: list[Any] = []

    # -- hooks ----------------------------------------------------------------------------------

    def attach(self) -> DissimilarityRecorder:
        if self._handles:
            return self
        self._handles.append(self.net.register_forward_pre_hook(self._open))
        self._handles.append(self.net.register_forward_hook(self._close))
        for b, rdbs in enumerate(self.blocks):
            for r, rdb in enumerate(rdbs):
                self._handles.append(rdb.register_forward_hook(self._block_hook(b, r)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._current = None

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> DissimilarityRecorder:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def _open(self, module, inputs) -> None:
        self._current = [[None] * len(RDB_NAMES) for _ in self.blocks]

    def _block_hook(self, b: int, r: int):
        def hook(module, inputs, output) -> None:
            if self._current is None:  # the block ran outside a forward of the net
                return
            with torch.no_grad():
                feats = module.features(inputs[0].detach())
                self._current[b][r] = dissimilarity(feats)

        return hook

    def _close(self, module, inputs, output) -> None:
        current, self._current = self._current, None
        if current is None or any(ds is None for rdbs in current for ds in rdbs):
            return
        flat = [v for rdbs in current for ds in rdbs for layer in range(1, NUM_CONVS + 1) for v in ds[layer]]
        self.samples.append(np.asarray(flat, dtype=np.float64))
        self.count += 1

    # -- result ---------------------------------------------------------------------------------

    def average(self) -> list[list[list[list[float]]]]:
        """Mean DS over the window: [block][rdb][conv l − 1] → [DS_{1→l}, …, DS_{l−1→l}]."""
        if not self.samples:
            raise RuntimeError("no DS recorded yet: run forwards of the net while the recorder is attached")
        mean = np.mean(np.stack(self.samples), axis=0).tolist()
        out, k = [], 0
        for _ in self.blocks:
            block = []
            for _ in RDB_NAMES:
                rdb = []
                for n in NUM_CANDIDATES:
                    rdb.append(mean[k : k + n])
                    k += n
                block.append(rdb)
            out.append(block)
        return out


# ---------------------------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------------------------


def prune_layer(ds_values: Sequence[float], threshold: float = DEFAULT_THRESHOLD) -> list[int]:
    """Kept inputs of one conv by SPSAGAN's 2-means rule.

    Args:
        ds_values: [DS_{1→l}, …, DS_{l−1→l}], the (averaged) dissimilarities of conv l's
            candidates x_1 … x_{l−1}.
        threshold: the relative gap under which nothing is pruned (paper: 5 %).

    Returns:
        The kept x_i as 1-based indices i (a ``connections`` list for conv l), sorted.

    Rule: scikit-learn ``KMeans(n_clusters=2, n_init=10, random_state=0)`` on the values; with
    m_lo ≤ m_hi the two cluster means, the gap is *relative to the larger mean*,
    ``(m_hi − m_lo) / m_hi``. If it is < ``threshold`` every candidate is kept; otherwise the
    cluster with mean m_lo is dropped (a gap of exactly ``threshold`` prunes). Relative to m_hi,
    the gap lies in [0, 1] for non-negative DS, whatever the number of candidates. Zero or one
    candidate, or all values equal (one distinct value: no second cluster), keep everything.
    """
    values = np.asarray(ds_values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"ds_values must be finite and ≥ 0; got {list(ds_values)}")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1); got {threshold}")
    everything = list(range(1, values.size + 1))
    if values.size < 2 or np.unique(values).size < 2:
        return everything

    from sklearn.cluster import KMeans  # imported here: slow to import, needed only to prune

    km = KMeans(**KMEANS_PARAMS).fit(values.reshape(-1, 1))
    means = km.cluster_centers_.reshape(-1)
    lo, hi = int(np.argmin(means)), int(np.argmax(means))
    if (means[hi] - means[lo]) / means[hi] < threshold:
        return everything
    return [i for i, label in zip(everything, km.labels_) if label != lo]


def connection_config(
    ds_average: Sequence[Sequence[Sequence[Sequence[float]]]],
    *,
    num_feat: int,
    num_grow_ch: int,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict:
    """The RRSB config (JSON-serialisable) from averaged DS (``DissimilarityRecorder.average()``).

    Returns:
        {"format": "fastsr.rrsb/1", "num_feat", "num_grow_ch", "num_block",
         "rule": {"threshold", "gap": "relative_to_larger_mean", "kmeans": {…}},
         "ds": [block][rdb][conv] → DS list, "connections": [block][rdb][conv] → kept x_i}
    """
    ds = _check_ds(ds_average, "ds_average")
    connections = [[[prune_layer(layer, threshold) for layer in rdb] for rdb in block] for block in ds]
    return {
        "format": CONFIG_FORMAT,
        "num_feat": int(num_feat),
        "num_grow_ch": int(num_grow_ch),
        "num_block": len(ds),
        "rule": {
            "threshold": float(threshold),
            "gap": "relative_to_larger_mean",
            "kmeans": dict(KMEANS_PARAMS),
        },
        "ds": ds,
        "connections": connections,
    }


def _check_ds(ds: Any, name: str) -> list[list[list[list[float]]]]:
    if not isinstance(ds, Sequence) or isinstance(ds, str) or len(ds) == 0:
        raise ValueError(
            f"{name} must be a non-empty list [block][rdb][conv] of DS lists; got {type(ds).__name__}"
        )
    out = []
    for b, block in enumerate(ds):
        if not isinstance(block, Sequence) or len(block) != len(RDB_NAMES):
            raise ValueError(f"{name}[{b}] must hold {len(RDB_NAMES)} dense blocks; got {block!r}")
        rows = []
        for r, rdb in enumerate(block):
            if not isinstance(rdb, Sequence) or len(rdb) != NUM_CONVS:
                raise ValueError(f"{name}[{b}][{r}] must be {NUM_CONVS} lists (conv1 … conv5); got {rdb!r}")
            layers = []
            for c, values in enumerate(rdb):
                try:
                    values = [float(v) for v in values]
                except (TypeError, ValueError):
                    raise ValueError(
                        f"{name}[{b}][{r}][{c}] must be a list of numbers; got {values!r}"
                    ) from None
                if len(values) != c or not all(math.isfinite(v) and v >= 0 for v in values):
                    raise ValueError(
                        f"{name}[{b}][{r}][{c}] (conv{c + 1}) must hold {c} finite DS values ≥ 0; got {values}"
                    )
                layers.append(values)
            rows.append(layers)
        out.append(rows)
    return out


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------


def save_config(path: str | os.PathLike, cfg: dict) -> Path:
    """Validates ``cfg`` and writes it as JSON atomically (temporary file + rename)."""
    cfg = validate_config(cfg)
    return atomic_write(path, lambda f: f.write((json.dumps(cfg, indent=1) + "\n").encode()))


def load_config(path: str | os.PathLike) -> dict:
    """Reads and validates an RRSB config written by :func:`save_config` (JSON: data only, nothing
    in it can run code). FileNotFoundError for a missing file; ValueError naming the file for
    anything that is not a valid config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"connection config {path} does not exist"
            if not path.exists()
            else f"connection config {path} is not a file"
        )
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a JSON connection config ({type(e).__name__}: {e})") from None
    try:
        return validate_config(cfg)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def validate_config(cfg: Any) -> dict:
    """A normalised copy of ``cfg``; ValueError naming the first bad field."""
    if not isinstance(cfg, dict):
        raise ValueError(f"config must be a JSON object; got {type(cfg).__name__}")
    for key in ("format", "num_feat", "num_grow_ch", "num_block", "rule", "ds", "connections"):
        if key not in cfg:
            raise ValueError(f"config is missing field {key!r}")
    if cfg["format"] != CONFIG_FORMAT:
        raise ValueError(f"config field 'format' must be {CONFIG_FORMAT!r}; got {cfg['format']!r}")
    for key in ("num_feat", "num_grow_ch", "num_block"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"config field {key!r} must be a positive int; got {value!r}")
    rule = cfg["rule"]
    if not isinstance(rule, dict) or not isinstance(rule.get("threshold"), (int, float)):
        raise ValueError(f"config field 'rule' must be an object with a numeric 'threshold'; got {rule!r}")
    ds = _check_ds(cfg["ds"], "config field 'ds'")
    connections = cfg["connections"]
    if not isinstance(connections, list) or len(connections) != cfg["num_block"]:
        raise ValueError(
            f"config field 'connections' must hold num_block = {cfg['num_block']} blocks; "
            f"got {len(connections) if isinstance(connections, list) else type(connections).__name__}"
        )
    if len(ds) != cfg["num_block"]:
        raise ValueError(f"config field 'ds' must hold num_block = {cfg['num_block']} blocks; got {len(ds)}")
    try:  # the network's own check; a config stores every dense block's lists explicitly
        per_block = check_net_connections(connections, cfg["num_block"])
    except ValueError as e:
        raise ValueError(f"config field 'connections': {e}") from None
    checked = [[check_connections(rdb) for rdb in (block or [None] * len(RDB_NAMES))] for block in per_block]
    return {**cfg, "rule": dict(rule), "ds": ds, "connections": checked}


# ---------------------------------------------------------------------------------------------
# Building the pruned network
# ---------------------------------------------------------------------------------------------


def build_rrsb(cfg: dict, **kwargs) -> nn.Module:
    """An RRDBNet with the config's sparse connections (an RRSB network), freshly initialised.

    ``kwargs`` go to ``RRDBNet`` (``num_in_ch`` = 3, ``num_out_ch`` = 3, ``scale`` = 4 unless
    given); the widths, depth and connections come from the config and cannot be overridden.
    """
    from fastsr.models.rrdbnet import RRDBNet

    cfg = validate_config(cfg)
    clash = sorted({"num_feat", "num_grow_ch", "num_block", "connections"} & kwargs.keys())
    if clash:
        raise ValueError(f"build_rrsb takes {', '.join(clash)} from the config, not as arguments")
    kwargs = {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, **kwargs}
    return RRDBNet(
        num_feat=cfg["num_feat"],
        num_grow_ch=cfg["num_grow_ch"],
        num_block=cfg["num_block"],
        connections=cfg["connections"],
        **kwargs,
    )
