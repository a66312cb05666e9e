"""Triton kernel for the convolutions of a (sparse) dense block (launcher:
fastsr/ops/_dense_block_triton.py).

The math. ESRGAN's dense block (nf = 64 channels in x0, gc = 32 in each of x1…x4):

    x_l = lrelu(conv3x3_l([x0, x1, …, x_{l−1}]) + b_l, 0.2)      l = 1…4
    x5  = conv3x3_5([x0, …, x4]) + b5                             (no activation)
    out = 0.2 · x5 + x0

SPSAGAN's RRSB keeps only a subset of x1…x_{l−1} in each concatenation (x0 is always kept).
``dense_block_conv3x3_fwd`` computes one such layer for an arbitrary list of input channels:

    OUT[b, out_offset + n, y, x] = post( bias[n] + Σ_{c, ky, kx} W[n, c, ky, kx] ·
                                         X[b, CH_IDX[c], y + ky − 1, x + kx − 1] )
    post(v) = lrelu(v, 0.2) if ACTIVATION, then v · residual_scale + RES[b, n, y, x] if RESIDUAL

(3×3, stride 1, zero padding 1: X reads outside the image are 0.)

Implicit GEMM. Rows M = B·H·W output pixels, columns N = Cout, reduction K = 9·Cin with
Cin = len(CH_IDX); k = (tap, c) with tap = 3·ky + kx, so A[m, k] = X[b, CH_IDX[c], y + ky − 1,
x + kx − 1] and Bmat[k, n] = W[n, c, ky, kx]. No im2col matrix is ever written: each program
gathers its A tile straight from X. A program owns a TILE_H × TILE_W patch of one image
(BLOCK_M = TILE_H·TILE_W rows) and BLOCK_N output channels, and walks K in ONE flat loop of
9 · ⌈Cin / BLOCK_K⌉ steps, taps outside and channel blocks inside (step i: tap = i // n_cblk,
channels (i mod n_cblk)·BLOCK_K + [0, BLOCK_K), carried as counters, not divided). One flat loop instead of two nested ones lets
Triton's software pipeliner keep its multi-buffered loads (see "cp.async" at FWD_CONFIGS) in
flight across taps (conv1 has only 2 channel blocks per tap: a nested inner loop would drain
the pipeline 9 times). What changes with the tap is hoisted: the pixel offsets and row/column
indices are computed once per program; per step the tap adds one scalar offset
(dy·sx_y + dx·sx_x) and the border mask is four compares of the hoisted y, x against scalar
bounds.

Memory trick. The block keeps ONE feature buffer X = (B, nf + 4·gc, H, W) = [x0 | x1 | … | x4].
Each conv reads its inputs through the int32 channel table CH_IDX (a dense prefix for RRDB, any
subset for RRSB) and writes its Cout channels straight into their slot at out_offset: no
torch.cat, no copy of the inputs, and the kernel's reads of X are the only reads. The caller
guarantees the written channels are not in CH_IDX (other programs read the halo of every input
channel, so an overlap would race). RES is read and OUT written at the same (pixel, channel) by
the same program, so RES may even alias OUT's written channels exactly (in-place
x0 ← 0.2·x5 + x0).

Memory traffic. A 2-D pixel patch makes the nine taps re-read mostly the same cache lines: a
TILE_H × TILE_W patch touches (TILE_H + 2)(TILE_W + 2) pixels per channel, 1.4× its own size
at 8 × 16, against 3× for a 128 × 1 row strip, so most of the 9× re-reading of A can hit L1/L2
(not measured: no GPU was available when this was written). The column index within the patch
is ``offs % TILE_W`` with a power-of-two TILE_W, which Triton's axis analysis recognises as
contiguous: A tiles are loaded with the pixel axis fastest (32 consecutive pixels per warp,
coalesced along W), not the channel axis (stride H·W).
Weights are read through four strides. The launcher passes a (Cout, Cin, 3, 3) view of a
tap-major (3, 3, Cin, Cout) copy (≤ 0.2 MB for conv5): the B tile of a step is then BLOCK_K rows
contiguous along N (coalesced, vectorised, cp.async-able), where the PyTorch layout would make
every element of it a separate 2-byte access with stride 9·Cin.

Tails: pixels outside the image (patch tails at the right and bottom edges), output channels
≥ Cout and channels ≥ Cin are masked (loads give 0, stores are skipped); the channel masks are
compiled only where needed (EVEN_K: Cin a multiple of BLOCK_K, as in every RRDB/RRSB layer;
EVEN_N: Cout a multiple of BLOCK_N), the pixel mask (borders) always.

Cost of one K step (BLOCK_M·BLOCK_N·BLOCK_K multiply-adds), per thread: BLOCK_M·BLOCK_K /
(32·num_warps) A elements gathered with one 2-byte (fp16/bf16) or 4-byte load each — the tap
shift dx = ±1 leaves no alignment to vectorise on, so A cannot be copied asynchronously — plus
its 64-bit address (2 instructions) and channel offset (1), a store to shared memory, the
channel table (a broadcast 16-byte load per 4 entries), the B tile in 16-byte asynchronous
copies, and the MMAs (HGMMA 64×N×16 per warpgroup on sm_90, HMMA 16×8×16 on sm_80). The kernel
report measures it per kMAC (1024 multiply-adds): sm_90 fp16, first config, conv1 204.5 and conv5
155.7 thread-instructions per kMAC, interior and border loops weighted by their share of the
patches (python -m fastsr.kernels.report --kernel dense_block); the gathers, not the MMAs,
dominate. An NHWC buffer would make the channel axis contiguous and the
A loads vectorisable; the block's NCHW buffer is the contract today. Accumulation is fp32;
``PRECISION`` is the ``tl.dot`` input precision ("ieee" or "tf32", only relevant for fp32); the
output is stored in OUT's dtype. The batch offset is int64 (B·C·H·W may exceed 2³¹); offsets
within one image are int32 (the launcher checks C·H·W < 2³¹).
"""

