"""Files: writing them so a crash cannot half-write them, and reading other people's without
running their code.

Writing: :func:`atomic_write` (temporary file, fsync, rename). :func:`save_state` adds a SHA-256
digest of the whole state (every tensor's bytes and every plain value) that :func:`load_state`
verifies, so a file corrupted on disk is refused instead of loading changed weights.

Reading: :func:`load_state` is the one place fastsr reads ``torch.save`` files. It never
unpickles anything but tensors and plain data (``torch.load(weights_only=True)``, torch's
restricted unpickler), checks the CRC-32 of every zip member (torch's reader checks none), and
verifies the digest when the file has one. Its errors are a ``ValueError`` naming the file and
what it is, never torch's advice to pass ``weights_only=False``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch

DIGEST_KEY = "digest"


class NoDigestWarning(UserWarning):
    """A file written before fastsr stored digests: it loads, but corruption cannot be detected."""


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, flush it to disk, then rename it
    over ``path``: a reader (or a crash at any moment) sees the old file or the complete new
    one, never a partial file. The temporary file is removed if ``write`` raises; temporary
    files of earlier writes of ``path`` that were killed (``.<name>.*.tmp``) are removed first.
    One writer per path (fastsr's trainers write from rank 0 only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0o600 → what a plain open() would give
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _remove_stale_temporaries(path: Path) -> None:
    pattern = re.compile(re.escape(f".{path.name}.") + r"[A-Za-z0-9_]{6,}\.tmp")
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def state_digest(state: Any) -> str:
    """SHA-256 (hex) over a nested state: dicts (keys in a canonical order), lists, tuples,
    tensors (dtype, shape and the bytes of their values, whatever their strides) and plain
    values. A top-level :data:`DIGEST_KEY` entry is left out."""
    h = hashlib.sha256()
    _digest_into(h, state, top=True)
    return h.hexdigest()


def _digest_into(h, obj: Any, top: bool = False) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    elif isinstance(obj, Mapping):
        items = [(k, v) for k, v in obj.items() if not (top and k == DIGEST_KEY)]
        items.sort(key=lambda kv: (type(kv[0]).__name__, repr(kv[0])))
        h.update(f"D{len(items)}:".encode())
        for k, v in items:
            _digest_into(h, k)
            _digest_into(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for v in obj:
            _digest_into(h, v)
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.dtype, torch.device)):
        text = repr(obj).encode()
        h.update(f"P{type(obj).__name__}{len(text)}:".encode() + text)
    else:
        raise TypeError(
            f"state_digest: cannot digest a {type(obj).__name__}; states hold tensors and plain data"
        )


def save_state(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """``torch.save`` a dict atomically with its :func:`state_digest` under :data:`DIGEST_KEY`."""
    state = {k: v for k, v in state.items() if k != DIGEST_KEY}
    state[DIGEST_KEY] = state_digest(state)
    return atomic_write(path, lambda f: torch.save(state, f))


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def file_kind(path: str | os.PathLike) -> str:
    """What a file looks like, from its first bytes and zip member names alone (nothing is
    unpickled): "torchscript", "torch.export", "torch" (a torch.save zip), "zip", "pickle"
    (a raw pickle or a legacy torch.save file), "safetensors" or "other"."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if (
        len(head) == 9
        and head[8:9] == b"{"
        and 2 <= int.from_bytes(head[:8], "little") <= _MAX_SAFETENSORS_HEADER
    ):
        return "safetensors"
    if head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "other"
        if any(n.endswith("/archive_format") or n == "archive_format" for n in names):
            return "torch.export"
        if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("/data.pkl") for n in names):
            return "torch"
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return "other"


def _check_zip_crcs(path: Path, what: str) -> None:
    """Read every member of a zip file, which checks its CRC-32 (members written without one,
    CRC 0, are skipped)."""
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.CRC == 0 or info.is_dir():
                    continue
                with zf.open(info) as member:
                    while member.read(1 << 22):
                        pass
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise ValueError(f"{path} is a corrupted {what}: {e}") from None


