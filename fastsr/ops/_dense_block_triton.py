"""Triton launcher for the dense-block convolution (kernel in kernels/dense_block.py, installed as
fastsr.kernels.dense_block). Imported lazily by fastsr/ops/dense_block.py, so importing fastsr
never needs Triton.

The launcher checks every shape, dtype, device and layout, checks the channel table against the
buffer (one device → host transfer of three numbers; ``validate_channels=False`` skips it for a
table already validated), and picks the per-call constexprs: BLOCK_N = Cout rounded up to a power
of two in [16, 64] (``tl.dot`` needs N ≥ 16 for 16-bit operands on a GPU) and the fp32 dot
precision, "tf32" when ``torch.backends.cuda.matmul.allow_tf32`` is set and "ieee" otherwise
(PyTorch's default).
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from fastsr.kernels.dense_block import dense_block_conv3x3_fwd, dense_block_conv3x3_fwd_ieee

__all__ = ["dense_block_conv3x3_triton"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_INT32_MAX = 2**31 - 1


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _block_n(cout: int) -> int:
    return min(64, max(16, triton.next_power_of_2(cout)))


def _check_tensor(name: str, x, layout: str, ndim: int, dtype, device) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}; got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must be {layout}; got shape {tuple(x.shape)}")
    if x.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} (buffer's); got {x.dtype}")
    if x.device != device:
        raise ValueError(f"{name} must be on device {device} (buffer's); got {x.device}")


def _same_memory(a: Tensor, b: Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _check_residual(residual: Tensor, out: Tensor, out_offset: int, cout: int) -> None:
    """RES is read and OUT written at the same (pixel, channel) by the same program, so the two
    may share memory only as disjoint channel ranges of one tensor or as the very same elements."""
    if not _same_memory(residual, out):
        return
    rel = residual.storage_offset() - out.storage_offset()
    same_layout = (residual.stride(0), residual.stride(2), residual.stride(3)) == (
        out.stride(0), out.stride(2), out.stride(3),
    ) and residual.stride(1) == out.stride(1)  # fmt: skip
    if not same_layout or rel % out.stride(1):
        raise ValueError(
            "residual shares memory with out but is not a channel range of it; pass a separate "
            "tensor or out[:, a:a + Cout]"
        )
    start = rel // out.stride(1)
    if start != out_offset and start < out_offset + cout and out_offset < start + cout:
        raise ValueError(
            f"residual is out[:, {start}:{start + cout}], which partly overlaps the written "
            f"channels [{out_offset}, {out_offset + cout}); it must be disjoint from them or equal"
        )


def dense_block_conv3x3_triton(
    buffer: Tensor,
    channels: Tensor,
    weight: Tensor,
    bias: Tensor,
    out: Tensor,
    out_offset: int,
    *,
    activation: bool,
    residual: Tensor | None = None,
    residual_scale: float = 1.0,
    validate_channels: bool = True,
) -> Tensor:
    """One dense-block convolution, written in place into ``out``; returns ``out``.

    out[:, out_offset + n] = post(bias[n] + conv3x3(buffer[:, channels], weight)[:, n]), 3×3,
    stride 1, zero padding 1, with post(v) = lrelu(v, 0.2) if ``activation``, then
    v · residual_scale + residual[:, n] if ``residual`` is given.

    buffer (B, C, H, W) contiguous, float16/bfloat16/float32; channels (Cin,) int32 or int64 on
    buffer's device, the buffer channels to read, in order (values in [0, C)); weight
    (Cout, Cin, 3, 3), any strides (copied to tap-major (3, 3, Cin, Cout) unless already so);
    bias (Cout,); out (B, C_out, H, W) contiguous with out_offset + Cout ≤ C_out, either the
    buffer itself (the written channels must then not be among ``channels``) or a tensor sharing
    no memory with it; residual (B, Cout, H, W), any strides (e.g. buffer[:, :nf]). All in the
    buffer's dtype and on its device. Accumulation is fp32.

    ``validate_channels=False`` skips the checks that need the table's values (range, and no
    overlap with the written channels when out is buffer): one device → host copy per call, which
    a caller that validated its table once can avoid.
    """
    if not isinstance(buffer, Tensor) or buffer.dim() != 4:
        got = tuple(buffer.shape) if isinstance(buffer, Tensor) else type(buffer).__name__
        raise ValueError(f"buffer must be a 4-d tensor (B, C, H, W); got {got}")
    dtype, device = buffer.dtype, buffer.device
    if dtype not in _DTYPES:
        raise TypeError(f"buffer must be float16, bfloat16 or float32; got {dtype}")
    if not buffer.is_contiguous():
        raise ValueError(f"buffer must be contiguous (B, C, H, W); got strides {buffer.stride()}")
    B, C, H, W = buffer.shape

    if not isinstance(channels, Tensor) or channels.dim() != 1:
        got = tuple(channels.shape) if isinstance(channels, Tensor) else type(channels).__name__
        raise ValueError(f"channels must be a 1-d tensor (Cin,); got {got}")
    if channels.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"channels must have dtype torch.int32 or torch.int64; got {channels.dtype}")
    if channels.device != device:
        raise ValueError(f"channels must be on device {device} (buffer's); got {channels.device}")
    Cin = channels.shape[0]
    if Cin < 1:
        raise ValueError("channels must list at least one buffer channel; got an empty tensor")

    _check_tensor("weight", weight, "(Cout, Cin, 3, 3)", 4, dtype, device)
    Cout = weight.shape[0]
    if tuple(weight.shape) != (Cout, Cin, 3, 3) or Cout < 1:
        raise ValueError(
            f"weight must be (Cout, Cin, 3, 3) with Cin = len(channels) = {Cin}; got {tuple(weight.shape)}"
        )
    _check_tensor("bias", bias, "(Cout,)", 1, dtype, device)
    if tuple(bias.shape) != (Cout,):
        raise ValueError(f"bias must be (Cout,) = ({Cout},); got {tuple(bias.shape)}")

    _check_tensor("out", out, "(B, C_out, H, W)", 4, dtype, device)
    if not out.is_contiguous():
        raise ValueError(f"out must be contiguous (B, C_out, H, W); got strides {out.stride()}")
    out_offset = int(out_offset)
    if (out.shape[0], out.shape[2], out.shape[3]) != (B, H, W):
        raise ValueError(f"out must be (B, C_out, H, W) with (B, H, W) = {(B, H, W)}; got {tuple(out.shape)}")
    if out_offset < 0 or out_offset + Cout > out.shape[1]:
        raise ValueError(
            f"out_offset + Cout must fit in out's {out.shape[1]} channels; got out_offset = "
            f"{out_offset}, Cout = {Cout}"
        )
    out_is_buffer = _same_memory(out, buffer) and out.numel() > 0
    if out_is_buffer and (out.data_ptr() != buffer.data_ptr() or out.shape != buffer.shape):
        raise ValueError("out shares memory with buffer but is not the buffer itself")

    if residual is not None:
        _check_tensor("residual", residual, "(B, Cout, H, W)", 4, dtype, device)
        if tuple(residual.shape) != (B, Cout, H, W):
            raise ValueError(
                f"residual must be (B, Cout, H, W) = {(B, Cout, H, W)}; got {tuple(residual.shape)}"
            )
        _check_residual(residual, out, out_offset, Cout)

    if max(C, out.shape[1], Cout) * H * W > _INT32_MAX or B * H * W > _INT32_MAX:
        raise ValueError(
            f"one image of buffer/out/residual must hold < 2**31 elements; got C·H·W = "
            f"{max(C, out.shape[1], Cout) * H * W}"
        )
    if residual is not None:
        _, src, sry, srx = (abs(s) for s in residual.stride())
        if (Cout - 1) * src + (H - 1) * sry + (W - 1) * srx > _INT32_MAX:
            raise ValueError(
                f"residual's offsets within one image must be < 2**31; got strides {residual.stride()}"
            )

    channels = channels.to(torch.int32).contiguous()
    if validate_channels:
        written = (channels >= out_offset) & (channels < out_offset + Cout)
        lo, hi, n_written = torch.stack(
            [channels.min(), channels.max(), written.sum(dtype=torch.int32)]
        ).tolist()  # one device → host transfer
        if lo < 0 or hi >= C:
            raise ValueError(f"channels must lie in [0, {C}) (buffer's channels); got [{lo}, {hi}]")
        if out_is_buffer and n_written:
            raise ValueError(
                f"out is buffer and the written channels [{out_offset}, {out_offset + Cout}) "
                "overlap the channels read; they must be disjoint"
            )

    if B * H * W == 0:
        return out
    # Tap-major weights, (3, 3, Cin, Cout): the kernel's B-tile loads are contiguous along Cout.
    # A no-op when the caller already keeps them so (weight = w_tap.permute(3, 2, 0, 1)).
    weight_t = weight.permute(2, 3, 1, 0).contiguous()
    res = residual if residual is not None else out  # not read when RESIDUAL is False
    res_strides = residual.stride() if residual is not None else (0, 0, 0, 0)

    def grid(meta):
        tiles = triton.cdiv(H, meta["TILE_H"]) * triton.cdiv(W, meta["TILE_W"])
        return (B * tiles * triton.cdiv(Cout, meta["BLOCK_N"]),)

    precision = _precision(dtype)
    # IEEE fp32 dots run on FMA units and have their own (spill-free) config list.
    kernel = (
        dense_block_conv3x3_fwd_ieee
        if dtype == torch.float32 and precision == "ieee"
        else dense_block_conv3x3_fwd
    )
    kernel[grid](
        buffer, channels, weight_t, bias, res, out,
        float(residual_scale), B, H, W, Cin, Cout, out_offset,
        *buffer.stride(), *weight_t.permute(3, 2, 0, 1).stride(), *res_strides, *out.stride(),
        triton.next_power_of_2(H), triton.next_power_of_2(W),  # bucketed autotune key
        ACTIVATION=bool(activation), RESIDUAL=residual is not None,
        BLOCK_N=_block_n(Cout), PRECISION=precision,
    )  # fmt: skip
    return out
