"""SPSA layer: segmentation-prior self-attention as a drop-in nn.Module (SPSAGAN paper, section 3.1).

    z      = α · Conv_{k×k, stride k}(seg)                      transform network (eq. 3)
    β_fea  = softmax_i(f_fea(x_i)ᵀ g_fea(x_j))                  feature attention (eqs. 1–2)
    β_seg  = softmax_i(f_seg(z_i)ᵀ g_seg(z_j))                  segmentation attention (eq. 4)
    β      = fused by w = |β_seg − β_fea| / (β_seg + β_fea)     combined, renormalised (eqs. 5–6)
    o_j    = Σ_i β_ji h(x_i)                                    (eq. 7)
    out    = x + γ · o,  γ initialised to 0                     (SAGAN: starts as the identity)

Query j uses g, keys i use f, as the paper writes s_ij = f(x_i)ᵀ g(x_j). The attention itself is
:func:`fastsr.ops.spsa_attention` (O(L) memory); this module only builds its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fastsr.ops.spsa import BACKENDS, spsa_attention, spsa_attention_maps

__all__ = ["SPSA"]

_ALPHA_EPS = 1e-12  # below this mean|transform(seg)| there is nothing for α to match


class SPSA(nn.Module):
    """Segmentation-prior self-attention over a feature map, guided by a segmentation prior.

    Args:
        channels: C, channels of the feature map x (and of the output).
        seg_channels: S, channels of the prior (class probabilities, 8 for the OST classes).
        qk_channels: channels of the query/key projections f, g (both branches); default
            max(1, channels // 8) as in SAGAN.
        heads: splits the qk and value channels into this many attention heads; qk_channels and
            channels must both be divisible by it. 1 is the paper's layer.
        prior_stride: k, the prior's resolution over the feature map's. The transform network is
            a k×k convolution with stride k: k = 4 is the paper's (prior at HR size, features at
            LR size), k = 1 a 1×1 convolution for a prior already at feature resolution. Any other
            ratio (non-integer, or different along H and W): resize the prior first, e.g.
            ``F.interpolate(seg, size=(k * H, k * W), mode="bilinear")``.
        scale: multiplies both score matrices; 1.0 is the paper's plain dot product.
        backend: passed to :func:`fastsr.ops.spsa_attention` ("auto", "triton", "torch",
            "reference").

    Parameters and buffers:
        f_fea, g_fea: 1×1 convs x → keys, queries (C → qk_channels, no bias: eq. 1 writes W x,
            and a key bias would cancel in the softmax anyway).
        h: 1×1 conv x → values (C → C, no bias, eq. 7).
        transform: the k×k stride-k conv of the transform network (S → C, with bias).
        alpha: scalar α of eq. 3. Initialised on the first forward (training or eval, also under
            ``torch.no_grad``) to mean|x| / mean|transform(seg)| over that batch, as the paper
            prescribes; 1.0 until then, and kept at 1.0 if mean|transform(seg)| is 0.
        f_seg, g_seg: 1×1 convs z → keys, queries (C → qk_channels, no bias, eq. 4).
        gamma: scalar γ, initialised to 0 so that the layer starts as the identity.
        alpha_initialized: bool buffer, saved in the state dict: a reloaded model keeps its α.
            ``reset_parameters()`` clears it.

    α's data-dependent initialisation never reads the device: a Python attribute mirrors the
    buffer (set by the initialisation, ``reset_parameters()`` and ``load_state_dict()``), so the
    check costs no host–device sync and is a constant for ``torch.compile``. A compiled model may
    run its first forward compiled: the initialisation is traced into the graph (an in-place
    write of α under no_grad, no graph break with ``fullgraph=True``) and the next call
    recompiles once without it. Change the flag only through those methods. Under
    DistributedDataParallel each rank would initialise α from its own batch: run one forward (or
    load a checkpoint) before wrapping the model.

    Shapes:
        x: (B, C, H, W) features; seg: (B, S, k·H, k·W) prior, same dtype and device.
        Output: (B, C, H, W).
    """

    alpha_initialized: Tensor

    def __init__(
        self,
        channels: int,
        seg_channels: int,
        *,
        qk_channels: int | None = None,
        heads: int = 1,
        prior_stride: int = 4,
        scale: float = 1.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if qk_channels is None:
            qk_channels = max(1, channels // 8)
        for name, value in (
            ("channels", channels),
            ("seg_channels", seg_channels),
            ("qk_channels", qk_channels),
            ("heads", heads),
            ("prior_stride", prior_stride),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        for name, value in (("qk_channels", qk_channels), ("channels", channels)):
            if value % heads:
                raise ValueError(f"{name} ({value}) must be divisible by heads ({heads})")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
        self.channels, self.seg_channels, self.qk_channels = channels, seg_channels, qk_channels
        self.heads, self.prior_stride = heads, prior_stride
        self.scale, self.backend = float(scale), backend

        self.f_fea = nn.Conv2d(channels, qk_channels, 1, bias=False)
        self.g_fea = nn.Conv2d(channels, qk_channels, 1, bias=False)
        self.h = nn.Conv2d(channels, channels, 1, bias=False)
        self.transform = nn.Conv2d(seg_channels, channels, prior_stride, stride=prior_stride)
        self.alpha = nn.Parameter(torch.ones(()))
        self.f_seg = nn.Conv2d(channels, qk_channels, 1, bias=False)
        self.g_seg = nn.Conv2d(channels, qk_channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))
        self.register_buffer("alpha_initialized", torch.zeros((), dtype=torch.bool))
        self._alpha_ready = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default conv initialisation; α = 1 and uninitialised (set again by the next
        forward); γ = 0."""
        for conv in (self.f_fea, self.g_fea, self.h, self.transform, self.f_seg, self.g_seg):
            conv.reset_parameters()
        with torch.no_grad():
            self.alpha.fill_(1.0)
            self.gamma.zero_()
            self.alpha_initialized.fill_(False)
        self._alpha_ready = False

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, seg_channels={self.seg_channels}, "
            f"qk_channels={self.qk_channels}, heads={self.heads}, "
            f"prior_stride={self.prior_stride}, scale={self.scale}, backend={self.backend!r}"
        )

    # -- forward --------------------------------------------------------------------------------

    def forward(self, x: Tensor, seg: Tensor) -> Tensor:
        """x: (B, C, H, W), seg: (B, S, k·H, k·W) with k = prior_stride → (B, C, H, W)."""
        self._check_inputs(x, seg)
        B, C, H, W = x.shape
        if B == 0:  # the op's tiled path needs a non-empty batch; α needs a sample to start from
            return x.clone()
        z = self._prior_features(x, seg)  # (B, C, H, W)
        q_fea = self._split_heads(self.g_fea(x))  # (B, heads, L, qk/heads)
        k_fea = self._split_heads(self.f_fea(x))  # (B, heads, L, qk/heads)
        q_seg = self._split_heads(self.g_seg(z))  # (B, heads, L, qk/heads)
        k_seg = self._split_heads(self.f_seg(z))  # (B, heads, L, qk/heads)
        v = self._split_heads(self.h(x))  # (B, heads, L, C/heads)
        o = spsa_attention(q_fea, k_fea, q_seg, k_seg, v, scale=self.scale, backend=self.backend)
        o = o.transpose(-1, -2).reshape(B, C, H, W)  # heads back into channels
        return x + self.gamma * o

    def _prior_features(self, x: Tensor, seg: Tensor) -> Tensor:
        """z = α · transform(seg): (B, C, H, W); initialises α on the first call."""
        conv = self.transform(seg)  # (B, C, H, W)
        if not self._alpha_ready:
            self._initialize_alpha(x, conv)
        return self.alpha * conv

    def _initialize_alpha(self, x: Tensor, conv: Tensor) -> None:
        # Branch-free on tensor values, so torch.compile can trace it without a graph break.
        with torch.no_grad():
            dtype = torch.promote_types(x.dtype, torch.float32)  # fp16 sums overflow
            x_l1 = x.abs().mean(dtype=dtype)
            conv_l1 = conv.abs().mean(dtype=dtype)
            ratio = x_l1 / conv_l1.clamp_min(_ALPHA_EPS)
            self.alpha.copy_(torch.where(conv_l1 > _ALPHA_EPS, ratio, torch.ones_like(ratio)))
            self.alpha_initialized.fill_(True)
        self._alpha_ready = True

    def _split_heads(self, t: Tensor) -> Tensor:
        """(B, heads·D, H, W) → (B, heads, H·W, D), contiguous as the kernels like it."""
        B, _, H, W = t.shape
        return t.reshape(B, self.heads, -1, H * W).transpose(-1, -2).contiguous()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if not self.alpha_initialized.is_meta:  # loading is eager, so one read here is free
            self._alpha_ready = bool(self.alpha_initialized)

    # -- inspection -----------------------------------------------------------------------------

    def attention_maps(self, x: Tensor, seg: Tensor, pixels: Sequence[tuple[int, int]]) -> dict[str, Tensor]:
        """Attention rows of chosen query pixels, for plots like the paper's Fig. 6.

        Computed from the reference formulas for those rows only: O(len(pixels) · H · W) memory.
        Like a forward, the first call initialises α. Wrap in ``torch.no_grad()`` for plotting.

        Args:
            x: (B, C, H, W) features.
            seg: (B, S, k·H, k·W) prior, k = prior_stride.
            pixels: P query positions (row, column) of the feature map, 0 ≤ row < H, 0 ≤ col < W.

        Returns:
            dict of (B, heads, P, H, W) tensors, each row a distribution over the key pixels
            (sums to 1): "feature" (β_fea, eq. 2), "segmentation" (β_seg, eq. 4) and "combined"
            (β, eq. 6, renormalised — the weights the output uses).
        """
        self._check_inputs(x, seg)
        B, C, H, W = x.shape
        rows = self._pixel_rows(pixels, H, W)  # (P,) flat query indices
        z = self._prior_features(x, seg)  # (B, C, H, W)
        q_fea = self._split_heads(self.g_fea(x))[:, :, rows]  # (B, heads, P, qk/heads)
        k_fea = self._split_heads(self.f_fea(x))  # (B, heads, L, qk/heads)
        q_seg = self._split_heads(self.g_seg(z))[:, :, rows]  # (B, heads, P, qk/heads)
        k_seg = self._split_heads(self.f_seg(z))  # (B, heads, L, qk/heads)
        maps = spsa_attention_maps(q_fea, k_fea, q_seg, k_seg, self.scale)  # 3 × (B, h, P, L)
        beta_fea, beta_seg, beta = maps
        shape = (B, self.heads, len(rows), H, W)
        return {
            "feature": beta_fea.reshape(shape),
            "segmentation": beta_seg.reshape(shape),
            "combined": beta.reshape(shape),
        }

    # -- checks ---------------------------------------------------------------------------------

    def _pixel_rows(self, pixels: Sequence[tuple[int, int]], H: int, W: int) -> list[int]:
        try:
            pairs = [(int(r), int(c)) for r, c in pixels]
        except (TypeError, ValueError):
            raise TypeError(f"pixels must be a sequence of (row, column) int pairs; got {pixels!r}") from None
        if not pairs:
            raise ValueError("pixels must name at least one (row, column) position; got none")
        for r, c in pairs:
            if not (0 <= r < H and 0 <= c < W):
                raise ValueError(
                    f"pixels must lie in the {H}×{W} feature map "
                    f"(0 ≤ row < {H}, 0 ≤ column < {W}); got ({r}, {c})"
                )
        return [r * W + c for r, c in pairs]

    def _check_inputs(self, x: Tensor, seg: Tensor) -> None:
        k = self.prior_stride
        for name, t, layout, want in (
            ("x", x, "(B, C, H, W)", ("C", self.channels)),
            ("seg", seg, "(B, S, H', W')", ("S", self.seg_channels)),
        ):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor {layout}; got {type(t).__name__}")
            if t.dim() != 4:
                raise ValueError(f"{name} must be {layout}; got shape {tuple(t.shape)}")
            if not t.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor; got dtype {t.dtype}")
            if t.shape[1] != want[1]:
                raise ValueError(
                    f"{name} must be {layout} with {want[0]} = {want[1]}; "
                    f"got {t.shape[1]} channels (shape {tuple(t.shape)})"
                )
        B, C, H, W = x.shape
        if H == 0 or W == 0:
            raise ValueError(f"x must have a non-empty feature map; got shape {tuple(x.shape)}")
        expected = (B, self.seg_channels, k * H, k * W)
        if tuple(seg.shape) != expected:
            hint = ""
            if seg.shape[0] == B:
                hint = (
                    f" (prior_stride = {k}: the prior must be {k}× the feature map's size; "
                    "resize it first, e.g. with F.interpolate)"
                )
            raise ValueError(
                f"seg must be (B, S, {k}·H, {k}·W) = {expected} for x of shape {tuple(x.shape)}; "
                f"got {tuple(seg.shape)}{hint}"
            )
        if seg.device != x.device:
            raise ValueError(f"seg must be on x's device {x.device}; got {seg.device}")
        if seg.dtype != x.dtype:
            raise TypeError(f"seg must have x's dtype {x.dtype}; got {seg.dtype}")