def load_state(path: str | os.PathLike, *, what: str = "fastsr file", numpy_arrays: bool = False) -> Any:
    """Read a ``torch.save`` file (or a ``.safetensors`` file: :func:`read_safetensors`) on the
    CPU without running code from it.

    Args:
        what: what the file should be, for errors ("model file", "training checkpoint", …).
        numpy_arrays: also allow numpy arrays (only numpy's array and dtype constructors are
            allow-listed, through ``torch.serialization.safe_globals``): training checkpoints
            written before fastsr stored RNG states as tensors hold some.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a torch file, a program (TorchScript / torch.export: loading runs its
            code), Python objects beyond tensors and plain data, a bad CRC, or a digest that
            does not match its content — each naming the file.
    Warns:
        NoDigestWarning: a fastsr file (a "format" tag "fastsr.…", or RRDBNet.save's "config" and
            "params") written before fastsr stored digests. Other programs' files (BasicSR,
            torchvision) carry none, and load silently.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} {path} does not exist" if not path.exists() else f"{what} {path} is not a file"
        )
    kind = file_kind(path)
    if kind in ("torchscript", "torch.export"):
        raise ValueError(
            f"{path} is a {'TorchScript' if kind == 'torchscript' else 'torch.export'} program, not a "
            f"{what}: programs run code when loaded, so fastsr loads them only as prior networks "
            "that you trust by name (--trust-prior-code / trust_code=True)"
        )
    if kind == "safetensors":
        return read_safetensors(path, what=what)
    if kind == "other":
        raise ValueError(
            f"{path} is not a readable {what}: it is neither a torch.save zip archive nor a pickle"
        )
    if kind in ("zip", "torch"):
        _check_zip_crcs(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes about the archive; fastsr reports its own
            if numpy_arrays:
                with torch.serialization.safe_globals(_numpy_globals()):
                    state = torch.load(path, map_location="cpu", weights_only=True)
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower() or "Unsupported operand" in str(e):  # damaged, not refused
            raise ValueError(f"{path} is not a readable {what} (a damaged or foreign pickle)") from None
        name = _refused_global(str(e))
        found = f" (it names {name})" if name else ""
        raise ValueError(
            f"{path}: refused to load this {what}: it holds Python objects other than tensors and "
            f"plain data{found}, which could run code when unpickled"
        ) from None
    except Exception as e:  # noqa: BLE001 — torch raises RuntimeError, EOFError, zip errors, …
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"{path} is not a readable {what} ({type(e).__name__}: {first[:200]})") from None
    if isinstance(state, Mapping):
        verify_digest(state, path, what)
    return state


def verify_digest(state: Mapping[str, Any], path: str | os.PathLike, what: str) -> None:
    """Compare a loaded state's stored digest with its content: a mismatch is a ValueError; a
    fastsr file without one is a :class:`NoDigestWarning`."""
    stored = state.get(DIGEST_KEY)
    if stored is None:
        fmt = state.get("format")
        if not (isinstance(fmt, str) and fmt.startswith("fastsr.")) and not (
            "config" in state and "params" in state
        ):
            return  # another program's file: it never had a digest
        warnings.warn(
            f"{path} has no digest (written by an older fastsr or another program): it is "
            "loaded, but corruption on disk cannot be detected",
            NoDigestWarning,
            stacklevel=3,
        )
        return
    try:
        actual = state_digest(state)
    except TypeError as e:
        raise ValueError(f"{path}: {e}") from None
    if stored != actual:
        raise ValueError(
            f"{path} is a corrupted {what}: its content does not match the SHA-256 digest stored "
            "with it (the file changed after it was written); refusing to load it"
        )


_GLOBAL_IN_MESSAGE = re.compile(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)")


def _refused_global(message: str) -> str | None:
    match = _GLOBAL_IN_MESSAGE.search(message)
    return match.group(1) if match else None


def _numpy_globals() -> list:
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    allowed = [_reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [dtypes.UInt32DType, dtypes.Int64DType, dtypes.Float64DType]
    return allowed


# ---------------------------------------------------------------------------------------------
# safetensors: a JSON header and raw tensor bytes (nothing in the format can run code)
# ---------------------------------------------------------------------------------------------

_MAX_SAFETENSORS_HEADER = 100 << 20  # the format's own limit (100 MB)
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The "__metadata__" of a ``.safetensors`` file (str → str; {} when it has none)."""
    import json

    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 2 <= n <= _MAX_SAFETENSORS_HEADER:
            return {}
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def write_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write tensors (any dtype of the format) and string metadata as a ``.safetensors`` file,
    atomically."""
    import json

    names = {v: k for k, v in _SAFETENSORS_DTYPES.items()}
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    blobs, offset = [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {
            "dtype": names[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
    return atomic_write(
        path, lambda f: (f.write(len(text).to_bytes(8, "little")), f.write(text), [f.write(b) for b in blobs])
    )


def read_safetensors(path: str | os.PathLike, *, what: str = "safetensors file") -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (8-byte little-endian header size, a JSON header
    ``{name: {"dtype", "shape", "data_offsets"}}``, then the bytes), read and checked without the
    ``safetensors`` package: every tensor's byte range must lie inside the data and match its
    shape and dtype. The header's "__metadata__" is ignored. A ValueError names the file."""
    import json

    import numpy as np

    path = Path(path)
    data = path.read_bytes()
    try:
        n = int.from_bytes(data[:8], "little")
        if not 2 <= n <= min(_MAX_SAFETENSORS_HEADER, len(data) - 8):
            raise ValueError(f"a header of {n} bytes in a {len(data)}-byte file")
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        body = memoryview(data)[8 + n :]
        out = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            dtype = _SAFETENSORS_DTYPES.get(entry.get("dtype")) if isinstance(entry, dict) else None
            shape, offsets = (
                (entry.get("shape"), entry.get("data_offsets")) if isinstance(entry, dict) else (None, None)
            )
            if (
                dtype is None
                or not isinstance(shape, list)
                or not all(isinstance(d, int) and d >= 0 for d in shape)
            ):
                raise ValueError(f"tensor {name!r} has an unsupported dtype or shape: {entry!r}"[:300])
            if (
                not isinstance(offsets, list)
                or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= len(body)
            ):
                raise ValueError(f"tensor {name!r} has data_offsets {offsets!r} outside the data")
            numel = 1
            for d in shape:
                numel *= d
            itemsize = torch.empty((), dtype=dtype).element_size()
            if offsets[1] - offsets[0] != numel * itemsize:
                raise ValueError(
                    f"tensor {name!r}: {offsets[1] - offsets[0]} bytes for shape {shape} of {entry['dtype']}"
                )
            if numel == 0:
                out[name] = torch.empty(shape, dtype=dtype)
                continue
            raw = np.frombuffer(body[offsets[0] : offsets[1]], dtype=np.uint8).copy()
            out[name] = torch.from_numpy(raw).view(dtype).reshape(shape)
    except (ValueError, UnicodeDecodeError, AttributeError, TypeError) as e:
        raise ValueError(f"{path} is a corrupted or unreadable {what} (safetensors: {e})") from None
    return out
