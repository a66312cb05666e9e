"""fastsr.data.datasets against known pixel values written here, brute-force searches for where a
crop came from (instead of the dataset's own RNG draws) and imresize of whole images."""

import io
import itertools
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fastsr.data import (
    DistributedBatchSampler,
    HRDataset,
    ImageReadError,
    MixedDataset,
    ValidationSet,
    imresize,
    list_images,
    read_image,
)


def _noise(h, w, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, c) if c else (h, w), dtype=np.uint8)


def _to_float(arr):
    """uint8 (H, W, 3) → (3, H, W) float32 /255, as an 8-bit file reads."""
    return torch.from_numpy(arr.astype(np.float32) / np.float32(255)).permute(2, 0, 1)


def _quantize(x):
    return x.clamp(0, 1).mul(255).round().div(255)


@pytest.fixture
def folder(tmp_path):
    """Good images (RGB png, grey png, RGBA png, jpg, bmp) and bad files; their source arrays."""
    arrays = {
        "rgb": _noise(45, 53, seed=1),
        "grey": _noise(40, 41, c=0, seed=2),
        "rgba": _noise(44, 50, c=4, seed=3),
        "photo": _noise(48, 48, seed=4),
        "bitmap": _noise(37, 61, seed=5),
    }
    Image.fromarray(arrays["rgb"]).save(tmp_path / "rgb.png")
    Image.fromarray(arrays["grey"]).save(tmp_path / "grey.png")
    Image.fromarray(arrays["rgba"], mode="RGBA").save(tmp_path / "rgba.PNG")
    Image.fromarray(arrays["photo"]).save(tmp_path / "photo.jpg", quality=100, subsampling=0)
    Image.fromarray(arrays["bitmap"]).save(tmp_path / "bitmap.bmp")
    buf = io.BytesIO()
    Image.fromarray(_noise(40, 40, seed=6)).save(buf, format="PNG")
    (tmp_path / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image\n")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix\n")
    return tmp_path, arrays


BAD = ("truncated.png", "empty.png", "text.png")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def test_read_image_modes(folder):
    path, arrays = folder
    rgb = read_image(path / "rgb.png")
    assert rgb.dtype == torch.float32 and rgb.shape == (3, 45, 53)
    torch.testing.assert_close(rgb, _to_float(arrays["rgb"]), rtol=0, atol=0)
    grey = read_image(path / "grey.png")
    expected = torch.from_numpy(arrays["grey"].astype(np.float32) / np.float32(255))
    for c in range(3):  # three equal channels
        torch.testing.assert_close(grey[c], expected, rtol=0, atol=0)
    rgba = read_image(path / "rgba.PNG")  # alpha dropped, not composited
    torch.testing.assert_close(rgba, _to_float(arrays["rgba"][..., :3]), rtol=0, atol=0)
    torch.testing.assert_close(read_image(path / "bitmap.bmp"), _to_float(arrays["bitmap"]), rtol=0, atol=0)
    photo = read_image(path / "photo.jpg")  # lossy, quality 100 without chroma subsampling
    assert photo.shape == (3, 48, 48)
    assert (photo - _to_float(arrays["photo"])).abs().mean() < 3 / 255


def test_read_image_16_bit_grey(tmp_path):
    arr = np.array([[0, 65535, 257], [1000, 30000, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    img = read_image(tmp_path / "deep.png")
    expected = torch.from_numpy(arr.astype(np.float64) / 65535).float()
    for c in range(3):
        torch.testing.assert_close(img[c], expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("truncated.png", "truncated"),
        ("empty.png", "empty"),
        ("text.png", "not an image"),
        ("missing.png", "no such file"),
    ],
)
def test_read_image_errors(folder, name, reason):
    path, _ = folder
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path / name)
    assert info.value.path == path / name and name in str(info.value)


def test_list_images(folder):
    path, _ = folder
    names = [p.name for p in list_images(path)]
    assert names == sorted(["rgb.png", "grey.png", "rgba.PNG", "photo.jpg", "bitmap.bmp", *BAD])
    with pytest.raises(FileNotFoundError, match="folder"):
        list_images(path / "nope")


def test_dataset_skips_bad_files_with_one_warning_each(folder):
    path, _ = folder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = HRDataset(path, scale=4, crop=32)
    assert sorted(ds.names) == ["bitmap", "grey", "photo", "rgb", "rgba"]
    messages = [str(w.message) for w in caught]
    assert len(messages) == len(BAD)
    for bad in BAD:
        assert sum(bad in m for m in messages) == 1, messages
    # an image smaller than the crop: skipped with a warning naming it
    with pytest.warns(UserWarning, match=r"bitmap\.bmp.*smaller than 40"):
        ds = HRDataset([path / "bitmap.bmp", path / "rgb.png"], scale=4, crop=40)
    assert ds.names == ["rgb"]
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="readable image"):
        HRDataset([path / b for b in BAD], scale=4, crop=32)


