"""ESRGAN's RRDB network with SPSAGAN's sparse connections (RRSB; paper 000, section 3.2).

    RDB:      x_l = lrelu(conv_l([x_0, x_i for i in kept_l]), 0.2)    l = 1 … 4
              x_5 = conv_5([x_0, x_i for i in kept_5]);   out = 0.2 · x_5 + x_0
    RRDB:     out = 0.2 · rdb3(rdb2(rdb1(x))) + x
    RRDBNet:  pixel_unshuffle by 4 / scale (scales 1, 2) → conv_first → feat
              feat + conv_body(body(feat)) → 2 × (nearest ×2 → conv → lrelu) → conv_hr → lrelu
              → conv_last

Module layout, parameter names, initialisation and forward are those of BasicSR's
basicsr/archs/rrdbnet_arch.py, so BasicSR checkpoints load unchanged and original ESRGAN ones
(xinntao/ESRGAN) convert: see :func:`load_basicsr_state_dict`. With every connection kept (the
default) this *is* ESRGAN's RRDBNet; with fewer it is the RRSB net, whose convs are narrower.
The dense blocks run through :func:`fastsr.ops.dense_block` (no ``torch.cat``).

A pruned net is only rebuilt with its connections, so they travel in its checkpoint:
:meth:`RRDBNet.save` writes ``{"config": net.config(), "params": state_dict}`` and
:meth:`RRDBNet.from_checkpoint` rebuilds the net from that file alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastsr._io import load_state, save_state
from fastsr.ops.dense_block import (
    BACKENDS,
    NUM_CONVS,
    check_connections,
    dense_block,
    dense_block_reference,
    dense_connections,
)

__all__ = [
    "ResidualDenseBlock",
    "RRDB",
    "RRDBNet",
    "check_net_connections",
    "convert_esrgan_state_dict",
    "load_basicsr_state_dict",
]

NEGATIVE_SLOPE = 0.2
RESIDUAL_SCALE = 0.2  # RRDB's 0.2 · rdb3(…) + x (the dense block's own 0.2 lives in the op)
INIT_SCALE = 0.1  # ESRGAN: kaiming_normal · 0.1 in the dense blocks
RDBS_PER_RRDB = 3
SCALES = (1, 2, 4)

# Per-RDB connections: five lists of kept inputs (conv1 … conv5), as fastsr.ops.dense_block.
RDBConnections = Sequence[Sequence[int]]


def _describe(value: Any) -> str:
    """How many entries a sequence has, else its repr: for error messages."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return f"{len(value)} entr{'y' if len(value) == 1 else 'ies'}"
    return repr(value)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


def _check_backend(backend: Any) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")


# ---------------------------------------------------------------------------------------------
# Residual dense block (RDB; RRSB's sparse block when connections are dropped)
# ---------------------------------------------------------------------------------------------