from __future__ import annotations

import triton
import triton.language as tl

from fastsr.kernels._common import INTERPRET, _dot

_NEGATIVE_SLOPE = tl.constexpr(0.2)  # ESRGAN's LeakyReLU

# ---------------------------------------------------------------------------------------------
# Autotune configs. BLOCK_N is not tuned: the launcher sets it to Cout rounded up to a power of
# two in [16, 64] (one N-block for gc = 32 and nf = 64, so every A tile is gathered once). The
# first config is the one the AOT report compiles by default. Under the interpreter there is
# exactly one config, with small tiles so that the tests' odd sizes exercise every tail.
# ---------------------------------------------------------------------------------------------


def _configs(gpu: list[tuple[int, int, int, int, int]]) -> list[triton.Config]:
    if INTERPRET:
        return [triton.Config({"TILE_H": 4, "TILE_W": 8, "BLOCK_K": 16}, num_warps=4, num_stages=1)]
    return [
        triton.Config({"TILE_H": h, "TILE_W": w, "BLOCK_K": k}, num_warps=nw, num_stages=ns)
        for h, w, k, nw, ns in gpu
    ]


# (TILE_H, TILE_W, BLOCK_K, num_warps, num_stages). Every listed config compiles without spills
# and with MMA for sm_80 and sm_90 at fp16, bf16 and tf32, for BLOCK_N = 32 and 64
# (python -m fastsr.kernels.report --all-configs); an 8 × 32 patch with 8 warps spills 16 bytes at
# fp32 on sm_80 and is left out. The IEEE fp32 path (the launcher's default for fp32: FMA dots, no
# tensor cores) has its own, shorter list: on sm_80 conv5 spills 8 B with the 4 × 16 patch and
# 34 KB with BLOCK_K = 64. At fp16/bf16 the A gathers are 2-byte accesses shifted by the
# tap (dx = ±1), which cp.async cannot copy: only the B tiles (and fp32 A tiles) are multi-stage
# buffered in shared memory, so num_stages matters mostly for fp32.
GPU_FWD_CONFIGS = [
    (8, 16, 32, 4, 3),
    (4, 16, 32, 4, 3),
    (8, 16, 64, 4, 3),
    (16, 16, 32, 8, 3),
]  # fmt: skip
GPU_FWD_IEEE_CONFIGS = [
    (8, 16, 32, 4, 3),
    (16, 16, 32, 8, 3),
]  # fmt: skip
FWD_CONFIGS = _configs(GPU_FWD_CONFIGS)
FWD_IEEE_CONFIGS = _configs(GPU_FWD_IEEE_CONFIGS)
# Bucketed key: H_BUCKET, W_BUCKET are the next powers of two of H and W (the launcher passes
# them), so a new image size re-tunes only when it crosses a power of two.
_KEY = ["Cin", "Cout", "H_BUCKET", "W_BUCKET"]
# Written pointer → the inputs the launcher lets it alias (tests/kernels/test_autotune_aliasing.py
# parses the kernel's tl.store targets and requires each to be listed here, and those that may
# alias an input to be in the autotuner's restore_value or reset_to_zero).
ALIASES = {"dense_block_conv3x3_fwd": {"OUT": ("RES", "X")}}