def test_dataset_argument_errors(folder):
    path, _ = folder
    with pytest.raises(ValueError, match="crop must be a multiple of scale = 3"):
        HRDataset(path / "rgb.png", scale=3, crop=32)
    with pytest.raises(ValueError, match="scale must be a positive int"):
        HRDataset(path / "rgb.png", scale=0, crop=32)
    ds = HRDataset(path / "rgb.png", scale=4, crop=32)
    with pytest.raises(TypeError, match="key must be a tuple"):
        ds[0]
    with pytest.raises(IndexError, match=r"\[0, 1\)"):
        ds[(1, 0)]
    with pytest.raises(ValueError, match="item seed"):
        ds[(0, -1)]


# ---------------------------------------------------------------------------------------------
# Crops: shapes, paired alignment, augmentation
# ---------------------------------------------------------------------------------------------


def _find(image, crop):
    """All (top, left) where ``crop`` (C, h, w) sits in ``image`` (C, H, W) exactly."""
    h, w = crop.shape[1:]
    H, W = image.shape[1:]
    return [
        (t, l)
        for t in range(H - h + 1)
        for l in range(W - w + 1)
        if torch.equal(image[:, t : t + h, l : l + w], crop)
    ]


def _undo(x, hflip, vflip, rot90):
    """Inverse of BasicSR's augment (hflip, then vflip, then transpose)."""
    if rot90:
        x = x.transpose(-2, -1)
    if vflip:
        x = x.flip(-2)
    if hflip:
        x = x.flip(-1)
    return x


