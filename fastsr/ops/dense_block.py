"""Residual dense block with sparse connections (ESRGAN's RDB, SPSAGAN's RRSB; SPSAGAN paper §3.2).

    x_l = lrelu(conv3×3_l([x_0, x_i for i in kept_l]) + b_l, 0.2)     l = 1 … 4
    x_5 = conv3×3_5([x_0, x_i for i in kept_5]) + b_5                   (no activation)
    out = 0.2 · x_5 + x_0

kept_l ⊆ {1, …, l − 1} are the connections SPSAGAN's pruning keeps (x_0 is always kept); the
dense block keeps them all. The reference concatenates; the fast paths keep one feature buffer
[x_0 | x_1 | … | x_4] per block, and each conv reads its input channels from the buffer and
writes its output into its own slot.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
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
# Buffer layout shared by the fast paths
#
# The reference copies its inputs into a new tensor before every conv: 4 concatenations of
# 64…160 channels per block, and autograd keeps each of them for the backward (≈2.5× the
# block's features). Here one buffer [x_0 | x_1 | x_2 | x_3 | x_4] holds every feature once,
# each conv reads its inputs as channel ranges of it (a prefix, for the dense block: a plain
# view) and writes its output into its own slot, and the backward reads the same buffer.
# ---------------------------------------------------------------------------------------------


def _slot(layer: int, nf: int, gc: int) -> tuple[int, int]:
    """Buffer channels of x_layer (0 … 4)."""
    return (0, nf) if layer == 0 else (nf + gc * (layer - 1), nf + gc * layer)


def _input_ranges(kept: Sequence[int], nf: int, gc: int) -> list[tuple[int, int]]:
    """Buffer channel ranges of [x_0, x_kept…], adjacent ranges merged (dense: one prefix)."""
    ranges: list[tuple[int, int]] = []
    for start, stop in [_slot(0, nf, gc)] + [_slot(i, nf, gc) for i in kept]:
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], stop)
        else:
            ranges.append((start, stop))
    return ranges


def _weight_columns(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """For each buffer range, its columns in the conv's (concatenated) input channels."""
    cols, at = [], 0
    for start, stop in ranges:
        cols.append((at, at + stop - start))
        at += stop - start
    return cols


def _conv_ranges(buf: Tensor, ranges, weight: Tensor, bias: Tensor | None) -> Tensor:
    """conv3×3(buffer channels `ranges`, weight) + bias, without gathering the channels: one
    convolution per range, summed (one range for a dense block)."""
    out = None
    for (start, stop), (c0, c1) in zip(ranges, _weight_columns(ranges)):
        part = F.conv2d(buf[:, start:stop], weight[:, c0:c1], bias if out is None else None, padding=1)
        out = part if out is None else out.add_(part)
    return out


def _torch_forward(x0, weights, biases, kept, buf: Tensor | None = None) -> tuple[Tensor, Tensor]:
    B, nf, H, W = x0.shape
    gc = weights[0].shape[0]
    if buf is None:
        buf = x0.new_empty(B, nf + gc * (NUM_CONVS - 1), H, W)
    buf[:, :nf].copy_(x0)
    for layer in range(1, NUM_CONVS):
        y = _conv_ranges(buf, _input_ranges(kept[layer - 1], nf, gc), weights[layer - 1], biases[layer - 1])
        start, stop = _slot(layer, nf, gc)
        torch.ops.aten.leaky_relu.out(y, NEGATIVE_SLOPE, out=buf[:, start:stop])
    y5 = _conv_ranges(buf, _input_ranges(kept[4], nf, gc), weights[4], biases[4])
    return torch.add(x0, y5, alpha=RESIDUAL_SCALE), buf


def _triton_forward(x0, weights, biases, kept) -> tuple[Tensor, Tensor]:
    from fastsr.ops._dense_block_triton import dense_block_conv3x3_triton

    B, nf, H, W = x0.shape
    gc = weights[0].shape[0]
    buf = x0.new_empty(B, nf + gc * (NUM_CONVS - 1), H, W)
    buf[:, :nf].copy_(x0)
    out = torch.empty_like(x0)
    for layer in range(1, NUM_CONVS + 1):
        # Built from validated connections, so the launcher may skip its value checks (each of
        # which would copy the table back to the host).
        channels = _channel_table(tuple(kept[layer - 1]), nf, gc, x0.device)
        if layer < NUM_CONVS:
            dense_block_conv3x3_triton(buf, channels, weights[layer - 1], biases[layer - 1], buf,
                                       _slot(layer, nf, gc)[0], activation=True,
                                       validate_channels=False)  # fmt: skip
        else:
            dense_block_conv3x3_triton(buf, channels, weights[4], biases[4], out, 0,
                                       activation=False, residual=x0,
                                       residual_scale=RESIDUAL_SCALE,
                                       validate_channels=False)  # fmt: skip
    return out, buf


_workspace = threading.local()


