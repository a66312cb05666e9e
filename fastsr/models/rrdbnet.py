"""ESRGAN's generator, BasicSR's RRDBNet, dense or with SPSAGAN's sparse RRSB connections
(Zhang, Zheng & Hu 2020, section 3.2), and the conversion of BasicSR and original ESRGAN
checkpoints.

    RRDBNet:  pixel_unshuffle by 4 / scale (scales 1, 2) → conv_first → feat
              feat + conv_body(body(feat)) → 2 × (nearest ×2 → conv → lrelu) → conv_hr → lrelu
              → conv_last

Module layout, parameter names, initialisation and forward are those of BasicSR's
basicsr/archs/rrdbnet_arch.py (Wang et al., "ESRGAN: Enhanced Super-Resolution Generative
Adversarial Networks", ECCV Workshops 2018), so BasicSR checkpoints load unchanged and original
ESRGAN ones (xinntao/ESRGAN) convert: see :func:`load_basicsr_state_dict`. The trunk
(conv_first → RRDB / RRSB body → conv_body + skip) is :class:`RRDBTrunk`, which
:class:`fastsr.models.SPSAGenerator` shares.

A pruned net is only rebuilt with its connections, so they travel in its model file:
:meth:`RRDBNet.save` writes a ``fastsr.model/1`` file and :meth:`RRDBNet.from_checkpoint`
rebuilds the net from it alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastsr._checks import check_choice, check_positive_int, listing
from fastsr._io import load_state
from fastsr.layers.rrdb import NEGATIVE_SLOPE, RRDB, RDBConnections, ResidualDenseBlock, check_net_connections
from fastsr.models.foreign import to_basicsr_names
from fastsr.models.model_file import ModelFile, load_params, read_model_file, write_model_file
from fastsr.ops.dense_block import BACKENDS

__all__ = ["RRDBNet", "RRDBTrunk", "convert_esrgan_state_dict", "load_basicsr_state_dict"]

SCALES = (1, 2, 4)


# ---------------------------------------------------------------------------------------------
# The trunk both generators share
# ---------------------------------------------------------------------------------------------


class RRDBTrunk(nn.Module):
    """The trunk of ESRGAN-style generators, under BasicSR's names: conv_first → body (RRDB or
    RRSB blocks) → conv_body, with the long skip. Subclasses call :meth:`_build_trunk` first in
    their ``__init__`` (registration order is state-dict order: conv_first, body, conv_body, then
    what the subclass adds) and :meth:`trunk` in their forward."""

    def _build_trunk(
        self,
        in_ch: int,
        num_feat: int,
        num_block: int,
        num_grow_ch: int,
        connections: Sequence[Sequence[RDBConnections | None] | None] | None,
        *,
        backend: str,
    ) -> None:
        for name, value in (("num_feat", num_feat), ("num_block", num_block), ("num_grow_ch", num_grow_ch)):
            check_positive_int(name, value)
        check_choice("backend", backend, BACKENDS)
        per_block = check_net_connections(connections, num_block)
        self.num_feat, self.num_block, self.num_grow_ch = num_feat, num_block, num_grow_ch
        self.backend = backend
        self.conv_first = nn.Conv2d(in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch, kept, backend=backend) for kept in per_block))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def trunk(self, x: Tensor) -> Tensor:
        """x: (B, C, h, w) → (B, nf, h, w) = conv_first(x) + conv_body(body(conv_first(x)))."""
        feat = self.conv_first(x)  # (B, nf, h, w)
        return feat + self.conv_body(self.body(feat))  # (B, nf, h, w)

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


def build_from_file(
    cls: type[nn.Module], file: ModelFile, *, backend: str = "auto", map_location: str | torch.device = "cpu"
) -> nn.Module:
    """``cls(**file.config)`` with ``file.params`` loaded, in the file's dtype, on map_location."""
    try:
        net = cls(**file.config, backend=backend)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{file.source}: its config does not build a {cls.__name__}: {e}") from None
    return load_params(net, file).to(map_location)


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


