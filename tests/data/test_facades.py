"""fastsr.data.facades on small synthetic CMP-style and pix2pix-style files written here: label
maps known pixel by pixel, photos whose red channel encodes the label (so photo/map alignment is
checkable after any crop and flip), crop positions found by brute-force search (not from the
dataset's own RNG draws), and MATLAB jet colours written out by hand."""

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fastsr.data import (
    CMP_CLASSES,
    CMP_PALETTE,
    ColourClusterPrior,
    DistributedBatchSampler,
    SemanticPair,
    StageGANDataset,
    StageGANValidationSet,
    imresize,
    jet_palette,
    load_samples,
    read_image,
    sample_image_paths,
)

K = len(CMP_CLASSES)
STEP = 20  # photo red channel = STEP · (PNG index): 20 … 240, far apart enough to survive JPEG


def _labels(h, w, seed, block=8):
    """(H, W) PNG indices 1 … 12 in random block × block squares (no symmetry to hide a flip)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(1, K + 1, size=(-(-h // block), -(-w // block)))
    return np.kron(coarse, np.ones((block, block), np.int64))[:h, :w].astype(np.uint8)


def _photo(indices, seed):
    """uint8 (H, W, 3): red encodes the label, green and blue are texture."""
    rng = np.random.default_rng(seed)
    h, w = indices.shape
    photo = np.empty((h, w, 3), np.uint8)
    photo[..., 0] = indices * STEP
    photo[..., 1:] = rng.integers(0, 256, size=(h, w, 2))
    return photo


def _save_jpg(path, arr):
    Image.fromarray(arr).save(path, quality=100, subsampling=0)


def _save_label_png(path, indices, palette):
    im = Image.fromarray(indices, mode="P")
    flat = np.zeros((256, 3), np.uint8)
    flat[1 : K + 1] = palette
    im.putpalette(flat.ravel().tolist())
    im.save(path)


def _decode(hr):
    """PNG indices encoded in the red channel of a (3, H, W) [0, 1] photo crop."""
    return torch.round(hr[0] * 255 / STEP).long()


OWN_PALETTE = np.random.default_rng(99).integers(0, 256, size=(K, 3)).astype(np.uint8)


@pytest.fixture
def cmp_folder(tmp_path):
    """base/ and extended/ as in the CMP download, plus broken files; {stem: indices}."""
    truth = {}
    for sub, stem, (h, w), seed in (
        ("base", "cmp_b0001", (72, 88), 1),
        ("base", "cmp_b0002", (64, 64), 2),
        ("extended", "cmp_x0001", (80, 70), 3),
    ):
        (tmp_path / sub).mkdir(exist_ok=True)
        idx = _labels(h, w, seed)
        _save_jpg(tmp_path / sub / f"{stem}.jpg", _photo(idx, seed))
        _save_label_png(
            tmp_path / sub / f"{stem}.png", idx, OWN_PALETTE if stem == "cmp_x0001" else CMP_PALETTE
        )
        truth[stem] = idx
    base = tmp_path / "base"
    good = _labels(64, 64, 9)
    # a truncated photo
    buf = io.BytesIO()
    Image.fromarray(_photo(good, 9)).save(buf, format="JPEG")
    (base / "cmp_b0003.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    _save_label_png(base / "cmp_b0003.png", good, CMP_PALETTE)
    # a photo with no label map
    _save_jpg(base / "cmp_b0004.jpg", _photo(good, 9))
    # a corrupt label map
    _save_jpg(base / "cmp_b0005.jpg", _photo(good, 9))
    (base / "cmp_b0005.png").write_text("not a png\n")
    # an index outside 1 … 12
    zero = good.copy()
    zero[0, 0] = 0
    _save_jpg(base / "cmp_b0006.jpg", _photo(good, 9))
    _save_label_png(base / "cmp_b0006.png", zero, CMP_PALETTE)
    # photo and map of different sizes
    _save_jpg(base / "cmp_b0007.jpg", _photo(good, 9))
    _save_label_png(base / "cmp_b0007.png", good[:60], CMP_PALETTE)
    (base / "cmp_b0001.xml").write_text("<annotation/>\n")  # the download's xml files are ignored
    return tmp_path, truth


CMP_BAD = ("cmp_b0003", "cmp_b0004", "cmp_b0005", "cmp_b0006", "cmp_b0007")


def _load(ctor, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ctor(*args, **kwargs)
    return ds, [str(w.message) for w in caught]


def _find(img, crop):
    """Every (top, left, hflip) where crop (C, S, S) sits in img (C, H, W), by brute force."""
    s = crop.shape[-1]
    hits = []
    for hflip in (False, True):
        c = crop.flip(-1) if hflip else crop
        for top in range(img.shape[1] - s + 1):
            for left in range(img.shape[2] - s + 1):
                if torch.equal(img[:, top : top + s, left : left + s], c):
                    hits.append((top, left, hflip))
    return hits


# ---------------------------------------------------------------------------------------------
# Palettes
# ---------------------------------------------------------------------------------------------


def test_jet_palette_is_matlab_jet():
    # MATLAB jet(8) and jet(12) × 255, written out
    jet8 = [
        [0, 0, 255],
        [0, 128, 255],
        [0, 255, 255],
        [128, 255, 128],
        [255, 255, 0],
        [255, 128, 0],
        [255, 0, 0],
        [128, 0, 0],
    ]
    assert jet_palette(8).tolist() == jet8
    assert jet_palette(12).tolist() == [list(c) for c in CMP_PALETTE]
    assert jet_palette(12)[0].tolist() == [0, 0, 170] and jet_palette(12)[7].tolist() == [255, 255, 0]
    assert jet_palette(1).shape == (1, 3)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        jet_palette(0)


# ---------------------------------------------------------------------------------------------
# CMP Facades
# ---------------------------------------------------------------------------------------------


def test_facades_reads_base_and_extended_and_skips_bad_files(cmp_folder):
    folder, truth = cmp_folder
    ds, msgs = _load(StageGANDataset.from_facades, folder, scale=4, size=32)
    assert ds.names == ["cmp_b0001", "cmp_b0002", "cmp_x0001"]
    for stem in CMP_BAD:
        assert sum(stem in m for m in msgs) == 1, (stem, msgs)
    assert len(msgs) == len(CMP_BAD)
    assert any("no label map" in m for m in msgs) and any("1 … 12" in m for m in msgs)
    # either subfolder alone works too
    ext, _ = _load(StageGANDataset.from_facades, folder / "extended", scale=4, size=32)
    assert ext.names == ["cmp_x0001"]


@pytest.mark.parametrize("mode", ["colour", "onehot"])
def test_facades_items_shapes_and_alignment(cmp_folder, mode):
    folder, truth = cmp_folder
    ds, _ = _load(StageGANDataset.from_facades, folder, scale=4, size=32, map_mode=mode)
    assert ds.map_channels == (3 if mode == "colour" else K)
    photos = {stem: read_image(next(folder.rglob(f"{stem}.jpg"))) for stem in truth}
    flips = set()
    for seed in range(12):
        index = seed % len(ds)
        item = ds[(index, seed)]
        stem = item["name"]
        assert item["hr"].shape == (3, 32, 32) and item["mr"].shape == (3, 32, 32)
        assert item["lr"].shape == (3, 8, 8) and item["map"].shape == (ds.map_channels, 32, 32)
        assert all(item[k].dtype == torch.float32 for k in ("hr", "mr", "lr", "map"))
        assert all(0 <= item[k].min() and item[k].max() <= 1 for k in ("hr", "mr", "lr", "map"))
        # where the crop came from, by search in the photo as read from disk
        hits = _find(photos[stem], item["hr"])
        assert len(hits) == 1
        top, left, hflip = hits[0]
        flips.add(hflip)
        window = truth[stem][top : top + 32, left : left + 32]
        if hflip:
            window = window[:, ::-1]
        window = torch.from_numpy(window.copy()).long()
        palette = OWN_PALETTE if stem == "cmp_x0001" else np.array(CMP_PALETTE)
        if mode == "onehot":
            torch.testing.assert_close(item["map"].sum(0), torch.ones(32, 32), rtol=0, atol=0)
            assert torch.equal(item["map"].argmax(0) + 1, window)
        else:  # the PNG's own palette
            expected = torch.from_numpy(palette)[window - 1].permute(2, 0, 1).float() / 255
            torch.testing.assert_close(item["map"], expected, rtol=0, atol=0)
        # the photo's red channel encodes the label: photo and map agree pixel by pixel
        assert torch.equal(_decode(item["hr"]), window)
    assert flips == {False, True}


def test_same_key_same_item_and_no_flip_without_augment(cmp_folder):
    folder, truth = cmp_folder
    ds, _ = _load(StageGANDataset.from_facades, folder, scale=4, size=32)
    for key in [(0, 3), (2, 2**62)]:
        a, b = ds[key], ds[key]
        assert all(torch.equal(a[k], b[k]) for k in ("hr", "mr", "lr", "map"))
    assert not torch.equal(ds[(0, 1)]["hr"], ds[(0, 2)]["hr"])
    plain, _ = _load(StageGANDataset.from_facades, folder, scale=4, size=32, augment=False)
    photo = read_image(folder / "base" / "cmp_b0001.jpg")
    for seed in range(8):
        ((top, left, hflip),) = _find(photo, plain[(0, seed)]["hr"])
        assert not hflip


def test_lr_and_mr_are_matlab_bicubic_of_the_crop(cmp_folder):
    folder, _ = cmp_folder
    for scale in (4, 8):
        ds, _ = _load(StageGANDataset.from_facades, folder, scale=scale, size=32)
        item = ds[(1, 7)]
        hr = item["hr"].double()
        lr = imresize(hr, size=(32 // scale, 32 // scale)).clamp(0, 1).mul(255).round().div(255)
        torch.testing.assert_close(item["lr"].double(), lr, rtol=0, atol=1e-6)
        mr = imresize(item["lr"].double(), scale=scale).clamp(0, 1)
        torch.testing.assert_close(item["mr"].double(), mr, rtol=0, atol=1e-5)


def test_validation_set_gives_centre_crops(cmp_folder):
    folder, truth = cmp_folder
    vs, _ = _load(StageGANValidationSet.from_facades, folder, scale=4, size=32, map_mode="onehot")
    assert len(vs) == 3 and len(list(vs)) == 3
    for i, stem in enumerate(vs.names):
        photo = read_image(next(folder.rglob(f"{stem}.jpg")))
        h, w = photo.shape[1:]
        top, left = (h - 32) // 2, (w - 32) // 2
        item = vs[i]
        assert torch.equal(item["hr"], photo[:, top : top + 32, left : left + 32])
        assert torch.equal(
            item["map"].argmax(0) + 1, torch.from_numpy(truth[stem][top : top + 32, left : left + 32]).long()
        )
        again = vs[i]
        assert all(torch.equal(item[k], again[k]) for k in ("hr", "mr", "lr", "map"))
    assert vs[-1]["name"] == vs.names[-1]
    with pytest.raises(IndexError, match="i must be in"):
        vs[3]
    with pytest.raises(TypeError, match="int index"):
        vs[(0, 1)]


def test_small_images_are_resized_up(tmp_path):
    idx = _labels(20, 30, 4, block=4)
    _save_jpg(tmp_path / "cmp_b0001.jpg", _photo(idx, 4))
    _save_label_png(tmp_path / "cmp_b0001.png", idx, CMP_PALETTE)
    ds = StageGANDataset.from_facades(tmp_path, scale=4, size=32, map_mode="onehot")
    pair = ds.pairs[0]
    assert pair.size == (32, 48)  # shorter side → 32, aspect 2 : 3 kept
    rows = np.floor((np.arange(32) + 0.5) * 20 / 32).astype(int)  # nearest at pixel centres
    cols = np.floor((np.arange(48) + 0.5) * 30 / 48).astype(int)
    assert np.array_equal(pair.labels.numpy() + 1, idx[rows][:, cols])
    photo = read_image(tmp_path / "cmp_b0001.jpg")
    expected = imresize(photo, size=(32, 48)).clamp(0, 1).mul(255).round().to(torch.uint8)
    assert torch.equal(pair.photo, expected)
    item = ds[(0, 0)]
    assert item["hr"].shape == (3, 32, 32)


# ---------------------------------------------------------------------------------------------
# pix2pix AB files
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def ab_folder(tmp_path):
    """Side-by-side jpgs: photo | colour map (8 × 8 colour blocks, aligned with JPEG's blocks)."""
    truth = {}
    for stem, (h, w), seed in (("1", (64, 64), 11), ("2", (72, 56), 12)):
        idx = _labels(h, w, seed)
        colour = np.array(CMP_PALETTE, np.uint8)[idx - 1]
        _save_jpg(tmp_path / f"{stem}.jpg", np.concatenate([_photo(idx, seed), colour], axis=1))
        truth[stem] = idx
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(buf, format="JPEG")
    (tmp_path / "3.jpg").write_bytes(buf.getvalue()[:40])
    return tmp_path, truth


def test_ab_onehot_recovers_indices_from_colours(ab_folder):
    folder, truth = ab_folder
    ds, msgs = _load(StageGANDataset.from_ab_folder, folder, scale=4, size=32, map_mode="onehot")
    assert ds.names == ["1", "2"] and len(msgs) == 1 and "3.jpg" in msgs[0]
    for i, stem in enumerate(ds.names):
        assert np.array_equal(ds.pairs[i].labels.numpy() + 1, truth[stem])
    photo = read_image(folder / "1.jpg")[:, :, :64]
    for seed in range(6):
        item = ds[(0, seed)]
        ((top, left, hflip),) = _find(photo, item["hr"])
        window = truth["1"][top : top + 32, left : left + 32]
        window = torch.from_numpy((window[:, ::-1] if hflip else window).copy()).long()
        torch.testing.assert_close(item["map"].sum(0), torch.ones(32, 32), rtol=0, atol=0)
        assert torch.equal(item["map"].argmax(0) + 1, window)
        assert torch.equal(_decode(item["hr"]), window)


def test_ab_colour_map_is_the_stored_half_and_photo_side(ab_folder, tmp_path_factory):
    folder, truth = ab_folder
    ds, _ = _load(StageGANValidationSet.from_ab_folder, folder, scale=4, size=32)
    ab = read_image(folder / "2.jpg")  # (3, 72, 112)
    item = ds[1]
    top, left = (72 - 32) // 2, (56 - 32) // 2
    assert torch.equal(item["map"], ab[:, top : top + 32, 56 + left : 56 + left + 32])
    assert torch.equal(item["hr"], ab[:, top : top + 32, left : left + 32])
    # the same pair stored map | photo, read with photo_side="right"
    swapped = tmp_path_factory.mktemp("swapped")
    arr = np.asarray(Image.open(folder / "2.jpg"))
    Image.fromarray(np.concatenate([arr[:, 56:], arr[:, :56]], axis=1)).save(swapped / "2.png")
    right = StageGANValidationSet.from_ab_folder(swapped, photo_side="right", scale=4, size=32)
    assert torch.equal(right[0]["hr"], item["hr"]) and torch.equal(right[0]["map"], item["map"])
    with pytest.raises(ValueError, match="photo_side must be one of"):
        StageGANDataset.from_ab_folder(folder, photo_side="top", scale=4, size=32)


# ---------------------------------------------------------------------------------------------
# The embedded default: sample photographs with pseudo labels
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_pairs():
    return load_samples("train", num_classes=6, seed=0)


def test_samples_default_is_deterministic(sample_pairs):
    again = load_samples("train", num_classes=6, seed=0)
    assert [p.name for p in again] == [p.stem for p in sample_image_paths("train")]
    for a, b in zip(sample_pairs, again):
        assert torch.equal(a.labels, b.labels) and torch.equal(a.photo, b.photo)
    ds1 = StageGANDataset(sample_pairs, scale=4, size=64, map_mode="onehot", num_classes=6)
    ds2 = StageGANDataset(lambda: again, scale=4, size=64, map_mode="onehot")  # a builder
    for key in [(0, 1), (3, 12345), (4, 2**40)]:
        a, b = ds1[key], ds2[key]
        assert all(torch.equal(a[k], b[k]) for k in ("hr", "mr", "lr", "map")) and a["name"] == b["name"]


def test_samples_labels_are_the_colour_cluster_argmax(sample_pairs):
    prior = ColourClusterPrior.fit([read_image(p) for p in sample_image_paths("train")], 6, 0)
    ds = StageGANDataset(sample_pairs, scale=4, size=64, map_mode="onehot")
    for key in [(0, 5), (2, 6), (4, 7)]:
        item = ds[key]
        expected = prior(item["hr"][None]).argmax(1)[0]  # per pixel, so it commutes with crop and flip
        assert (item["map"].argmax(0) == expected).float().mean() > 0.999  # ties aside
    colour = StageGANDataset(sample_pairs, scale=4, size=64)
    item = colour[(1, 9)]
    assert item["map"].shape == (3, 64, 64)
    jet = jet_palette(6).float() / 255
    dist = (item["map"][None] - jet[:, :, None, None]).abs().sum(1)  # every pixel is a jet(6) colour
    assert dist.min(0).values.max() == 0


def test_samples_val_split_and_loader(sample_pairs):
    vs = StageGANValidationSet.from_samples("val", num_classes=6, scale=8, size=64)
    assert vs.names == [p.stem for p in sample_image_paths("val")]
    assert vs[0]["lr"].shape == (3, 8, 8)
    ds = StageGANDataset(sample_pairs, scale=4, size=64)
    sampler = DistributedBatchSampler(len(ds), 3, seed=0)
    batch = next(iter(DataLoader(ds, batch_sampler=sampler)))
    assert (
        batch["hr"].shape == (3, 3, 64, 64)
        and batch["map"].shape == (3, 3, 64, 64)
        and len(batch["name"]) == 3
    )


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def _pair(k=K, h=40, w=40):
    return SemanticPair(
        "p", torch.zeros(3, h, w, dtype=torch.uint8), torch.zeros(h, w, dtype=torch.uint8), jet_palette(k)
    )


@pytest.mark.parametrize(
    "pairs, kwargs, error, message",
    [
        ([_pair()], {"scale": 0, "size": 32}, ValueError, "scale must be a positive int"),
        ([_pair()], {"scale": 3, "size": 32}, ValueError, "size must be a multiple of scale = 3"),
        ([_pair()], {"scale": 4, "size": 32, "map_mode": "rgb"}, ValueError, "map_mode must be one of"),
        ([_pair()], {"scale": 4, "size": 32, "num_classes": 8}, ValueError, "num_classes must match"),
        ([_pair(), _pair(k=5)], {"scale": 4, "size": 32}, ValueError, "share one number of classes"),
        ([], {"scale": 4, "size": 32}, ValueError, "at least one SemanticPair"),
        (["a.jpg"], {"scale": 4, "size": 32}, TypeError, "pairs\\[0\\] must be a SemanticPair"),
        ("folder", {"scale": 4, "size": 32}, TypeError, "from_facades"),
    ],
)
def test_dataset_errors(pairs, kwargs, error, message):
    with pytest.raises(error, match=message):
        StageGANDataset(pairs, **kwargs)


def test_key_and_pair_errors(tmp_path):
    ds = StageGANDataset([_pair()], scale=4, size=32)
    with pytest.raises(TypeError, match="key must be a tuple"):
        ds[0]
    with pytest.raises(IndexError, match="image index must be in \\[0, 1\\)"):
        ds[(1, 0)]
    with pytest.raises(ValueError, match="item seed must be in"):
        ds[(0, -1)]
    with pytest.raises(ValueError, match="top, left must place a 32×32 crop"):
        ds.crop(0, 9, 0)
    with pytest.raises(ValueError, match="labels must be class indices below K = 3"):
        SemanticPair(
            "p",
            torch.zeros(3, 4, 4, dtype=torch.uint8),
            torch.full((4, 4), 3, dtype=torch.uint8),
            jet_palette(3),
        )
    with pytest.raises(ValueError, match="photo must be a \\(3, H, W\\) uint8 tensor"):
        SemanticPair("p", torch.zeros(3, 4, 4), torch.zeros(4, 4, dtype=torch.uint8), jet_palette(3))
    with pytest.raises(FileNotFoundError, match="folder must be an existing directory"):
        StageGANDataset.from_facades(tmp_path / "missing", scale=4, size=32)
    with pytest.raises(ValueError, match="at least one readable cmp_"):
        StageGANDataset.from_facades(tmp_path, scale=4, size=32)
    with pytest.raises(ValueError, match="split must be one of"):
        StageGANDataset.from_samples("test", scale=4, size=32)