def _inference_buffer(x0: Tensor, gc: int) -> Tensor:
    """A per-thread feature buffer reused across calls when nothing needs it afterwards (no
    autograd). A fresh 12 MB buffer per block (nf = 64, 128×128) costs ~3000 page faults a
    call with glibc's default allocator: measured 25–40% of a dense block's CPU forward."""
    B, nf, H, W = x0.shape
    shape = (B, nf + gc * (NUM_CONVS - 1), H, W)
    buf = getattr(_workspace, "buf", None)
    if buf is None or buf.shape != shape or buf.dtype != x0.dtype or buf.device != x0.device:
        buf = _workspace.buf = x0.new_empty(shape)
    return buf


@functools.lru_cache(maxsize=256)
def _channel_table(kept: tuple[int, ...], nf: int, gc: int, device: torch.device) -> Tensor:
    """int32 buffer channels of [x_0, x_kept…] on `device`, made once per pattern."""
    channels = [c for a, b in _input_ranges(kept, nf, gc) for c in range(a, b)]
    return torch.tensor(channels, dtype=torch.int32, device=device)


def _live_layers(kept: Sequence[Sequence[int]]) -> set[int]:
    """Convs whose output reaches the block's output: conv5, and every x_l a live conv keeps. A
    pruned config can leave a conv with no consumer; its backward is skipped (its gradients are
    0, as they are in exact arithmetic)."""
    live = {NUM_CONVS}
    for layer in range(NUM_CONVS, 0, -1):
        if layer in live:
            live.update(kept[layer - 1])
    return live


def _backward(grad_out: Tensor, buf: Tensor, weights, kept) -> tuple[Tensor, list, list]:
    """PyTorch ops over the saved buffer, for both backends: cuDNN's / oneDNN's convolution
    backward kernels are hard to beat, and each reads its input as a view of the buffer.

    G holds ∂L/∂x_0 … ∂L/∂x_4 in the buffer's layout; conv l = 5 … 1 in turn turns the gradient
    of its output into gradients of its weight, bias and inputs (added into their slots)."""
    nf = grad_out.shape[1]
    gc = weights[0].shape[0]
    grad = torch.zeros_like(buf)
    grad[:, :nf].copy_(grad_out)  # out = x_0 + 0.2 · x_5
    d_weights = [torch.zeros_like(w) for w in weights]
    d_biases = [w.new_zeros(w.shape[0]) for w in weights]
    live = _live_layers(kept)
    for layer in range(NUM_CONVS, 0, -1):
        if layer not in live:
            continue
        if layer == NUM_CONVS:
            g = grad_out * RESIDUAL_SCALE
        else:  # through the LeakyReLU, from its output: x_l > 0 exactly where its input was
            start, stop = _slot(layer, nf, gc)
            g = torch.ops.aten.leaky_relu_backward(
                grad[:, start:stop], buf[:, start:stop], NEGATIVE_SLOPE, True
            )
        weight = weights[layer - 1]
        ranges = _input_ranges(kept[layer - 1], nf, gc)
        d_weight = d_weights[layer - 1]
        for (start, stop), (c0, c1) in zip(ranges, _weight_columns(ranges)):
            d_in, d_w, _ = torch.ops.aten.convolution_backward(
                g, buf[:, start:stop], weight[:, c0:c1], None,
                [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, False],
            )  # fmt: skip
            grad[:, start:stop].add_(d_in)
            d_weight[:, c0:c1] = d_w
        torch.sum(g, dim=(0, 2, 3), out=d_biases[layer - 1])
    return grad[:, :nf].clone(), d_weights, d_biases


# ---------------------------------------------------------------------------------------------
# Custom op + autograd
# ---------------------------------------------------------------------------------------------


def _encode(kept: Sequence[Sequence[int]]) -> list[int]:
    """Connections as one int list for the op schema: per conv, its count then its indices
    (never empty, which autograd's input matching needs)."""
    return [v for layer in kept for v in (len(layer), *layer)]


def _decode(code: Sequence[int]) -> list[list[int]]:
    out, at = [], 0
    while at < len(code):
        n = code[at]
        out.append(list(code[at + 1 : at + 1 + n]))
        at += 1 + n
    return out


@torch.library.custom_op("fastsr::dense_block_fwd", mutates_args=())
def _dense_block_fwd(
    x0: Tensor, weights: list[Tensor], biases: list[Tensor], kept_code: list[int], backend: str
) -> tuple[Tensor, Tensor]:
    kept = _decode(kept_code)
    if backend == "triton":
        return _triton_forward(x0, weights, biases, kept)
    return _torch_forward(x0, weights, biases, kept)


@_dense_block_fwd.register_fake
def _(x0, weights, biases, kept_code, backend):
    B, nf, H, W = x0.shape
    gc = weights[0].shape[0]
    return torch.empty_like(x0), x0.new_empty(B, nf + gc * (NUM_CONVS - 1), H, W)


