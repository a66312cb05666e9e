"""Corrupted files are refused: model files and training checkpoints carry a SHA-256 digest of
their whole state, verified on every load; torch zip members' CRC-32s are checked too. A file
without a digest (an older fastsr's) loads with one notice."""

from __future__ import annotations

import random
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from fastsr import RRDBNet
from fastsr._io import NoDigestWarning, load_state, save_state, state_digest
from fastsr.data import ColourClusterPrior
from fastsr.inference import load_model, save_model
from fastsr.models import SPSAGenerator, StageGAN
from fastsr.train.checkpoint import load_training_state, rng_state, save_training_state

TINY = dict(num_feat=16, num_block=1, num_grow_ch=8)


def member_span(path: Path, suffix: str) -> tuple[int, int]:
    """(start, end) byte offsets of the data of the zip member whose name ends with ``suffix``."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(suffix))
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    return start, start + info.compress_size


def largest_tensor_member(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        data = [i for i in zf.infolist() if "/data/" in i.filename and not i.filename.endswith(".pkl")]
        return max(data, key=lambda i: i.file_size).filename


def spsa_model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    g = SPSAGenerator(scale=2, **TINY, use_spsa=True).eval()
    path = tmp_path / "generator.pt"
    save_model(path, g, ColourClusterPrior(torch.rand(8, 3), 0.1))
    return path


def training_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net = torch.nn.Linear(64, 64)
    opt = torch.optim.Adam(net.parameters())
    net(torch.rand(2, 64)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 10)
    path = tmp_path / "last.pt"
    save_training_state(
        path,
        config={"a": 1},
        iteration=3,
        models={"g": net},
        optimizers={"g": opt},
        schedulers={"g": sched},
        extra={"note": "x"},
    )
    return path


def saved_files(tmp_path: Path) -> dict[str, tuple[Path, callable]]:
    """Every kind of file fastsr writes, with the function that reads it back."""
    torch.manual_seed(0)
    rrdb = RRDBNet(3, 3, scale=2, **TINY)
    rrdb.save(tmp_path / "rrdb.pth")
    SPSAGenerator(scale=2, **TINY).save(tmp_path / "spsa.pth")
    StageGAN(scale=4, image_size=32, ngf=4).save(tmp_path / "stagegan.pth")
    return {
        "model file": (spsa_model(tmp_path), load_model),
        "training checkpoint": (training_checkpoint(tmp_path), load_training_state),
        "RRDBNet.save": (tmp_path / "rrdb.pth", RRDBNet.from_checkpoint),
        "SPSAGenerator.save": (tmp_path / "spsa.pth", SPSAGenerator.from_checkpoint),
        "StageGAN.save": (tmp_path / "stagegan.pth", StageGAN.from_checkpoint),
    }


@pytest.mark.parametrize(
    "kind", ["model file", "training checkpoint", "RRDBNet.save", "SPSAGenerator.save", "StageGAN.save"]
)
def test_zeroed_bytes_inside_the_weights_are_refused(tmp_path, kind):
    path, read = saved_files(tmp_path)[kind]
    read(path)  # intact: loads
    start, end = member_span(path, largest_tensor_member(path))
    data = bytearray(path.read_bytes())
    offset = (start + end) // 2 - 32
    assert any(data[offset : offset + 64]), "the bytes to zero must not already be zero"
    data[offset : offset + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{path.name} is a corrupted"):
        read(path)


def test_the_digest_catches_what_crcs_cannot(tmp_path):
    """A file rewritten with valid CRCs but changed weights (or a changed config value) is refused
    by the digest alone."""
    path = spsa_model(tmp_path)
    state = torch.load(path, weights_only=True)
    state["params"]["conv_first.weight"][0, 0, 0, 0] += 1e-3
    torch.save(state, path)  # a consistent zip, the old digest
    with pytest.raises(ValueError, match="does not match the SHA-256 digest"):
        load_model(path)
    state = torch.load(spsa_model(tmp_path), weights_only=True)
    state["config"]["num_block"] = 2
    torch.save(state, path)
    with pytest.raises(ValueError, match="does not match the SHA-256 digest"):
        load_model(path)


@pytest.mark.parametrize("kind", ["model file", "training checkpoint"])
def test_no_bit_flip_loads_changed_content(tmp_path, kind):
    """Flip one bit at 300 seeded positions across the whole file: every load either refuses the
    file or returns exactly the original state (a flip in zip bookkeeping that torch never reads)."""
    path, _ = saved_files(tmp_path)[kind]
    original = load_state(path)
    digest = state_digest(original)
    clean = path.read_bytes()
    rng = random.Random(0)
    refused = 0
    tensor_start, tensor_end = member_span(path, largest_tensor_member(path))
    positions = [rng.randrange(len(clean)) for _ in range(250)]
    positions += [rng.randrange(tensor_start, tensor_end) for _ in range(50)]
    for pos in positions:
        data = bytearray(clean)
        data[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", NoDigestWarning)  # the digest itself must survive
                state = load_state(path)
        except (ValueError, NoDigestWarning):
            refused += 1
            continue
        assert state_digest(state) == digest and state["digest"] == digest, (
            f"flip at byte {pos} loaded changed content"
        )
        assert not tensor_start <= pos < tensor_end, f"a flip inside the weights (byte {pos}) was not refused"
    assert refused >= 50  # every flip in the weights, and most others


def test_old_files_without_a_digest_load_with_one_notice(tmp_path):
    path = spsa_model(tmp_path)
    state = torch.load(path, weights_only=True)
    del state["digest"]
    torch.save(state, path)  # as fastsr 0.1 wrote it
    with pytest.warns(NoDigestWarning, match="has no digest") as record:
        load_model(path)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    # other programs' files never had one: no notice
    torch.save({"conv.weight": torch.rand(2)}, tmp_path / "plain.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_state(tmp_path / "plain.pth")


def test_old_training_checkpoints_with_numpy_rng_states_still_load(tmp_path):
    """fastsr 0.1 pickled numpy's RNG tuple: read through an allow-list of numpy's array
    constructors only, and the state restores."""
    import numpy as np

    path = training_checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    del state["digest"]
    old_rng = dict(rng_state(), numpy=np.random.get_state())
    old_rng["python"] = __import__("random").getstate()
    state["rng"] = [old_rng]
    torch.save(state, path)
    with pytest.warns(NoDigestWarning):
        loaded = load_training_state(path)
    assert loaded["rng"][0]["numpy"][0] == "MT19937"
    from fastsr.train.checkpoint import set_rng_state

    set_rng_state(loaded["rng"][0])
    np.random.set_state(old_rng["numpy"])
    expected = np.random.rand()
    set_rng_state(loaded["rng"][0])
    assert np.random.rand() == expected


def test_digest_covers_every_tensor_byte_and_plain_value():
    base = {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "cfg": {"a": 1, "b": [1.5, None]},
        3: "x",
    }
    d = state_digest(base)
    assert d == state_digest({3: "x", "cfg": {"b": [1.5, None], "a": 1}, "w": base["w"].t().contiguous().t()})
    for changed in (
        {**base, "w": base["w"].clone().index_put_((torch.tensor(1), torch.tensor(2)), torch.tensor(5.5))},
        {**base, "w": base["w"].double()},
        {**base, "w": base["w"].reshape(3, 2)},
        {**base, "cfg": {"a": 2, "b": [1.5, None]}},
        {**base, "cfg": {"a": 1, "b": (1.5, None)}},
        {**base, 3: "y"},
        {**base, "extra": None},
    ):
        assert state_digest(changed) != d
    assert state_digest({**base, "digest": "anything"}) == d  # the digest leaves itself out


def test_save_state_round_trip(tmp_path):
    save_state(tmp_path / "s.pt", {"w": torch.rand(3), "n": 1})
    state = load_state(tmp_path / "s.pt")
    assert state["digest"] == state_digest(state)
