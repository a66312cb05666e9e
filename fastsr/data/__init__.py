"""Data: datasets, segmentation priors, sample images (and, re-exported from fastsr.ops, the
MATLAB-compatible bicubic ``imresize`` they degrade with)."""

from fastsr.data.datasets import (
    DistributedBatchSampler,
    HRDataset,
    ImageReadError,
    MixedDataset,
    ValidationSet,
    bicubic_lr,
    list_images,
    mod_crop,
    read_image,
)
from fastsr.data.facades import (
    CMP_CLASSES,
    CMP_PALETTE,
    SemanticPair,
    StageGANDataset,
    StageGANValidationSet,
    jet_palette,
    load_ab_folder,
    load_facades,
    load_samples,
    read_label_map,
)
from fastsr.data.priors import (
    OST_CLASSES,
    ColourClusterPrior,
    ModulePrior,
    NpyFolderPrior,
    PriorSource,
    prior_from_spec,
)
from fastsr.data.samples import sample_image_paths
from fastsr.ops.imresize import imresize

__all__ = [
    "imresize",
    "DistributedBatchSampler",
    "HRDataset",
    "ImageReadError",
    "MixedDataset",
    "ValidationSet",
    "bicubic_lr",
    "list_images",
    "mod_crop",
    "read_image",
    "OST_CLASSES",
    "ColourClusterPrior",
    "ModulePrior",
    "NpyFolderPrior",
    "PriorSource",
    "prior_from_spec",
    "sample_image_paths",
    "CMP_CLASSES",
    "CMP_PALETTE",
    "SemanticPair",
    "StageGANDataset",
    "StageGANValidationSet",
    "jet_palette",
    "load_ab_folder",
    "load_facades",
    "load_samples",
    "read_label_map",
]