@torch.library.custom_op("fastsr::dense_block_bwd", mutates_args=())
def _dense_block_bwd(
    grad_out: Tensor, buf: Tensor, weights: list[Tensor], kept_code: list[int]
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    return _backward(grad_out, buf, weights, _decode(kept_code))


@_dense_block_bwd.register_fake
def _(grad_out, buf, weights, kept_code):
    return (
        torch.empty_like(grad_out),
        [torch.empty_like(w) for w in weights],
        [w.new_empty(w.shape[0]) for w in weights],
    )


def _setup_context(ctx, inputs, output):
    x0, weights, biases, kept_code, backend = inputs
    ctx.save_for_backward(output[1], *weights)  # the buffer [x_0 | … | x_4] and the weights
    ctx.kept_code = kept_code


def _autograd_backward(ctx, grad_out, _grad_buf):
    buf, *weights = ctx.saved_tensors
    d_x0, d_weights, d_biases = _dense_block_bwd(grad_out.contiguous(), buf, weights, ctx.kept_code)
    return d_x0, d_weights, d_biases, None, None


_dense_block_fwd.register_autograd(_autograd_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------------------------

BACKENDS = ("auto", "triton", "torch", "reference")


def _check_inputs(x0, weights, biases, kept, backend) -> None:
    if not isinstance(x0, Tensor) or x0.dim() != 4 or not x0.is_floating_point():
        got = f"shape {tuple(x0.shape)}, dtype {x0.dtype}" if isinstance(x0, Tensor) else type(x0).__name__
        raise ValueError(f"x0 must be a floating-point (B, nf, H, W) tensor; got {got}")
    nf = x0.shape[1]
    for name, seq in (("weights", weights), ("biases", biases)):
        if (
            not isinstance(seq, Sequence)
            or len(seq) != NUM_CONVS
            or not all(isinstance(t, Tensor) for t in seq)
        ):
            raise ValueError(f"{name} must be a sequence of {NUM_CONVS} tensors (conv1 … conv5)")
    gc = weights[0].shape[0] if weights[0].dim() == 4 else -1
    for layer in range(1, NUM_CONVS + 1):
        w, b = weights[layer - 1], biases[layer - 1]
        cout = nf if layer == NUM_CONVS else gc
        want = (cout, nf + gc * len(kept[layer - 1]), 3, 3)
        if tuple(w.shape) != want:
            raise ValueError(
                f"weights[{layer - 1}] (conv{layer}) must be (Cout, nf + gc·{len(kept[layer - 1])}, 3, 3)"
                f" = {want} for x0 with nf = {nf} and gc = {gc}; got {tuple(w.shape)}"
            )
        if tuple(b.shape) != (cout,):
            raise ValueError(f"biases[{layer - 1}] (conv{layer}) must be ({cout},); got {tuple(b.shape)}")
        for name, t in ((f"weights[{layer - 1}]", w), (f"biases[{layer - 1}]", b)):
            if t.dtype != x0.dtype or t.device != x0.device:
                raise ValueError(
                    f"{name} must match x0 ({x0.dtype} on {x0.device}); got {t.dtype} on {t.device}"
                )
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")


def dense_block(
    x0: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    connections: Sequence[Sequence[int]] | None = None,
    *,
    backend: str = "auto",
) -> Tensor:
    """One (sparse) residual dense block, without `torch.cat`.

    Args:
        x0: (B, nf, H, W) block input.
        weights: five conv weights; conv l (1 … 4) is (gc, nf + gc·len(kept_l), 3, 3), conv 5 is
            (nf, nf + gc·len(kept_5), 3, 3).
        biases: five biases, (gc,) × 4 and (nf,).
        connections: five lists, the kept inputs x_i (i ≥ 1) of each conv; None = dense.
        backend: "auto" (Triton on CUDA, the buffer path with PyTorch convolutions elsewhere),
            "triton", "torch" or "reference" (torch.cat + conv2d).

    Returns:
        (B, nf, H, W): 0.2 · x_5 + x_0. Differentiable in x0, the weights and the biases.
    """
    kept = check_connections(connections)
    _check_inputs(x0, weights, biases, kept, backend)
    if backend == "auto":
        backend = "triton" if x0.device.type == "cuda" and _HAS_TRITON else "torch"
    if backend == "reference" or x0.numel() == 0:
        return dense_block_reference(x0, weights, biases, kept)
    if backend == "triton" and x0.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "backend='triton' on CPU tensors runs only under TRITON_INTERPRET=1; "
            "use backend='torch' or CUDA tensors"
        )
    tensors = (x0, *weights, *biases)
    inference = not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
    if inference and backend == "torch" and not torch.compiler.is_compiling():
        gc = weights[0].shape[0]
        return _torch_forward(x0, weights, biases, kept, _inference_buffer(x0, gc))[0]
    return _dense_block_fwd(x0, list(weights), list(biases), _encode(kept), backend)[0]


_HAS_TRITON = importlib.util.find_spec("triton") is not None