class RRDBNet(RRDBTrunk):
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

    MODEL_KIND = "rrdbnet"  # its model files' kind (fastsr.models.kinds.KINDS)

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
        for name, value in (("num_in_ch", num_in_ch), ("num_out_ch", num_out_ch)):
            check_positive_int(name, value)
        self.num_in_ch, self.num_out_ch, self.scale = num_in_ch, num_out_ch, scale
        self.unshuffle = 4 // scale  # pixel_unshuffle factor: 1 (none), 2 or 4
        self._build_trunk(
            num_in_ch * self.unshuffle**2, num_feat, num_block, num_grow_ch, connections, backend=backend
        )
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    @property
    def needs_prior(self) -> bool:
        """False: ESRGAN's network reads the image alone."""
        return False

    @property
    def input_multiple(self) -> int:
        """Input sides must be multiples of this: the pixel-unshuffle factor (2 at ×2, 4 at ×1)."""
        return self.unshuffle

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

    def forward(self, x: Tensor, prior: Tensor | None = None) -> Tensor:
        """x: (B, num_in_ch, H, W) → (B, num_out_ch, scale · H, scale · W). ``prior`` must be None
        (the generator interface: every fastsr generator takes ``(lr, prior=None)``)."""
        self._check_input(x)
        if prior is not None:
            raise ValueError("prior must be None: RRDBNet has no SPSA layer and would ignore it")
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)  # (B, num_in_ch · r², H / r, W / r)
        feat = self.trunk(x)  # (B, nf, h, w)
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
                f"x must be (B, C, H, W) with C = num_in_ch = {self.num_in_ch}; got shape {tuple(x.shape)}"
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
        """Write a ``fastsr.model/1`` file (:mod:`fastsr.models.model_file`; kind "rrdbnet"),
        atomically and with a digest. Its "params" key is BasicSR's, so BasicSR loads the
        weights too; the config (connections included) rebuilds a pruned net."""
        write_model_file(path, kind=self.MODEL_KIND, config=self.config(), params=self.state_dict())

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike | Mapping[str, Any],
        *,
        backend: str = "auto",
        map_location: str | torch.device = "cpu",
    ) -> RRDBNet:
        """Rebuild a net from its model file (a path, or the loaded dict; also the older
        ``{config, params}`` layout of fastsr 0.1): its config, its connections included, and its
        parameters, in the file's dtype, on map_location.

        A BasicSR or ESRGAN checkpoint carries no config: build ``RRDBNet(...)`` and call
        :func:`load_basicsr_state_dict` instead."""
        file = read_model_file(checkpoint, expect=(cls.MODEL_KIND, "an RRDBNet"))
        return build_from_file(cls, file, backend=backend, map_location=map_location)


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


def convert_esrgan_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Original ESRGAN names (xinntao/ESRGAN, e.g. RRDB_ESRGAN_x4.pth) → BasicSR's:

        RRDB_trunk.N.RDBk.convJ.*  → body.N.rdbk.convJ.*
        trunk_conv.* → conv_body.*,  upconv1/2.* → conv_up1/2.*,  HRconv.* → conv_hr.*
        conv_first.*, conv_last.*, and keys already in BasicSR's names: unchanged.

    (ESRGAN's older "model.0 …" layout, RRDB_ESRGAN_x4_old_arch.pth, is converted by
    :func:`load_basicsr_state_dict` through :func:`fastsr.models.foreign.to_basicsr_names`.)"""
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
            f"checkpoint must be a dict (a state dict or a BasicSR checkpoint); got {type(obj).__name__}"
        )
    if "params_ema" in obj:
        obj = obj["params_ema"]
    elif "params" in obj:
        obj = obj["params"]
    not_tensors = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise ValueError(
            "checkpoint is neither a state dict nor a dict with 'params_ema' / 'params': "
            f"keys {listing([repr(k) for k in not_tensors])} do not hold tensors"
        )
    state = {_strip_module(k): v for k, v in obj.items()}
    if "model.0.weight" in state:  # ESRGAN's old arch (model.N): its own published names
        state = to_basicsr_names(state)[0]
    state = convert_esrgan_state_dict(state)

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
            f"or connections?): {listing(mismatched)}"
        )
    if strict and (unknown or missing):
        problems = []
        if unknown:
            problems.append(f"unknown keys {listing([repr(k) for k in unknown])}")
        if missing:
            problems.append(f"missing keys {listing([repr(k) for k in missing])}")
        raise ValueError(
            f"checkpoint does not match {type(net).__name__}: "
            + "; ".join(problems)
            + " (pass strict=False to load the rest)"
        )
    return net.load_state_dict(state, strict=strict)


def _strip_module(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module.") :]
    return key


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
