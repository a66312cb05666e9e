"""fastsr.data.samples: the shipped photographs, their split and the missing-package error."""

import importlib.util

import pytest

from fastsr.data import read_image, sample_image_paths, samples

TRAIN = ["china.jpg", "flower.jpg", "astronaut.png", "rocket.jpg", "motorcycle_left.png"]
VAL = ["chelsea.png", "coffee.png"]


def test_split_names_and_disjoint():
    train, val, all_ = (sample_image_paths(s) for s in ("train", "val", "all"))
    assert [p.name for p in train] == TRAIN
    assert [p.name for p in val] == VAL
    assert all_ == train + val
    assert not {p.name for p in train} & {p.name for p in val}
    assert sample_image_paths() == all_


def test_paths_exist_and_read_as_colour_photographs():
    for path in sample_image_paths("all"):
        assert path.is_file()
        img = read_image(path)
        assert img.shape[0] == 3 and min(img.shape[1:]) >= 300
        assert (img[0] - img[1]).abs().mean() > 0.01  # colour, not grey


def test_unknown_split():
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'val', 'all'\); got 'test'"):
        sample_image_paths("test")


def test_missing_scikit_image(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        samples.importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install scikit-image"):
        sample_image_paths("val")
