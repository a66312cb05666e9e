"""Checkpoints other programs wrote, each built from its own published key names (BasicSR's
rrdbnet_arch.py, xinntao/ESRGAN's RRDBNet_arch.py, and the old arch's names as ESRGAN's
transer_RRDB_models.py reads them) around the independent reference of tests/rrdb_reference.py,
read as fastsr model files (architecture detected from the keys) and run against the reference."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from rrdb_reference import RefRRDBNet, randomized

from fastsr.inference import super_resolve
from fastsr.models import RRDBNet, SPSAGenerator, load_model, read_model_file

NF, GC, NB = 16, 8, 2


def reference(scale=4, num_up=2, seed=0):
    return randomized(RefRRDBNet(3, 3, scale, NF, NB, GC, num_up=num_up), seed).float().eval()


def esrgan_names(sd):
    """xinntao/ESRGAN RRDBNet_arch.py: RRDB_trunk.N.RDBK.convJ, trunk_conv, upconv1/2, HRconv."""
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        if p[0] == "body":
            k = f"RRDB_trunk.{p[1]}.RDB{p[2][3:]}.{p[3]}.{p[4]}"
        else:
            k = (
                {
                    "conv_body": "trunk_conv",
                    "conv_up1": "upconv1",
                    "conv_up2": "upconv2",
                    "conv_hr": "HRconv",
                }.get(p[0], p[0])
                + "."
                + p[1]
            )
        out[k] = v
    return out


def old_arch_names(sd, num_block=NB):
    """ESRGAN's old arch (RRDB_ESRGAN_x4_old_arch.pth), as transer_RRDB_models.py reads it:
    model.0 conv_first · model.1.sub.N.RDBK.convJ.0 · model.1.sub.<nb> trunk · model.3, model.6
    up-convs · model.8 HR conv · model.10 last conv."""
    top = {
        "conv_first": "model.0",
        "conv_body": f"model.1.sub.{num_block}",
        "conv_up1": "model.3",
        "conv_up2": "model.6",
        "conv_hr": "model.8",
        "conv_last": "model.10",
    }
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        if p[0] == "body":
            k = f"model.1.sub.{p[1]}.RDB{p[2][3:]}.{p[3]}.0.{p[4]}"
        else:
            k = f"{top[p[0]]}.{p[1]}"
        out[k] = v
    return out


def write_safetensors(path, tensors):
    """The published format, written by hand: u64 header size, JSON header, raw bytes."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    names = {torch.float32: "F32", torch.float16: "F16"}
    for name, t in tensors.items():
        raw = t.contiguous().numpy().tobytes()
        header[name] = {
            "dtype": names[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


LAYOUTS = {
    "basicsr params_ema": lambda sd: {
        "params_ema": sd,
        "params": {k: torch.zeros_like(v) for k, v in sd.items()},
    },
    "basicsr params": lambda sd: {"params": sd},
    "ddp module.": lambda sd: {"params": {"module." + k: v for k, v in sd.items()}},
    "bare": lambda sd: sd,
    "esrgan": esrgan_names,
    "esrgan old arch": old_arch_names,
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_x4_layouts_load_and_reproduce_the_reference(tmp_path, layout):
    ref = reference(seed=1)
    path = tmp_path / "model.pth"
    torch.save(LAYOUTS[layout](ref.state_dict()), path)
    file = read_model_file(path)
    assert file.kind == "rrdbnet" and file.prior is None
    assert file.config == {
        "num_in_ch": 3,
        "num_out_ch": 3,
        "scale": 4,
        "num_feat": NF,
        "num_block": NB,
        "num_grow_ch": GC,
        "connections": None,
    }
    net = load_model(path)
    x = torch.rand(2, 3, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-5)
    assert isinstance(RRDBNet.from_checkpoint(path), RRDBNet)  # the class reads it too


@pytest.mark.parametrize("scale", [2, 1])
def test_real_esrgan_pixel_unshuffle_models_pad_odd_inputs(tmp_path, scale):
    """RealESRGAN_x2plus-style nets (conv_first reads 3·4 or 3·16 channels): detected as ×2 / ×1,
    and an odd-sized input is padded to the unshuffle multiple and cropped back."""
    ref = reference(scale, seed=2)
    path = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": ref.state_dict()}, path)
    net = load_model(path)
    assert net.scale == scale and net.input_multiple == 4 // scale
    x = torch.rand(1, 3, 9, 11)
    r = 4 // scale
    padded = torch.nn.functional.pad(x, (0, -11 % r, 0, -9 % r), mode="replicate")
    with torch.no_grad():
        expected = ref(padded)[..., : 9 * scale, : 11 * scale].clamp(0, 1)
    torch.testing.assert_close(super_resolve(net, x, scale), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_up", [1, 3])
def test_esrgan_style_x2_and_x8_read_as_plain_spsa_generators(tmp_path, num_up):
    ref = reference(num_up=num_up, seed=3)
    torch.save(ref.state_dict(), tmp_path / "m.pth")
    net = load_model(tmp_path / "m.pth")
    assert isinstance(net, SPSAGenerator) and not net.needs_prior and net.scale == 2**num_up
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-5)


def test_safetensors_files_load(tmp_path):
    ref = reference(seed=4)
    write_safetensors(tmp_path / "model.safetensors", ref.state_dict())
    net = load_model(tmp_path / "model.safetensors")
    x = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-5)
    st = pytest.importorskip("safetensors.torch")  # the reference writer, when installed
    st.save_file(ref.half().state_dict(), str(tmp_path / "half.safetensors"))
    assert load_model(tmp_path / "half.safetensors").conv_first.weight.dtype == torch.float16


def test_damaged_safetensors_are_refused(tmp_path):
    ref = reference()
    path = tmp_path / "m.safetensors"
    write_safetensors(path, ref.state_dict())
    data = bytearray(path.read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    header["conv_first.weight"]["data_offsets"][1] += 10**9  # past the end of the data
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(data[8 + n :]))
    with pytest.raises(ValueError, match=r"m\.safetensors is a corrupted or unreadable .*outside the data"):
        load_model(path)


def test_what_is_not_supported_is_named(tmp_path):
    ref = reference()
    sd = ref.state_dict()
    sparse = dict(sd, **{"body.0.rdb1.conv3.weight": sd["body.0.rdb1.conv3.weight"][:, : NF + GC]})
    torch.save(sparse, tmp_path / "rrsb.pth")
    with pytest.raises(
        ValueError,
        match=r"rrsb\.pth: body\.0\.rdb1\.conv3 is 24 input channels, not a dense "
        r"block's 32.*sparse RRSB nets load only from fastsr's model files",
    ):
        load_model(tmp_path / "rrsb.pth")
    no_up = {k: v for k, v in sd.items() if not k.startswith("conv_up")}
    torch.save(no_up, tmp_path / "noup.pth")
    with pytest.raises(ValueError, match="with 0 up-convolutions"):
        load_model(tmp_path / "noup.pth")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not of a network fastsr knows"):
        load_model(tmp_path / "other.pth")


def test_upscale_runs_a_real_esrgan_checkpoint(tmp_path):
    """From "I have RealESRGAN_x4plus.pth" to an upscaled folder: the command line takes it."""
    from fastsr import upscale

    ref = reference(seed=5)
    torch.save({"params_ema": ref.state_dict()}, tmp_path / "RealESRGAN_x4plus.pth")
    pixels = np.random.default_rng(0).integers(0, 255, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    assert (
        upscale.main(
            [
                str(tmp_path / "RealESRGAN_x4plus.pth"),
                str(tmp_path / "photo.png"),
                "-o",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    out = np.asarray(Image.open(tmp_path / "out" / "photo_x4.png"))
    with torch.no_grad():
        expected = ref(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)[0].clamp(0, 1)
    expected = (expected * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