@triton.jit
def _k_loop(CH_IDX, x_pix, w_col, y, x, pix_ok, n_ok, H, W, Cin, n_cblk, sx_c, sx_y, sx_x,
            sw_c, sw_y, sw_x, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
            BLOCK_K: tl.constexpr, PRECISION: tl.constexpr, EVEN_K: tl.constexpr,
            EVEN_N: tl.constexpr, MASK_PIX: tl.constexpr):  # fmt: skip
    """The K loop of dense_block_conv3x3_fwd: 9 · n_cblk steps (tap, channel block) into an fp32
    (BLOCK_M, BLOCK_N) accumulator, acc[m, n] = Σ_{tap, c} X[b, CH_IDX[c], y_m + dy, x_m + dx] ·
    W[n, c, ky, kx]. MASK_PIX = False drops the border mask (the caller guarantees every tap of
    every pixel is inside the image).

    Per step: one BLOCK_M × BLOCK_N × BLOCK_K MMA; the A gather, BLOCK_M·BLOCK_K scalar 2- or
    4-byte loads (1024 / BLOCK_N per kMAC); the B tile, BLOCK_K·BLOCK_N elements in 16-byte
    copies (1024 / BLOCK_M per kMAC); BLOCK_K channel-table entries; scalar counter updates for
    the tap. No exps."""
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    # (channel block, kx, ky) of step i are carried as counters: the integer division
    # i // n_cblk by a runtime value cost ~20 instructions a step.
    cb = 0
    kx = 0
    ky = 0
    for _ in range(0, 9 * n_cblk):
        c = cb * BLOCK_K + offs_k  # (K,) positions in the channel table
        dy = ky - 1
        dx = kx - 1
        inside = pix_ok & (y >= -dy) & (y < H - dy) & (x >= -dx) & (x < W - dx)  # (M,)
        a_off = dy * sx_y + dx * sx_x
        w_off = ky * sw_y + kx * sw_x
        if EVEN_K:  # Cin a multiple of BLOCK_K (every RRDB/RRSB layer): no channel mask
            ch = tl.load(CH_IDX + c)  # (K,) buffer channels
            if MASK_PIX:
                a = tl.load(x_pix[:, None] + a_off + ch[None, :] * sx_c, mask=inside[:, None], other=0.0)
            else:
                a = tl.load(x_pix[:, None] + a_off + ch[None, :] * sx_c)
            if EVEN_N:
                w = tl.load(w_col[None, :] + w_off + c[:, None] * sw_c)
            else:
                w = tl.load(w_col[None, :] + w_off + c[:, None] * sw_c, mask=n_ok[None, :], other=0.0)
        else:
            c_ok = c < Cin
            ch = tl.load(CH_IDX + c, mask=c_ok, other=0)
            a_mask = inside[:, None] & c_ok[None, :] if MASK_PIX else c_ok[None, :]
            a = tl.load(x_pix[:, None] + a_off + ch[None, :] * sx_c, mask=a_mask, other=0.0)  # (M, K)
            w = tl.load(
                w_col[None, :] + w_off + c[:, None] * sw_c,
                mask=c_ok[:, None] & n_ok[None, :],
                other=0.0,
            )  # (K, N)  fmt: skip
        acc = _dot(a, w, acc, PRECISION)
        cb += 1
        next_tap = cb == n_cblk
        cb = tl.where(next_tap, 0, cb)
        kx = tl.where(next_tap, kx + 1, kx)
        next_row = kx == 3
        kx = tl.where(next_row, 0, kx)
        ky = tl.where(next_row, ky + 1, ky)
    return acc


