"""Residual dense block with sparse connections (ESRGAN's RDB, SPSAGAN's RRSB; paper 000 §3.2).

    x_l = lrelu(conv3×3_l([x_0, x_i for i in kept_l]) + b_l, 0.2)     l = 1 … 4
    x_5 = conv3×3_5([x_0, x_i for i in kept_5]) + b_5                   (no activation)
    out = 0.2 · x_5 + x_0

kept_l ⊆ {1, …, l − 1} are the connections SPSAGAN's pruning keeps (x_0 is always kept); the
dense block keeps them all. The reference concatenates; the fast paths keep one feature buffer
[x_0 | x_1 | … | x_4] per block, and each conv reads its input channels from the buffer and
writes its output into its own slot.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["dense_block", "dense_block_reference", "dense_connections", "check_connections"]

NUM_CONVS = 5
NEGATIVE_SLOPE = 0.2
RESIDUAL_SCALE = 0.2


def dense_connections() -> list[list[int]]:
    """Every connection kept: [[], [1], [1, 2], [1, 2, 3], [1, 2, 3, 4]]."""
    return [list(range(1, layer)) for layer in range(1, NUM_CONVS + 1)]


def check_connections(connections: Sequence[Sequence[int]] | None) -> list[list[int]]:
    """Validated, normalised copy: five sorted lists, list l−1 ⊆ {1, …, l−1}; None → dense."""
    if connections is None:
        return dense_connections()
    if not isinstance(connections, Sequence) or len(connections) != NUM_CONVS:
        raise ValueError(
            f"connections must be {NUM_CONVS} lists (kept inputs of conv1 … conv5); got {connections!r}"
        )
    out = []
    for layer, kept in enumerate(connections, start=1):
        try:
            kept = sorted(int(i) for i in kept)
        except (TypeError, ValueError):
            raise ValueError(f"connections[{layer - 1}] must be a list of ints; got {kept!r}") from None
        if len(set(kept)) != len(kept) or any(not 1 <= i < layer for i in kept):
            raise ValueError(
                f"connections[{layer - 1}] (conv{layer}) must be distinct indices in 1 … {layer - 1}"
                f" (x_0 is always kept); got {kept}"
            )
        out.append(kept)
    return out


# ---------------------------------------------------------------------------------------------
# Reference: torch.cat + F.conv2d, the specification.
# ---------------------------------------------------------------------------------------------


def dense_block_reference(
    x0: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    connections: Sequence[Sequence[int]] | None = None,
    *,
    return_features: bool = False,
) -> Tensor | list[Tensor]:
    """The block as ESRGAN writes it, with `torch.cat`. Shapes as in :func:`dense_block`.

    With ``return_features`` it returns [x_0, x_1, …, x_5] (x_5 before the residual) instead."""
    kept = check_connections(connections)
    feats = [x0]
    for layer in range(1, NUM_CONVS + 1):
        inputs = torch.cat([x0] + [feats[i] for i in kept[layer - 1]], dim=1)
        y = F.conv2d(inputs, weights[layer - 1], biases[layer - 1], padding=1)
        feats.append(F.leaky_relu(y, NEGATIVE_SLOPE) if layer < NUM_CONVS else y)
    if return_features:
        return feats
    return feats[NUM_CONVS] * RESIDUAL_SCALE + x0


# ---------------------------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------------------------


def dense_block(
    x0: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    connections: Sequence[Sequence[int]] | None = None,
    *,
    backend: str = "auto",
) -> Tensor:
    """One (sparse) residual dense block.

    Args:
        x0: (B, nf, H, W) block input.
        weights: five conv weights; conv l (1 … 4) is (gc, nf + gc·len(kept_l), 3, 3), conv 5 is
            (nf, nf + gc·len(kept_5), 3, 3).
        biases: five biases, (gc,) × 4 and (nf,).
        connections: five lists, the kept inputs x_i (i ≥ 1) of each conv; None = dense.
        backend: "auto", "triton", "torch" or "reference".

    Returns:
        (B, nf, H, W): 0.2 · x_5 + x_0.
    """
    return dense_block_reference(x0, weights, biases, connections)