class ResidualDenseBlock(nn.Module):
    """ESRGAN's residual dense block, with optional sparse connections.

    Args:
        num_feat: nf, channels of the block's input and output.
        num_grow_ch: gc, channels each of conv1 … conv4 adds.
        connections: five lists, the kept inputs x_i (i ≥ 1) of conv1 … conv5 (x_0 is always
            kept); None = dense ([[], [1], [1, 2], [1, 2, 3], [1, 2, 3, 4]]).
        backend: passed to :func:`fastsr.ops.dense_block` ("auto", "triton", "torch",
            "reference").

    Parameters (BasicSR's names): conv1 … conv5, 3×3 convs with bias; conv l reads
    nf + gc · len(kept_l) channels, conv1 … conv4 write gc, conv5 writes nf. Initialised as
    BasicSR's ``default_init_weights(…, 0.1)``: kaiming_normal (fan_in, a = 0) · 0.1, bias 0.

    Attributes:
        connections: the normalised connections (five sorted lists), always explicit.

    Shapes: x (B, nf, H, W) → (B, nf, H, W).
    """

    def __init__(
        self,
        num_feat: int = 64,
        num_grow_ch: int = 32,
        connections: RDBConnections | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        _check_positive_int("num_feat", num_feat)
        _check_positive_int("num_grow_ch", num_grow_ch)
        _check_backend(backend)
        self.num_feat, self.num_grow_ch, self.backend = num_feat, num_grow_ch, backend
        self.connections = check_connections(connections)
        for layer, kept in enumerate(self.connections, start=1):
            in_ch = num_feat + num_grow_ch * len(kept)
            out_ch = num_feat if layer == NUM_CONVS else num_grow_ch
            self.add_module(f"conv{layer}", nn.Conv2d(in_ch, out_ch, 3, 1, 1))
        self.reset_parameters()

    @property
    def convs(self) -> list[nn.Conv2d]:
        return [getattr(self, f"conv{layer}") for layer in range(1, NUM_CONVS + 1)]

    @property
    def is_dense(self) -> bool:
        return self.connections == dense_connections()

    def reset_parameters(self) -> None:
        """kaiming_normal (fan_in, a = 0) scaled by 0.1, bias 0 (ESRGAN / BasicSR)."""
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in", nonlinearity="leaky_relu")
            with torch.no_grad():
                conv.weight.mul_(INIT_SCALE)
            nn.init.zeros_(conv.bias)

    def extra_repr(self) -> str:
        text = f"num_feat={self.num_feat}, num_grow_ch={self.num_grow_ch}"
        if not self.is_dense:
            text += f", connections={self.connections}"
        return text + f", backend={self.backend!r}"

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, nf, H, W) → 0.2 · x_5 + x: (B, nf, H, W)."""
        convs = self.convs
        return dense_block(
            x,
            [conv.weight for conv in convs],
            [conv.bias for conv in convs],
            self.connections,
            backend=self.backend,
        )

    def features(self, x: Tensor) -> list[Tensor]:
        """[x_0, x_1, …, x_5]: the block's input, conv1 … conv4's activations (B, gc, H, W) and
        conv5's output (B, nf, H, W) before the residual. Computed with the reference
        (``torch.cat``); for pruning's distance statistics, not for speed."""
        convs = self.convs
        return dense_block_reference(
            x,
            [conv.weight for conv in convs],
            [conv.bias for conv in convs],
            self.connections,
            return_features=True,
        )


# ---------------------------------------------------------------------------------------------
# Residual-in-residual dense block
# ---------------------------------------------------------------------------------------------


