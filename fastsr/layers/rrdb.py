"""ESRGAN's residual dense blocks with SPSAGAN's sparse connections (RRSB: the SPSAGAN paper's
section 3.2), the layers of :class:`fastsr.models.RRDBNet` and :class:`fastsr.models.SPSAGenerator`.

    RDB:      x_l = lrelu(conv_l([x_0, x_i for i in kept_l]), 0.2)    l = 1 … 4
              x_5 = conv_5([x_0, x_i for i in kept_5]);   out = 0.2 · x_5 + x_0
    RRDB:     out = 0.2 · rdb3(rdb2(rdb1(x))) + x

Module layout, parameter names and initialisation are those of BasicSR's
basicsr/archs/rrdbnet_arch.py. With every connection kept (the default) these are ESRGAN's
blocks; with fewer, RRSB's, whose convs are narrower. The dense blocks run through
:func:`fastsr.ops.dense_block` (no ``torch.cat``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fastsr._checks import check_choice, check_positive_int, describe
from fastsr.ops.dense_block import (
    BACKENDS,
    NUM_CONVS,
    check_connections,
    dense_block,
    dense_block_reference,
    dense_connections,
)

__all__ = ["ResidualDenseBlock", "RRDB", "check_net_connections", "NEGATIVE_SLOPE"]

NEGATIVE_SLOPE = 0.2
RESIDUAL_SCALE = 0.2  # RRDB's 0.2 · rdb3(…) + x (the dense block's own 0.2 lives in the op)
INIT_SCALE = 0.1  # ESRGAN: kaiming_normal · 0.1 in the dense blocks
RDBS_PER_RRDB = 3

# Per-RDB connections: five lists of kept inputs (conv1 … conv5), as fastsr.ops.dense_block.
RDBConnections = Sequence[Sequence[int]]


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
        check_positive_int("num_feat", num_feat)
        check_positive_int("num_grow_ch", num_grow_ch)
        check_choice("backend", backend, BACKENDS)
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
        got = describe(connections)
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
# A trunk's connections
# ---------------------------------------------------------------------------------------------


def check_net_connections(connections: Any, num_block: int) -> list[list[list[list[int]] | None]]:
    """num_block per-RRDB connections (None → all dense), with errors naming the entry."""
    if connections is None:
        return [None] * num_block
    if not isinstance(connections, Sequence) or len(connections) != num_block:
        got = describe(connections)
        raise ValueError(
            f"connections must be None or one entry per block: num_block ({num_block}) × "
            f"{RDBS_PER_RRDB} RDBs × {NUM_CONVS} lists of kept inputs; got {got}"
        )
    return [
        _check_rrdb_connections(block, f"connections[{n}]") if block is not None else None
        for n, block in enumerate(connections)
    ]