@pytest.mark.parametrize("scale, crop", [(2, 16), (3, 24), (4, 32)])
def test_crop_shapes_and_paired_alignment(folder, scale, crop):
    path, arrays = folder
    ds = HRDataset(path / "rgb.png", scale=scale, crop=crop, augment=False, quantize_lr=False)
    image = _to_float(arrays["rgb"])  # (3, 45, 53)
    H, W = 45 - 45 % scale, 53 - 53 % scale
    whole_lr = imresize(image[:, :H, :W][None], 1 / scale)[0]  # the whole mod-cropped image at once
    assert whole_lr.shape == (3, H // scale, W // scale)
    c = crop // scale
    for seed in range(12):
        item = ds[(0, seed)]
        assert item["hr"].shape == (3, crop, crop) and item["lr"].shape == (3, c, c)
        assert item["hr"].dtype == item["lr"].dtype == torch.float32
        assert item["hr"].is_contiguous() and item["lr"].is_contiguous()
        [(t, l)] = _find(image, item["hr"])
        assert t % scale == 0 and l % scale == 0 and t + crop <= H and l + crop <= W
        torch.testing.assert_close(
            item["lr"], whole_lr[:, t // scale : t // scale + c, l // scale : l // scale + c]
        )
        # the crop's own imresize agrees away from its border (kernel reach: 2 LR pixels)
        own = imresize(item["hr"][None], 1 / scale)[0]
        torch.testing.assert_close(item["lr"][:, 2:-2, 2:-2], own[:, 2:-2, 2:-2], rtol=0, atol=1e-5)


def test_lr_is_quantized_by_default(folder):
    path, arrays = folder
    ds = HRDataset(path / "rgb.png", scale=4, crop=32, augment=False)
    image = _to_float(arrays["rgb"])[:, :44, :52]
    whole_lr = _quantize(imresize(image[None], 0.25)[0])
    item = ds[(0, 7)]
    [(t, l)] = _find(image, item["hr"])
    torch.testing.assert_close(
        item["lr"], whole_lr[:, t // 4 : t // 4 + 8, l // 4 : l // 4 + 8], rtol=0, atol=1e-7
    )
    assert torch.equal((item["lr"] * 255).round() / 255, item["lr"])


def test_augment_same_on_hr_lr_prior(folder, tmp_path_factory):
    path, arrays = folder
    priors = tmp_path_factory.mktemp("priors")
    image = _to_float(arrays["rgb"])  # (3, 45, 53) at full size, before the mod crop
    prior = torch.cat([image, image[:1] * image[1:2]])  # (4, 45, 53): a function of the pixels
    np.save(priors / "rgb.npy", prior.numpy())
    ds = HRDataset(path / "rgb.png", scale=4, crop=32, prior_dir=priors, num_classes=4)
    whole_lr = _quantize(imresize(image[:, :44, :52][None], 0.25)[0])
    seen = set()
    for seed in range(64):
        item = ds[(0, seed)]
        assert item["prior"].shape == (4, 32, 32) and item["prior"].dtype == torch.float32
        torch.testing.assert_close(item["prior"][:3], item["hr"], rtol=0, atol=0)
        torch.testing.assert_close(item["prior"][3], item["hr"][0] * item["hr"][1], rtol=0, atol=0)
        found = [
            (f, pos)
            for f in itertools.product((False, True), repeat=3)
            for pos in _find(image, _undo(item["hr"], *f))
        ]
        assert len(found) == 1
        f, (t, l) = found[0]
        seen.add(f)
        torch.testing.assert_close(
            _undo(item["lr"], *f), whole_lr[:, t // 4 : t // 4 + 8, l // 4 : l // 4 + 8], rtol=0, atol=0
        )
    assert len(seen) == 8  # every combination of hflip, vflip, rot90 occurs


def test_prior_file_errors(folder, tmp_path_factory):
    path, _ = folder
    priors = tmp_path_factory.mktemp("priors")
    with pytest.raises(FileNotFoundError, match=r"rgb\.npy"):
        HRDataset(path / "rgb.png", scale=4, crop=32, prior_dir=priors)
    np.save(priors / "rgb.npy", np.zeros((8, 44, 52), np.float32))  # already mod-cropped: wrong
    with pytest.raises(ValueError, match=r"rgb\.npy must be \(8, 45, 53\).*\(8, 44, 52\)"):
        HRDataset(path / "rgb.png", scale=4, crop=32, prior_dir=priors)
    np.save(priors / "rgb.npy", np.zeros((7, 45, 53), np.float32))
    with pytest.raises(ValueError, match=r"rgb\.npy must be \(S=8, H, W\)"):
        HRDataset(path / "rgb.png", scale=4, crop=32, prior_dir=priors)
    np.save(priors / "rgb.npy", np.zeros((8, 45, 53), np.int64))
    with pytest.raises(ValueError, match=r"rgb\.npy must hold floating"):
        HRDataset(path / "rgb.png", scale=4, crop=32, prior_dir=priors)
    (priors / "rgb.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"rgb\.npy is not a readable"):
        HRDataset(path / "rgb.png", scale=4, crop=32, prior_dir=priors)
    with pytest.raises(FileNotFoundError, match="prior_dir"):
        HRDataset(path / "rgb.png", scale=4, crop=32, prior_dir=priors / "nope")


# ---------------------------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------------------------


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_sampler_deterministic_and_resumable():
    full = _take(DistributedBatchSampler(10, 4, seed=3), 12)
    assert full == _take(DistributedBatchSampler(10, 4, seed=3), 12)
    assert full != _take(DistributedBatchSampler(10, 4, seed=4), 12)
    for k in (1, 5, 11):
        assert _take(DistributedBatchSampler(10, 4, seed=3, start_iter=k), 12 - k) == full[k:]
    keys = [key for batch in full for key in batch]
    assert all(len(batch) == 4 for batch in full)
    assert {i for i, _ in keys} == set(range(10))  # indices cover [0, 10)
    assert len({s for _, s in keys}) == len(keys)  # distinct item seeds
    assert all(0 <= s < 2**63 for _, s in keys)


def test_sampler_rank_slices():
    world, bs = 3, 2
    samplers = [
        DistributedBatchSampler(7, bs, seed=1, rank=r, world_size=world, start_iter=4) for r in range(world)
    ]
    per_rank = [_take(s, 5) for s in samplers]
    for i in range(5):
        global_batch = samplers[0].global_batch(4 + i)
        assert len(global_batch) == world * bs
        assert [k for r in range(world) for k in per_rank[r][i]] == global_batch  # cover, in rank order
        assert len(set(global_batch)) == world * bs  # disjoint
    with pytest.raises(ValueError, match="rank must be an int in"):
        DistributedBatchSampler(7, 2, seed=1, rank=3, world_size=3)
    with pytest.raises(ValueError, match="seed must be an int ≥ 0"):
        DistributedBatchSampler(7, 2, seed=-1)


def test_dataloader_workers_match_direct_reads(folder):
    path, _ = folder
    with pytest.warns(UserWarning):
        ds = HRDataset(path, scale=4, crop=32)
    sampler = DistributedBatchSampler(len(ds), 3, seed=5)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2)
    batches = list(itertools.islice(loader, 4))
    resumed = list(
        itertools.islice(
            DataLoader(ds, batch_sampler=DistributedBatchSampler(len(ds), 3, seed=5, start_iter=2)), 2
        )
    )
    for i, batch in enumerate(batches):
        items = [ds[key] for key in sampler.batch(i)]
        assert batch["hr"].shape == (3, 3, 32, 32) and batch["lr"].shape == (3, 3, 8, 8)
        assert batch["name"] == [item["name"] for item in items]
        torch.testing.assert_close(batch["hr"], torch.stack([item["hr"] for item in items]), rtol=0, atol=0)
        torch.testing.assert_close(batch["lr"], torch.stack([item["lr"] for item in items]), rtol=0, atol=0)
    for got, want in zip(resumed, batches[2:]):
        assert got["name"] == want["name"] and torch.equal(got["hr"], want["hr"])


# ---------------------------------------------------------------------------------------------
# Mixed and validation
# ---------------------------------------------------------------------------------------------


def test_mixed_ratio(folder):
    path, _ = folder
    primary = HRDataset([path / "rgb.png", path / "bitmap.bmp"], scale=4, crop=32)
    secondary = HRDataset(path / "grey.png", scale=4, crop=32)
    mixed = MixedDataset(primary, secondary, ratio=10)
    assert len(mixed) == 3
    sampler = DistributedBatchSampler(len(mixed), 50, seed=0)
    keys = [key for batch in _take(sampler, 100) for key in batch]  # 5000 keys
    names = [mixed[key]["name"] for key in keys]
    share = sum(name != "grey" for name in names) / len(names)
    assert abs(share - 10 / 11) < 0.02  # binomial σ ≈ 0.004
    assert {"rgb", "bitmap"} <= set(names)  # both primary images drawn
    assert all(torch.equal(mixed[k]["hr"], mixed[k]["hr"]) for k in keys[:20])
    with pytest.raises(ValueError, match="share crop"):
        MixedDataset(primary, HRDataset(path / "grey.png", scale=4, crop=16))
    with pytest.raises(ValueError, match="ratio must be"):
        MixedDataset(primary, secondary, ratio=0)


def test_validation_set_mod_crop(folder, tmp_path_factory):
    path, arrays = folder
    priors = tmp_path_factory.mktemp("priors")
    image = _to_float(arrays["bitmap"])  # (3, 37, 61)
    np.save(priors / "bitmap.npy", np.repeat(image[:1].numpy(), 2, axis=0))  # (2, 37, 61)
    vs = ValidationSet([path / "bitmap.bmp"], scale=4, prior_dir=priors, num_classes=2)
    assert len(vs) == 1 and vs.names == ["bitmap"]
    item = vs[0]
    torch.testing.assert_close(item["hr"], image[:, :36, :60], rtol=0, atol=0)
    torch.testing.assert_close(
        item["lr"], _quantize(imresize(image[:, :36, :60][None], 0.25)[0]), rtol=0, atol=0
    )
    assert item["lr"].shape == (3, 9, 15)
    torch.testing.assert_close(item["prior"], image[:1, :36, :60].expand(2, -1, -1), rtol=0, atol=0)
    vs3 = ValidationSet(path / "rgb.png", scale=3, quantize_lr=False)
    assert vs3[0]["hr"].shape == (3, 45, 51) and vs3[0]["lr"].shape == (3, 15, 17)
    assert "prior" not in vs3[0]