# On the first launch of every key Triton times each config on the live arguments. OUT is the
# one pointer the kernel writes, and it may alias an input: RES (the in-place residual
# x0 ← 0.2·x5 + x0, not idempotent: each timed launch would apply it again) and X (the buffer;
# harmless, as written and read channels are disjoint). restore_value makes the autotuner copy
# OUT before each timed launch and put it back after (tests/kernels/test_autotune_aliasing.py
# checks every autotuner against ALIASES). Two autotuners share the kernel:
# dense_block_conv3x3_fwd for 16-bit and TF32 dots, dense_block_conv3x3_fwd_ieee (below) for IEEE
# fp32 dots.
@triton.autotune(configs=FWD_CONFIGS, key=_KEY, restore_value=["OUT"])
@triton.heuristics({
    "EVEN_K": lambda a: a["Cin"] % a["BLOCK_K"] == 0,
    "EVEN_N": lambda a: a["Cout"] % a["BLOCK_N"] == 0,
})  # fmt: skip
@triton.jit
def dense_block_conv3x3_fwd(
    # X, RES, OUT (B, ·, H, W); CH_IDX (Cin,) int32; WEIGHT (Cout, Cin, 3, 3); BIAS (Cout,)
    X, CH_IDX, WEIGHT, BIAS, RES, OUT,
    residual_scale, B, H, W, Cin, Cout, out_offset,
    sx_b, sx_c, sx_y, sx_x,
    sw_n, sw_c, sw_y, sw_x,
    sr_b, sr_c, sr_y, sr_x,
    so_b, so_c, so_y, so_x,
    H_BUCKET, W_BUCKET,  # autotune key only: next powers of two of H and W (not read)
    ACTIVATION: tl.constexpr, RESIDUAL: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
):  # fmt: skip
    """One 3×3 convolution of a (sparse) dense block with its bias, LeakyReLU and residual fused
    (the module docstring has the math, the buffer layout and the memory traffic):

        OUT[b, out_offset + n, y, x] = post(BIAS[n] + Σ_{c, ky, kx} WEIGHT[n, c, ky, kx] ·
                                            X[b, CH_IDX[c], y + ky − 1, x + kx − 1])
        post(v) = lrelu(v, 0.2) if ACTIVATION, then v · residual_scale + RES[b, n, y, x] if RESIDUAL

    Forward only: the block's backward is PyTorch's convolution backward over the saved buffer
    (fastsr/ops/dense_block.py), so no backward kernel exists.

    Grid: 1-D, B · ⌈H / TILE_H⌉ · ⌈W / TILE_W⌉ · ⌈Cout / BLOCK_N⌉ programs, output-channel blocks
    fastest; a program owns one TILE_H × TILE_W pixel patch of one image and BLOCK_N output
    channels. Interior patches (every tap inside the image) run the K loop without the border
    mask, for 16-bit inputs; the branch is uniform per program.

    Inner loop (``_k_loop``, 9 · ⌈Cin / BLOCK_K⌉ steps): per step one MMA of BLOCK_M × BLOCK_N ×
    BLOCK_K multiply-adds, 1024 / BLOCK_N gathered A elements and 1024 / BLOCK_M B elements per
    kMAC, no exps. Report, sm_90 fp16, first config: conv1 204.5, conv5 155.7 thread-
    instructions per kMAC.
    """
    BLOCK_M: tl.constexpr = TILE_H * TILE_W
    # 1-D grid, output-channel blocks fastest: the programs sharing a pixel patch run together
    # and find its A tiles in L2.
    pid = tl.program_id(0)
    n_nblk = tl.cdiv(Cout, BLOCK_N)
    tiles_h = tl.cdiv(H, TILE_H)
    tiles_w = tl.cdiv(W, TILE_W)
    pid_n = pid % n_nblk
    pid_m = pid // n_nblk
    b = pid_m // (tiles_h * tiles_w)
    tile = pid_m % (tiles_h * tiles_w)

    offs_m = tl.arange(0, BLOCK_M)
    y = (tile // tiles_w) * TILE_H + offs_m // TILE_W  # (M,) output row
    x = (tile % tiles_w) * TILE_W + offs_m % TILE_W  # (M,) output column, contiguous runs
    pix_ok = (y < H) & (x < W)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < Cout
    b64 = b.to(tl.int64)

    x_pix = X + b64 * sx_b + (y * sx_y + x * sx_x)  # (M,) pointers to X[b, 0, y, x]
    w_col = WEIGHT + offs_n * sw_n  # (N,) pointers to W[n, 0, 0, 0]

    n_cblk = tl.cdiv(Cin, BLOCK_K)
    # Interior patches (2/3 of them at 128 × 128 with 8 × 16 tiles): every tap of every pixel
    # is inside the image, so their gathers need no border mask — a masked 16-bit load costs a
    # register clear and a predicate per element (conv1 on sm_90: 234 → 189 instructions per
    # kMAC without them). The branch is uniform per program. Only for 16-bit inputs: fp32 A
    # tiles are asynchronous copies whose masks are free (zero-fill), and the second loop's
    # buffers would double their shared memory.
    y0 = (tile // tiles_w) * TILE_H
    x0 = (tile % tiles_w) * TILE_W
    interior = (y0 >= 1) & (y0 + TILE_H <= H - 1) & (x0 >= 1) & (x0 + TILE_W <= W - 1)
    if X.dtype.element_ty == tl.float32:
        acc = _k_loop(
            CH_IDX,
            x_pix,
            w_col,
            y,
            x,
            pix_ok,
            n_ok,
            H,
            W,
            Cin,
            n_cblk,
            sx_c,
            sx_y,
            sx_x,
            sw_c,
            sw_y,
            sw_x,
            BLOCK_M,
            BLOCK_N,
            BLOCK_K,
            PRECISION,
            EVEN_K,
            EVEN_N,
            True,
        )
    elif interior:
        acc = _k_loop(
            CH_IDX,
            x_pix,
            w_col,
            y,
            x,
            pix_ok,
            n_ok,
            H,
            W,
            Cin,
            n_cblk,
            sx_c,
            sx_y,
            sx_x,
            sw_c,
            sw_y,
            sw_x,
            BLOCK_M,
            BLOCK_N,
            BLOCK_K,
            PRECISION,
            EVEN_K,
            EVEN_N,
            False,
        )
    else:
        acc = _k_loop(
            CH_IDX,
            x_pix,
            w_col,
            y,
            x,
            pix_ok,
            n_ok,
            H,
            W,
            Cin,
            n_cblk,
            sx_c,
            sx_y,
            sx_x,
            sw_c,
            sw_y,
            sw_x,
            BLOCK_M,
            BLOCK_N,
            BLOCK_K,
            PRECISION,
            EVEN_K,
            EVEN_N,
            True,
        )

    acc += tl.load(BIAS + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if ACTIVATION:
        acc = tl.where(acc >= 0, acc, acc * _NEGATIVE_SLOPE)
    mask = pix_ok[:, None] & n_ok[None, :]
    if RESIDUAL:
        r_ptrs = RES + b64 * sr_b + (y * sr_y + x * sr_x)[:, None] + offs_n[None, :] * sr_c
        acc = acc * residual_scale + tl.load(r_ptrs, mask=mask, other=0.0).to(tl.float32)
    o_ptrs = OUT + b64 * so_b + (y * so_y + x * so_x)[:, None] + (out_offset + offs_n)[None, :] * so_c
    tl.store(o_ptrs, acc.to(OUT.dtype.element_ty), mask=mask)


dense_block_conv3x3_fwd_ieee = triton.autotune(configs=FWD_IEEE_CONFIGS, key=_KEY, restore_value=["OUT"])(
    dense_block_conv3x3_fwd.fn
)
TUNERS = (dense_block_conv3x3_fwd, dense_block_conv3x3_fwd_ieee)


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compile specs (read by fastsr.kernels.report; no GPU needed)
# ---------------------------------------------------------------------------------------------

# Representative layers of one dense block at B = 1 on a 128 × 128 LR input, nf = 64, gc = 32:
# the buffer holds nf + 4·gc = 192 channels. conv1 reads x0 (Cin = 64) and writes x1 (Cout = 32,
# LeakyReLU) into the buffer; conv5 reads all 192 channels and writes 0.2·(conv5 + b5) + x0
# (Cout = 64, RESIDUAL, RES = the x0 channels of the buffer) into a separate output.
_LAYERS = {
    "conv1": dict(Cin=64, Cout=32, out_offset=64, out_channels=192, activation=True, residual=False),
    "conv5": dict(Cin=192, Cout=64, out_offset=0, out_channels=64, activation=False, residual=True),
}


def aot_specs(all_configs: bool = False) -> list[dict]:
    """One spec per layer (conv1, conv5) × dtype × config, named
    "dense_block_conv3x3_fwd[conv1]" etc. in the report's kernel column: B = 1, H = W = 128,
    buffer (1, 192, 128, 128), weights tap-major as the launcher passes them. Without
    ``all_configs`` only the autotune list's first config is listed. Dtype labels as
    fastsr.kernels.report reads them: "fp16", "bf16", "fp32" (IEEE dots: the launcher's default,
    dense_block_conv3x3_fwd_ieee's configs) and "tf32" (fp32 inputs with
    torch.backends.cuda.matmul.allow_tf32 set).

    The report's per-unit counts use unit "kMAC" (1024 multiply-adds): one iteration of the
    K loop does BLOCK_M·BLOCK_N·BLOCK_K of them (padded output channels included); no exps.
    """
    B, H, W, C = 1, 128, 128, 192
    fn = dense_block_conv3x3_fwd.fn
    while not isinstance(fn, triton.runtime.jit.JITFunction):  # autotune → heuristics → jit
        fn = fn.fn
    specs = []
    for layer, p in _LAYERS.items():
        Cin, Cout = p["Cin"], p["Cout"]
        block_n = min(64, max(16, triton.next_power_of_2(Cout)))
        for label, dtype, precision in _DTYPES:
            tuner = dense_block_conv3x3_fwd_ieee if label == "fp32" else dense_block_conv3x3_fwd
            configs = tuner.configs if all_configs else tuner.configs[:1]
            args = dict(
                X=f"*{dtype}", CH_IDX="*i32", WEIGHT=f"*{dtype}", BIAS=f"*{dtype}",
                RES=f"*{dtype}", OUT=f"*{dtype}",
                residual_scale=0.2 if p["residual"] else 1.0, B=B, H=H, W=W, Cin=Cin, Cout=Cout,
                out_offset=p["out_offset"],
                sx_b=C * H * W, sx_c=H * W, sx_y=W, sx_x=1,
                sw_n=1, sw_c=Cout, sw_y=3 * Cin * Cout, sw_x=Cin * Cout,  # tap-major
                sr_b=C * H * W, sr_c=H * W, sr_y=W, sr_x=1,
                so_b=p["out_channels"] * H * W, so_c=H * W, so_y=W, so_x=1,
                H_BUCKET=triton.next_power_of_2(H), W_BUCKET=triton.next_power_of_2(W),
            )  # fmt: skip
            for config in configs:
                kw = config.kwargs
                split = dtype != "fp32"  # the kernel's interior loop exists for 16-bit inputs only
                interior = _interior_fraction(H, W, kw["TILE_H"], kw["TILE_W"])
                constexprs = dict(
                    kw, BLOCK_N=block_n, ACTIVATION=p["activation"], RESIDUAL=p["residual"],
                    PRECISION=precision, EVEN_K=Cin % kw["BLOCK_K"] == 0,
                    EVEN_N=Cout % block_n == 0,
                )  # fmt: skip
                specs.append(dict(
                    kernel=f"{fn.__name__}[{layer}]", dtype=label, fn=fn, args=args,
                    constexprs=constexprs, num_warps=config.num_warps,
                    num_stages=config.num_stages,
                    config=f"T{kw['TILE_H']}x{kw['TILE_W']} N{block_n} K{kw['BLOCK_K']} "
                    f"w{config.num_warps} s{config.num_stages}",
                    unit="kMAC", exps_per_unit=None,
                    loop_combine="alternatives" if split else "sequence",
                    loop_names=["K loop, interior", "K loop, border"] if split else ["K loop"],
                    loop_weights=[interior, 1 - interior] if split else [1.0],
                    units_per_iteration=kw["TILE_H"] * kw["TILE_W"] * block_n * kw["BLOCK_K"] / 1024,
                    estimate_units=B * H * W * Cout * 9 * Cin / 1024,
                    estimate_shape="conv: its layer at B = 1, 128×128 (kMAC = 1024 multiply-adds)",
                ))  # fmt: skip
    return specs


def _interior_fraction(H: int, W: int, tile_h: int, tile_w: int) -> float:
    """Share of the patches whose every tap lies inside the image (dense_block_conv3x3_fwd's
    unmasked K loop), weighted by their pixels."""

    def inner(n, t):
        return sum(1 for s in range(0, n, t) if s >= 1 and s + t <= n - 1)

    return inner(H, tile_h) * inner(W, tile_w) / (triton.cdiv(H, tile_h) * triton.cdiv(W, tile_w))


# (report label, Triton pointer dtype, tl.dot input precision)
_DTYPES = (("fp16", "fp16", "ieee"), ("bf16", "bf16", "ieee"), ("fp32", "fp32", "ieee"),
           ("tf32", "fp32", "tf32"))  # fmt: skip
