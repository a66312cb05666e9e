"""Checkpoints other programs wrote, read as fastsr model files: BasicSR and Real-ESRGAN RRDBNets
and original ESRGAN ones, ``.pth`` or ``.safetensors``, with their architecture read off the keys.

    BasicSR / Real-ESRGAN   {"params_ema": sd} (preferred), {"params": sd}, or a bare sd, keys
                            conv_first, body.N.rdbK.convJ, conv_body, conv_up1/2, conv_hr,
                            conv_last; ``module.`` prefixes (DataParallel / DDP) stripped.
                            Scale 4, or 2 and 1 with pixel-unshuffle (RealESRGAN_x2plus): there
                            conv_first reads num_in_ch · 4 or · 16 channels.
    ESRGAN                  RRDB_trunk.N.RDBK.convJ, trunk_conv, upconv1/2, HRconv (RRDB_ESRGAN_x4.pth)
    ESRGAN, old arch        model.0 (conv_first), model.1.sub.N.RDBK.convJ.0 (the blocks),
                            model.1.sub.<num_block> (trunk conv), then the up-convs, HR conv and
                            last conv in order (model.3, model.6, model.8, model.10 at ×4),
                            as xinntao/ESRGAN's transer_RRDB_models.py reads them

Detected from the keys and shapes: num_feat (conv_first's outputs), num_block (body.N), num_grow_ch
(rdb1.conv1's outputs), num_out_ch (conv_last's), the up-convs (two: an RRDBNet at ×4, ×2 or ×1 by
conv_first's inputs; one or three: an ESRGAN-style ×2 or ×8 net, read as
``SPSAGenerator(use_spsa=False)``, whose keys are the same). Dense blocks only: a sparse (RRSB)
net's connections cannot be told from its shapes alone, so such a file needs fastsr's own format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from fastsr._checks import listing

_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB([1-3])\.conv([1-5])\.0\.(weight|bias)$")
_OLD_CONV = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_OLD_TRUNK = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_NEW_RDB = re.compile(r"^RRDB_trunk\.(\d+)\.RDB([1-3])\.conv([1-5])\.(weight|bias)$")
_ESRGAN_RENAMES = {
    "trunk_conv": "conv_body",
    "upconv1": "conv_up1",
    "upconv2": "conv_up2",
    "upconv3": "conv_up3",
    "HRconv": "conv_hr",
}
_BODY = re.compile(r"^body\.(\d+)\.rdb([1-3])\.conv([1-5])\.(weight|bias)$")


def unwrap(obj: Mapping[str, Any]) -> tuple[dict[str, Tensor], str]:
    """The state dict inside a checkpoint and where it was: "params_ema" (preferred, as
    Real-ESRGAN's inference), "params", or the dict itself; ``module.`` prefixes stripped."""
    where = "state dict"
    for key in ("params_ema", "params"):
        if isinstance(obj.get(key), Mapping):
            obj, where = obj[key], key
            break
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            return {}, where
        while k.startswith("module."):
            k = k[len("module.") :]
        out[k] = v
    return out, where


def to_basicsr_names(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """(BasicSR-named state dict, the naming it came in: "BasicSR", "ESRGAN" or "ESRGAN old arch")."""
    if "model.0.weight" in state:
        return _convert_old_arch(state), "ESRGAN old arch"
    if any(_NEW_RDB.match(k) for k in state) or "trunk_conv.weight" in state:
        out = {}
        for k, v in state.items():
            m = _NEW_RDB.match(k)
            if m:
                n, r, j, p = m.groups()
                k = f"body.{n}.rdb{r}.conv{j}.{p}"
            else:
                head, _, tail = k.partition(".")
                k = f"{_ESRGAN_RENAMES[head]}.{tail}" if head in _ESRGAN_RENAMES else k
            out[k] = v
        return out, "ESRGAN"
    return dict(state), "BasicSR"


def _convert_old_arch(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    trunk = [k for k in state if _OLD_TRUNK.match(k)]
    trunk_index = {int(_OLD_TRUNK.match(k).group(1)) for k in trunk}
    if len(trunk_index) != 1:
        return dict(state)  # not the layout: left for the caller to reject by name
    tail_convs = sorted({int(m.group(1)) for m in map(_OLD_CONV.match, state) if m and int(m.group(1)) >= 2})
    if len(tail_convs) < 3:
        return dict(state)
    names = [f"conv_up{i + 1}" for i in range(len(tail_convs) - 2)] + ["conv_hr", "conv_last"]
    rename = dict(zip(tail_convs, names))
    for k, v in state.items():
        if m := _OLD_RDB.match(k):
            n, r, j, p = m.groups()
            out[f"body.{n}.rdb{r}.conv{j}.{p}"] = v
        elif m := _OLD_TRUNK.match(k):
            out[f"conv_body.{m.group(2)}"] = v
        elif (m := _OLD_CONV.match(k)) and int(m.group(1)) == 0:
            out[f"conv_first.{m.group(2)}"] = v
        elif m and int(m.group(1)) in rename:
            out[f"{rename[int(m.group(1))]}.{m.group(2)}"] = v
        else:
            out[k] = v
    return out


def read_foreign(obj: Any, source: str) -> tuple[str, dict[str, Any], dict[str, Tensor], str] | None:
    """A BasicSR / Real-ESRGAN / ESRGAN checkpoint (a loaded dict) as (kind, config, BasicSR-named
    params, layout); None when it does not look like one (no conv_first / conv_last). Raises
    ValueError naming what was found when it looks like one but is not a supported architecture."""
    if not isinstance(obj, Mapping):
        return None
    state, where = unwrap(obj)
    if not state:
        return None
    state, naming = to_basicsr_names(state)
    if "conv_first.weight" not in state or "conv_last.weight" not in state:
        return None
    kind, config = detect_architecture(state, source)
    layout = {"BasicSR": "BasicSR / Real-ESRGAN", "ESRGAN": "ESRGAN", "ESRGAN old arch": "ESRGAN (old arch)"}[
        naming
    ]
    return kind, config, state, f"{layout} ({where})"


def detect_architecture(state: Mapping[str, Tensor], source: str) -> tuple[str, dict[str, Any]]:
    """(kind, config) of a BasicSR-named RRDB state dict, from its keys and shapes."""
    first, last = state["conv_first.weight"], state["conv_last.weight"]
    if first.dim() != 4 or last.dim() != 4 or first.shape[-2:] != (3, 3):
        raise ValueError(
            f"{source}: conv_first / conv_last must be 3×3 convolutions; got shapes "
            f"{tuple(first.shape)}, {tuple(last.shape)}"
        )
    num_feat, in_total = int(first.shape[0]), int(first.shape[1])
    num_out_ch = int(last.shape[0])
    blocks = sorted({int(m.group(1)) for m in map(_BODY.match, state) if m})
    if not blocks or blocks != list(range(len(blocks))):
        raise ValueError(
            f"{source}: expected RRDB blocks body.0 … body.N-1 (an ESRGAN / Real-ESRGAN RRDBNet); "
            f"found blocks {blocks[:8]}"
        )
    num_grow_ch = (
        int(state["body.0.rdb1.conv1.weight"].shape[0]) if "body.0.rdb1.conv1.weight" in state else 0
    )
    for n in blocks:
        for r in (1, 2, 3):
            for j in range(1, 6):
                w = state.get(f"body.{n}.rdb{r}.conv{j}.weight")
                dense_in = num_feat + (j - 1) * num_grow_ch
                if w is None or w.shape[1] != dense_in:
                    got = "missing" if w is None else f"{w.shape[1]} input channels"
                    raise ValueError(
                        f"{source}: body.{n}.rdb{r}.conv{j} is {got}, not a dense block's {dense_in} "
                        f"(nf {num_feat}, gc {num_grow_ch}); sparse RRSB nets load only from fastsr's model "
                        "files, which keep their connections"
                    )
    ups = 0
    while f"conv_up{ups + 1}.weight" in state:
        ups += 1
    known = {
        f"{name}.{p}"
        for name in (
            "conv_first",
            "conv_body",
            "conv_hr",
            "conv_last",
            *(f"conv_up{k}" for k in range(1, ups + 1)),
        )
        for p in ("weight", "bias")
    }
    unknown = [k for k in state if k not in known and not _BODY.match(k)]
    if unknown:
        raise ValueError(
            f"{source}: not an ESRGAN / Real-ESRGAN RRDBNet: unknown keys {listing([repr(k) for k in unknown])}"
        )
    widths = dict(num_feat=num_feat, num_block=len(blocks), num_grow_ch=num_grow_ch)
    if ups == 2:
        ratio, rest = divmod(in_total, num_out_ch)
        unshuffle = {1: 1, 4: 2, 16: 4}.get(ratio) if rest == 0 else None
        num_in_ch = in_total // unshuffle**2 if unshuffle else in_total
        scale = 4 // unshuffle if unshuffle else 4
        return "rrdbnet", dict(
            num_in_ch=num_in_ch, num_out_ch=num_out_ch, scale=scale, **widths, connections=None
        )
    if ups in (1, 3):
        return "spsagan", dict(
            in_ch=in_total,
            out_ch=num_out_ch,
            scale=2**ups,
            **widths,
            connections=None,
            seg_channels=8,
            use_spsa=False,
            qk_channels=max(1, num_feat // 8),
            heads=1,
            global_skip=False,
        )
    raise ValueError(
        f"{source}: an RRDB net with {ups} up-convolutions (conv_up1 …); supported: two (×4, and ×2 / ×1 "
        "with pixel-unshuffle), one (×2) or three (×8)"
    )