class RRDB(nn.Module):
    """Three residual dense blocks in a residual: out = 0.2 · rdb3(rdb2(rdb1(x))) + x.

    Args:
        num_feat, num_grow_ch, backend: as :class:`ResidualDenseBlock`.
        connections: None (all dense), or three per-RDB connections (rdb1, rdb2, rdb3), each
            five lists or None (dense).

    Shapes: x (B, nf, H, W) → (B, nf, H, W).
    """

    def __init__(
        self,
        num_feat: int,
        num_grow_ch: int = 32,
        connections: Sequence[RDBConnections | None] | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        per_rdb = _check_rrdb_connections(connections, "connections")
        self.rdb1, self.rdb2, self.rdb3 = (
            ResidualDenseBlock(num_feat, num_grow_ch, kept, backend=backend) for kept in per_rdb
        )

    @property
    def rdbs(self) -> list[ResidualDenseBlock]:
        return [self.rdb1, self.rdb2, self.rdb3]

    @property
    def connections(self) -> list[list[list[int]]]:
        return [rdb.connections for rdb in self.rdbs]

    def reset_parameters(self) -> None:
        for rdb in self.rdbs:
            rdb.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, nf, H, W) → (B, nf, H, W)."""
        out = self.rdb3(self.rdb2(self.rdb1(x)))  # (B, nf, H, W)
        return out * RESIDUAL_SCALE + x


def _check_rrdb_connections(connections: Any, where: str) -> list[list[list[int]] | None]:
    """Three per-RDB connections (None → three dense blocks); each checked by check_connections,
    with errors naming the entry."""
    if connections is None:
        return [None] * RDBS_PER_RRDB
    if not isinstance(connections, Sequence) or len(connections) != RDBS_PER_RRDB:
        got = _describe(connections)
        raise ValueError(
            f"{where} must be None or {RDBS_PER_RRDB} per-RDB connections (rdb1, rdb2, rdb3), "
            f"each five lists (conv1 … conv5); got {got}"
        )
    out = []
    for k, kept in enumerate(connections):
        try:
            out.append(check_connections(kept))
        except ValueError as err:
            raise ValueError(f"{where}[{k}] (rdb{k + 1}): {err}") from None
    return out


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


class RRDBNet(nn.Module):
    """ESRGAN's generator (BasicSR's RRDBNet), dense or with RRSB's sparse connections.

    Args:
        num_in_ch, num_out_ch: image channels in and out.
        scale: 4, 2 or 1. Scales 2 and 1 pixel-unshuffle the input by 2 and 4 first (so conv_first
            reads num_in_ch · 4 or · 16 channels and H, W must be divisible by 2 or 4), then
            upsample ×4, as BasicSR (Real-ESRGAN) does.
        num_feat: nf, the trunk's channels.
        num_block: number of RRDBs in the body.
        num_grow_ch: gc, the dense blocks' growth channels.
        connections: None (dense: ESRGAN), or one entry per RRDB (num_block × 3 × 5): for each
            block three per-RDB connections (rdb1, rdb2, rdb3), each five lists of kept inputs
            (see :class:`ResidualDenseBlock`); a block or an RDB given as None is dense.
        backend: passed to :func:`fastsr.ops.dense_block`. A runtime choice, not part of
            :meth:`config`.

    Parameters (BasicSR's keys): conv_first, body.N.rdbK.convJ (N < num_block, K ∈ 1…3,
    J ∈ 1…5), conv_body, conv_up1, conv_up2, conv_hr, conv_last, all 3×3 with bias. The dense
    blocks get ESRGAN's initialisation (kaiming · 0.1); the other convs PyTorch's default, as in
    BasicSR.

    Attributes:
        connections: normalised, always explicit: num_block × 3 × 5 sorted lists.

    Shapes: x (B, num_in_ch, H, W) → (B, num_out_ch, scale · H, scale · W).
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        connections: Sequence[Sequence[RDBConnections | None] | None] | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if type(scale) is not int or scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}; got {scale!r}")
        for name, value in (
            ("num_in_ch", num_in_ch),
            ("num_out_ch", num_out_ch),
            ("num_feat", num_feat),
            ("num_block", num_block),
            ("num_grow_ch", num_grow_ch),
        ):
            _check_positive_int(name, value)
        _check_backend(backend)
        per_block = check_net_connections(connections, num_block)
        self.num_in_ch, self.num_out_ch, self.scale = num_in_ch, num_out_ch, scale
        self.num_feat, self.num_block, self.num_grow_ch = num_feat, num_block, num_grow_ch
        self.backend = backend
        self.unshuffle = 4 // scale  # pixel_unshuffle factor: 1 (none), 2 or 4

        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(
            *(RRDB(num_feat, num_grow_ch, kept, backend=backend) for kept in per_block)
        )
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    @property
    def rdbs(self) -> list[ResidualDenseBlock]:
        """All dense blocks, in forward order (body.0.rdb1, body.0.rdb2, …)."""
        return [rdb for block in self.body for rdb in block.rdbs]

    @property
    def connections(self) -> list[list[list[list[int]]]]:
        return [block.connections for block in self.body]

    @property
    def is_dense(self) -> bool:
        return all(rdb.is_dense for rdb in self.rdbs)

    def reset_parameters(self) -> None:
        """PyTorch's default for the trunk convs, ESRGAN's kaiming · 0.1 for the dense blocks."""
        for conv in (
            self.conv_first,
            self.conv_body,
            self.conv_up1,
            self.conv_up2,
            self.conv_hr,
            self.conv_last,
        ):
            conv.reset_parameters()
        for block in self.body:
            block.reset_parameters()

    def extra_repr(self) -> str:
        return (
            f"num_in_ch={self.num_in_ch}, num_out_ch={self.num_out_ch}, scale={self.scale}, "
            f"num_feat={self.num_feat}, num_block={self.num_block}, "
            f"num_grow_ch={self.num_grow_ch}, connections={'dense' if self.is_dense else 'sparse'}"
        )

    # -- forward --------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, num_in_ch, H, W) → (B, num_out_ch, scale · H, scale · W)."""
        self._check_input(x)
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)  # (B, num_in_ch · r², H / r, W / r)
        feat = self.conv_first(x)  # (B, nf, h, w)
        feat = feat + self.conv_body(self.body(feat))  # (B, nf, h, w)
        feat = F.interpolate(feat, scale_factor=2, mode="nearest")  # (B, nf, 2h, 2w)
        feat = F.leaky_relu(self.conv_up1(feat), NEGATIVE_SLOPE)
        feat = F.interpolate(feat, scale_factor=2, mode="nearest")  # (B, nf, 4h, 4w)
        feat = F.leaky_relu(self.conv_up2(feat), NEGATIVE_SLOPE)
        feat = F.leaky_relu(self.conv_hr(feat), NEGATIVE_SLOPE)
        return self.conv_last(feat)  # (B, num_out_ch, 4h, 4w) = (…, scale · H, scale · W)

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor (B, C, H, W); got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.num_in_ch:
            raise ValueError(
                f"x must be (B, C, H, W) with C = num_in_ch = {self.num_in_ch}; "
                f"got shape {tuple(x.shape)}"
            )
        r = self.unshuffle
        if r > 1 and (x.shape[2] % r or x.shape[3] % r):
            raise ValueError(
                f"x's height and width must be divisible by {r} for scale {self.scale} (the input "
                f"is pixel-unshuffled by {r}); got shape {tuple(x.shape)}. Pad it first, e.g. "
                f"with F.pad(x, …, mode='reflect'), and crop the output"
            )

    # -- checkpoints ----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The constructor arguments that fix the architecture (JSON-serialisable; backend is
        left out). connections is None for a dense net, else the full num_block × 3 × 5 lists."""
        return {
            "num_in_ch": self.num_in_ch,
            "num_out_ch": self.num_out_ch,
            "scale": self.scale,
            "num_feat": self.num_feat,
            "num_block": self.num_block,
            "num_grow_ch": self.num_grow_ch,
            "connections": None if self.is_dense else self.connections,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write ``{"config": self.config(), "params": self.state_dict()}`` to path, atomically:
        to a temporary file in the same directory, then ``os.replace`` — path is either absent
        (or its old content) or the complete new checkpoint, never a partial file. The "params"
        key is BasicSR's, so BasicSR loads the weights too."""
        save_state(path, {"config": self.config(), "params": self.state_dict()})

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike | Mapping[str, Any],
        *,
        backend: str = "auto",
        map_location: str | torch.device = "cpu",
    ) -> RRDBNet:
        """Rebuild a net written by :meth:`save` (a path, or the loaded dict): its config, its
        connections included, and its parameters, in the checkpoint's dtype, on map_location.

        A BasicSR or ESRGAN checkpoint carries no config: build ``RRDBNet(...)`` and call
        :func:`load_basicsr_state_dict` instead."""
        obj = _load_checkpoint(checkpoint, map_location)
        if not isinstance(obj, Mapping) or "config" not in obj or "params" not in obj:
            keys = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
            raise ValueError(
                "checkpoint must hold 'config' and 'params' (as RRDBNet.save writes them); got "
                f"{keys}. For a BasicSR / ESRGAN checkpoint, build RRDBNet(...) with its "
                "architecture and call load_basicsr_state_dict(net, checkpoint)"
            )
        config = dict(obj["config"])
        known = {"num_in_ch", "num_out_ch", "scale", "num_feat", "num_block", "num_grow_ch"}
        unknown = sorted(set(config) - known - {"connections"})
        if unknown:
            raise ValueError(
                f"checkpoint config has unknown keys {unknown}; known: {sorted(known)}"
            )
        net = cls(**config, backend=backend)
        params = obj["params"]
        tensors = [t for t in params.values() if isinstance(t, Tensor)]
        dtypes = {t.dtype for t in tensors if t.is_floating_point()}
        if len(dtypes) == 1:  # keep the checkpoint's precision
            net.to(dtype=dtypes.pop())
        load_basicsr_state_dict(net, params)
        return net.to(map_location)


