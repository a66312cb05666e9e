"""Hostile files for the safety tests: pickles whose loading creates a sentinel file.

Each payload object's ``__reduce__`` asks the unpickler to call a function that creates
``sentinel``: ``builtins.open(sentinel, "w")``, ``os.system("touch …")`` or ``builtins.exec``.
:func:`make_hostile_files` writes the payload in every way a file can carry one:

    top-level.pt     torch.save(payload)                              (zip format)
    nested.pt        a fastsr model file dict with the payload as one "tensor"
    nested-ckpt.pt   a fastsr training checkpoint with the payload as an RNG state
    basicsr.pth      a BasicSR checkpoint {"params_ema": {...payload...}}
    legacy.pt        the nested model file in torch's legacy (pre-1.6, non-zip) format
    raw.pkl          pickle.dump(payload), protocol 2 (starts like a legacy torch file)
    raw-p0.pkl       pickle.dump(payload), protocol 0 (ASCII)
    tampered.pt2     a real torch.export program whose weight is switched to a pickled payload
                     (torch.export.load unpickles it with weights_only=False)
    tampered-ts.pt   a real TorchScript archive whose constants.pkl is replaced by the payload
"""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import torch

HOW = ("open", "system", "exec")


class Payload:
    def __init__(self, sentinel: Path, how: str = "open"):
        self.sentinel, self.how = str(sentinel), how

    def __reduce__(self):
        if self.how == "open":
            return (builtins.open, (self.sentinel, "w"))
        if self.how == "system":
            return (os.system, (f"touch '{self.sentinel}'",))
        return (builtins.exec, (f"open({self.sentinel!r}, 'w').close()",))


def _rewrite_zip(src: Path, dst: Path, replace) -> None:
    """Copy a zip archive, member by member, through ``replace(name, data) -> data``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, replace(info.filename, zin.read(info.filename)))


def make_hostile_files(folder: Path, sentinel: Path, how: str = "open") -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    evil = Payload(sentinel, how)
    files = {
        name: folder / name
        for name in (
            "top-level.pt",
            "nested.pt",
            "nested-ckpt.pt",
            "basicsr.pth",
            "legacy.pt",
            "raw.pkl",
            "raw-p0.pkl",
            "tampered.pt2",
            "tampered-ts.pt",
        )
    }
    model_file = {
        "format": "fastsr.model/1",
        "kind": "spsagan",
        "config": {"scale": 2},
        "params": {"conv_first.weight": evil},
        "prior": None,
    }
    torch.save(evil, files["top-level.pt"])
    torch.save(model_file, files["nested.pt"])
    torch.save(
        {
            "format": "fastsr.train/1",
            "config": {},
            "iteration": 1,
            "models": {},
            "optimizers": {},
            "schedulers": {},
            "rng": [{"numpy": evil}],
            "extra": {},
        },
        files["nested-ckpt.pt"],
    )
    torch.save({"params_ema": {"conv_first.weight": evil}}, files["basicsr.pth"])
    torch.save(model_file, files["legacy.pt"], _use_new_zipfile_serialization=False)
    files["raw.pkl"].write_bytes(pickle.dumps(evil, protocol=2))
    files["raw-p0.pkl"].write_bytes(pickle.dumps(evil, protocol=0))

    buf = io.BytesIO()
    torch.save(evil, buf)
    conv = torch.nn.Conv2d(3, 8, 1)
    program = torch.export.export(conv, (torch.rand(1, 3, 4, 4),))
    clean_pt2 = folder / "clean.pt2"
    torch.export.save(program, str(clean_pt2))

    def tamper_pt2(name: str, data: bytes) -> bytes:
        if name.endswith("data/weights/model_weights_config.json"):
            config = json.loads(data)
            config["config"]["weight"]["use_pickle"] = True
            return json.dumps(config).encode()
        if name.endswith("data/weights/weight_0"):
            return buf.getvalue()
        return data

    _rewrite_zip(clean_pt2, files["tampered.pt2"], tamper_pt2)
    clean_pt2.unlink()

    clean_ts = folder / "clean-ts.pt"
    torch.jit.save(torch.jit.script(conv), str(clean_ts))
    raw = pickle.dumps(evil, protocol=2)
    _rewrite_zip(clean_ts, files["tampered-ts.pt"], lambda n, d: raw if n.endswith("/constants.pkl") else d)
    clean_ts.unlink()
    return files