def check_net_connections(connections: Any, num_block: int) -> list[list[list[list[int]] | None]]:
    """num_block per-RRDB connections (None → all dense), with errors naming the entry."""
    if connections is None:
        return [None] * num_block
    if not isinstance(connections, Sequence) or len(connections) != num_block:
        got = _describe(connections)
        raise ValueError(
            f"connections must be None or one entry per block: num_block ({num_block}) × "
            f"{RDBS_PER_RRDB} RDBs × {NUM_CONVS} lists of kept inputs; got {got}"
        )
    return [
        _check_rrdb_connections(block, f"connections[{n}]") if block is not None else None
        for n, block in enumerate(connections)
    ]


# ---------------------------------------------------------------------------------------------
# Foreign checkpoints: BasicSR and original ESRGAN
# ---------------------------------------------------------------------------------------------

_ESRGAN_RDB_KEY = re.compile(r"^RRDB_trunk\.(\d+)\.RDB([1-3])\.conv([1-5])\.(weight|bias)$")
_ESRGAN_RENAMES = {
    "trunk_conv": "conv_body",
    "upconv1": "conv_up1",
    "upconv2": "conv_up2",
    "HRconv": "conv_hr",
}
_MAX_LISTED = 12


def convert_esrgan_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Original ESRGAN names (xinntao/ESRGAN, e.g. RRDB_ESRGAN_x4.pth) → BasicSR's:

        RRDB_trunk.N.RDBk.convJ.*  → body.N.rdbk.convJ.*
        trunk_conv.* → conv_body.*,  upconv1/2.* → conv_up1/2.*,  HRconv.* → conv_hr.*
        conv_first.*, conv_last.*, and keys already in BasicSR's names: unchanged.

    (ESRGAN's older "model.0 …" layout, RRDB_ESRGAN_x4_old_arch.pth, is not converted.)"""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = key
        match = _ESRGAN_RDB_KEY.match(key)
        if match:
            n, k, j, p = match.groups()
            new = f"body.{n}.rdb{k}.conv{j}.{p}"
        else:
            head, dot, tail = key.partition(".")
            if head in _ESRGAN_RENAMES and tail in ("weight", "bias"):
                new = _ESRGAN_RENAMES[head] + dot + tail
        if new in out:
            raise ValueError(f"state dict holds both {key!r} and another key that maps to {new!r}")
        out[new] = value
    return out


def load_basicsr_state_dict(
    net: nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, Any],
    *,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
):
    """Load a BasicSR or ESRGAN RRDBNet checkpoint into net.

    Args:
        net: an :class:`RRDBNet` of the checkpoint's architecture (scale, widths, connections).
        checkpoint: a path or a loaded object: a BasicSR checkpoint dict ("params_ema" preferred
            over "params"; an :meth:`RRDBNet.save` file works too), or a bare state dict.
            ``module.`` prefixes (DataParallel / DDP) are stripped; original ESRGAN names are
            converted (:func:`convert_esrgan_state_dict`).
        strict: unknown or missing keys are an error (listed); with False they are returned.
            A shape mismatch is always an error.
        map_location: where a path's tensors are loaded.

    Returns:
        torch's ``(missing_keys, unexpected_keys)`` named tuple (both empty when strict).
    """
    obj = _load_checkpoint(checkpoint, map_location)
    if not isinstance(obj, Mapping):
        raise ValueError(
            "checkpoint must be a dict (a state dict or a BasicSR checkpoint); "
            f"got {type(obj).__name__}"
        )
    if "params_ema" in obj:
        obj = obj["params_ema"]
    elif "params" in obj:
        obj = obj["params"]
    not_tensors = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise ValueError(
            "checkpoint is neither a state dict nor a dict with 'params_ema' / 'params': "
            f"keys {_listing([repr(k) for k in not_tensors])} do not hold tensors"
        )
    state = convert_esrgan_state_dict({_strip_module(k): v for k, v in obj.items()})

    expected = net.state_dict()
    unknown = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if mismatched:
        raise ValueError(
            f"checkpoint shapes do not match the model's (another scale, num_feat, num_grow_ch "
            f"or connections?): {_listing(mismatched)}"
        )
    if strict and (unknown or missing):
        problems = []
        if unknown:
            problems.append(f"unknown keys {_listing([repr(k) for k in unknown])}")
        if missing:
            problems.append(f"missing keys {_listing([repr(k) for k in missing])}")
        raise ValueError(
            f"checkpoint does not match {type(net).__name__}: " + "; ".join(problems)
            + " (pass strict=False to load the rest)"
        )
    return net.load_state_dict(state, strict=strict)


def _strip_module(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module.") :]
    return key


def _listing(items: Sequence[str]) -> str:
    """[a, b, … and N more] (total), at most _MAX_LISTED shown: a 23-block net has 350 keys."""
    shown = ", ".join(items[:_MAX_LISTED])
    more = f", … and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"[{shown}{more}] ({len(items)})"


def _load_checkpoint(checkpoint: Any, map_location: str | torch.device) -> Any:
    """A loaded checkpoint as it is, or a path read without running code from it (tensors and
    plain data only, digest verified: :func:`fastsr._io.load_state`), moved to map_location."""
    if isinstance(checkpoint, (str, os.PathLike)):
        obj = load_state(checkpoint, what="checkpoint")
        if torch.device(map_location) != torch.device("cpu"):
            obj = _to_device(obj, map_location)
        return obj
    return checkpoint


def _to_device(obj: Any, device: str | torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj
